"""The pairing domain: pure rules, no I/O, time as a parameter.

- `credentials`: the assembled token (`region + token + secret`), the BLE token (`assembled[2:10]`), Wi-Fi
  credentials and the camera QR payload `{"s","p","t"}`; every secret is a `SecretStr`.
- `causes`: Tuya's pairing/BLE error codes (1-601) as typed `FailureCause`s.
- `session`: the `PairingSession` aggregate and its state machine

      active --(token consumed: N devices / first device)--> succeeded | partially_succeeded | failed
      active --(now >= expires_at + settle)----------------> partially_succeeded | failed | expired
      active --(cancel)-------------------------------------> cancelled

  Facts (`Activation`, `ActivationFailure`) from the push stream and from polling Tuya's token result are
  applied by `record_activation` / `record_failure`; both paths converge on one outcome per device, and a
  duplicate or late fact changes nothing but a `late` flag. Every transition returns a `Transition` (new
  session + the contract payloads of the events it causes).
"""

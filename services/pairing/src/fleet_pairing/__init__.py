"""pairing: pairing tokens, sessions, QR payloads, per-device outcomes and binding modes."""

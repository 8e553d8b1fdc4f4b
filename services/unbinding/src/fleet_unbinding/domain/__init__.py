"""unbinding's domain: governed batch unbinding of strongly bound devices (after-sales returns).

- `authorization`: who may unbind which product's devices (owner, partner, space role with the permission,
  OEM original PID owner), folded from append-only records; only the current owner manages them.
- `quota`: daily units per operator account and per product (default 100, UTC days unless offset), limit
  overrides with a reason (append-only), unit names that make reserve/refund idempotent.
- `qr`: QR sessions (at most 30 devices, short validity; a scan is a pairing failure with code 113).
- `unbind`: one device's crash-safe state machine PENDING -> RESERVED -> CALLING -> UNBOUND | REFUSED,
  with reconciliation of an unanswered call against the device's recorded owner and activation time.
- `batch`: the batch (approval, cancel, idempotency key, QR admission, finish with a tally, dry run).

Pure: no I/O, time passed in, every transition returns the new state and the contract events it causes.
"""

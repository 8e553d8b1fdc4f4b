"""ota's pure domain: the firmware catalog, releases per region, per-device upgrades. No I/O, no clock.

- `firmware`: catalog entries (product, channel, dotted version compared numerically, size, md5, signature,
  URL, upgrade type, per-packet timeout); immutable once registered; withdraw refused while a release is
  active.
- `release`: a release is one `RegionRollout` per data-center region, each its own state machine
  (scheduled -> running <-> paused, halted, stopped, completed) over the stages verification -> canary ->
  full; `decide` turns a stage's counters into hold / halt / promote / complete.
- `targeting`: which devices a stage targets (version lower than the target, canary sampling, late joiners)
  and the one-channel-at-a-time rule.
- `upgrade`: one device's upgrade: pending -> commanded -> upgrading/waiting -> succeeded (only on the
  reported version) | retrying -> ... -> failed/timed_out; every change returns its event and its counter
  delta, which the adapters store in the same document write (outbox) so progress counters equal a recount
  after any crash.
- `schedule`: start time, maintenance window in the region's time zone, dispatch rate with jitter.
"""

"""status: the device shadow service.

Consumes device events (KeyShared by device id), keeps one shadow document per device in MongoDB (presence,
typed DP values with their device timestamps, binding, name, firmware per channel), keeps 7 days of DP
history, emits `shadow changed` / `presence changed` events through an outbox in the shadow document,
reconciles stale shadows from Tuya's OpenAPI and serves it all over HTTP.
"""

"""ota: firmware catalog, staged releases per data-center region, per-device upgrades."""

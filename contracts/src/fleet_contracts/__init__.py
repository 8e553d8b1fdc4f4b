"""tuya-fleet event contracts."""

"""tuya-fleet shared runtime."""

"""Pure domain: the shadow, its merge rules, DP typing. No I/O."""

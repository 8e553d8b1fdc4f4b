"""Pure domain: the shadow and its merge rules, DP typing, facts, the events a merge causes. No I/O."""

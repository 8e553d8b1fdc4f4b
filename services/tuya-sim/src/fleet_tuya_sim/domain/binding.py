"""Binding modes (REFERENCE §8): whether a device bound to one account may be paired by another."""

from __future__ import annotations

from enum import StrEnum


class BindingMode(StrEnum):
    # Another account can pair the device without the first owner's consent.
    WEAK = "weak"
    # As weak, but the previous home's administrator is notified.
    MEDIUM = "medium"
    # The device must be removed from the current account before another account can bind it.
    STRONG = "strong"


class RebindDecision(StrEnum):
    FIRST_BINDING = "first_binding"
    SAME_OWNER = "same_owner"
    REBIND = "rebind"
    REBIND_NOTIFY = "rebind_notify"
    REFUSED = "refused"


def rebind_decision(mode: BindingMode, current_uid: str | None, new_uid: str) -> RebindDecision:
    """What happens when a device bound to `current_uid` activates with a token of `new_uid`."""
    if current_uid is None:
        return RebindDecision.FIRST_BINDING
    if current_uid == new_uid:
        return RebindDecision.SAME_OWNER
    if mode is BindingMode.STRONG:
        return RebindDecision.REFUSED
    if mode is BindingMode.MEDIUM:
        return RebindDecision.REBIND_NOTIFY
    return RebindDecision.REBIND

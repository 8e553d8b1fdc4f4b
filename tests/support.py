"""Helpers shared by the test tiers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stack:
    """Where the real servers of this test run listen."""

    pulsar_url: str
    pulsar_admin_url: str
    mongodb_uri: str

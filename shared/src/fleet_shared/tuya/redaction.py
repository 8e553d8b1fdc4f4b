"""Keeping secrets out of logs, traces, exception messages and reprs.

Secrets handled by the Tuya edge: the project access secret, access and refresh tokens, device local keys and
pairing-token secrets. Models hold them as `pydantic.SecretStr`; free text that may echo one (a Tuya error
message, an httpx exception naming a URL) goes through a `Redactor` that knows the live secrets.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

REDACTED = "***"

# Shorter values are too likely to match innocent text; real Tuya secrets are 16+ characters.
_MIN_SECRET_LEN = 6


class Redactor:
    """Replaces every known secret substring with `***`. Thread-safe; secrets can be added as they appear."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: frozenset[str] = frozenset()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        if not secret or len(secret) < _MIN_SECRET_LEN:
            return
        with self._lock:
            self._secrets = self._secrets | {secret}

    def discard(self, secret: str | None) -> None:
        if not secret:
            return
        with self._lock:
            self._secrets = self._secrets - {secret}

    def redact(self, text: str) -> str:
        # Longest first, so a secret containing another is replaced whole.
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def __repr__(self) -> str:
        return f"Redactor(<{len(self._secrets)} secrets>)"


class RedactingFilter(logging.Filter):
    """A logging filter that redacts the formatted message (and args) of every record it sees."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self._redactor.redact(message)
        if redacted != message or record.args:
            record.msg = redacted
            record.args = None
        return True


def mask(value: str | None, keep: int = 0) -> str:
    """A display form of a secret: nothing of it, or its first `keep` characters for correlation."""
    if not value:
        return ""
    if keep <= 0 or len(value) <= keep * 4:
        return REDACTED
    return value[:keep] + REDACTED

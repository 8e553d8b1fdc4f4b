"""The audit trail: one append-only record per state-changing HTTP call (who, what, when, result).

Records never hold request or response bodies: bodies may carry Wi-Fi passwords and other secrets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol


@dataclass(frozen=True)
class AuditRecord:
    record_id: str
    at: datetime  # server time
    # who: the principal's subject and kind, or "anonymous" when authentication failed
    subject: str
    subject_kind: Literal["api_key", "jwt", "anonymous"]
    display_name: str | None
    # what
    method: str
    route: str  # the route template (`/v1/batches/{batch_id}`), not the concrete path
    action: str  # the route's name: the handler's function name unless the route names it
    targets: dict[str, str] = field(default_factory=dict)  # path parameters: device, batch, product ids
    # result
    status: int = 0
    outcome: Literal["succeeded", "refused", "failed"] = "succeeded"
    request_id: str | None = None
    trace_id: str | None = None

    def to_document(self) -> dict[str, Any]:
        return {
            "_id": self.record_id,
            "at": self.at,
            "who": {"subject": self.subject, "kind": self.subject_kind, "name": self.display_name},
            "what": {
                "method": self.method,
                "route": self.route,
                "action": self.action,
                "targets": self.targets,
            },
            "result": {"status": self.status, "outcome": self.outcome},
            "request_id": self.request_id,
            "trace_id": self.trace_id,
        }

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> AuditRecord:
        who, what, result = doc["who"], doc["what"], doc["result"]
        return cls(
            record_id=doc["_id"],
            at=doc["at"],
            subject=who["subject"],
            subject_kind=who["kind"],
            display_name=who.get("name"),
            method=what["method"],
            route=what["route"],
            action=what["action"],
            targets=dict(what.get("targets") or {}),
            status=result["status"],
            outcome=result["outcome"],
            request_id=doc.get("request_id"),
            trace_id=doc.get("trace_id"),
        )


def outcome_of(status: int) -> Literal["succeeded", "refused", "failed"]:
    if status < 400:
        return "succeeded"
    return "refused" if status < 500 else "failed"


class AuditLog(Protocol):
    """Insert-only: there is no update and no delete."""

    async def append(self, record: AuditRecord) -> None:
        """Store the record; appending the same record id twice stores it once."""
        ...

    async def recent(
        self, *, subject: str | None = None, since: datetime | None = None, limit: int = 100
    ) -> list[AuditRecord]:
        """Newest first."""
        ...

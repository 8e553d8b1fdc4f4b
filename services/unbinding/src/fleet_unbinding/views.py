"""Read models for the HTTP API: batch progress, result records, quota usage, authorization history.

Each query is answered from an index of the unbinding database (see `adapters.mongo`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fleet_contracts.unbinding import RefusalCause
from fleet_unbinding.adapters.mongo import (
    Document,
    MongoBatchStore,
    MongoUnbindStore,
    record_of,
    record_to_doc,
)
from fleet_unbinding.domain.authorization import AuthorizationRecord
from fleet_unbinding.domain.batch import Batch
from fleet_unbinding.domain.unbind import UnbindState


@dataclass(frozen=True, slots=True)
class BatchProgress:
    batch: Batch
    total: int
    by_state: dict[UnbindState, int] = field(default_factory=dict)
    refused_by_cause: dict[RefusalCause, int] = field(default_factory=dict)

    @property
    def done(self) -> int:
        return self.by_state.get(UnbindState.UNBOUND, 0) + self.by_state.get(UnbindState.REFUSED, 0)

    def as_dict(self) -> dict[str, Any]:
        b = self.batch
        return {
            "batch_id": b.batch_id,
            "operator_id": b.operator_id,
            "mode": b.mode.value,
            "status": b.status.value,
            "cancel_requested": b.cancel_requested,
            "approved_by": b.approved_by,
            "created_at": b.created_at,
            "finished_at": b.finished_at,
            "qr_expires_at": None if b.qr is None else b.qr.expires_at,
            "total": self.total,
            "done": self.done,
            "by_state": {s.value: n for s, n in self.by_state.items()},
            "refused_by_cause": {c.value: n for c, n in self.refused_by_cause.items()},
        }


async def batch_progress(
    batches: MongoBatchStore, unbinds: MongoUnbindStore, batch_id: str
) -> BatchProgress | None:
    batch = await batches.get(batch_id)
    if batch is None:
        return None
    by_state, causes = await unbinds.counts(batch_id)
    total = (
        sum(by_state.values()) if batch.qr is not None else max(len(batch.device_ids), sum(by_state.values()))
    )
    return BatchProgress(batch, total, by_state, causes)


async def records_page(
    unbinds: MongoUnbindStore,
    filters: Mapping[str, str],
    *,
    before: tuple[datetime, str] | None = None,
    limit: int = 100,
) -> list[Document]:
    """Result records newest first, by `device_id`, `operator_id`, `product_id` and/or `day`; page on with
    `before` = (`at`, `_id`) of the last record."""
    return await unbinds.find_records(**filters, before=before, limit=limit)


async def batch_list(batches: MongoBatchStore, operator_id: str | None, limit: int = 50) -> list[Batch]:
    return await batches.of_operator(operator_id, limit)


async def batch_results(unbinds: MongoUnbindStore, batch_id: str) -> list[Document]:
    """Every result of a batch so far, in the record layout (so the CSV export has one shape)."""
    return [record_of(u) for u in await unbinds.results(batch_id)]


def authorization_record(record: AuthorizationRecord) -> Document:
    """An authorization record as stored (without its storage key and product)."""
    doc = record_to_doc(record)
    del doc["_id"], doc["product_id"]
    return doc

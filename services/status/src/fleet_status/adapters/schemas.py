"""The `dp_schemas` collection: product DP schemas as last fetched from the OpenAPI."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from motor.motor_asyncio import AsyncIOMotorCollection, AsyncIOMotorDatabase

from fleet_contracts.tuya import DpType
from fleet_status.domain.dp_schema import DpDefinition, DpSchema
from fleet_status.ports import Document


def schema_to_doc(schema: DpSchema, fetched_at: datetime) -> Document:
    return {
        "_id": schema.product_id,
        "fetched_at": fetched_at,
        "dps": [
            {
                "code": d.code,
                "dp_id": d.dp_id,
                "type": d.type.value if d.type else None,
                "scale": d.scale,
                "min": d.min,
                "max": d.max,
                "unit": d.unit,
                "range": list(d.range),
                "labels": list(d.labels),
                "maxlen": d.maxlen,
            }
            for d in schema.dps.values()
        ],
    }


def schema_from_doc(doc: Mapping[str, Any]) -> DpSchema:
    return DpSchema(
        product_id=doc["_id"],
        dps={
            d["code"]: DpDefinition(
                code=d["code"],
                dp_id=d.get("dp_id"),
                type=DpType(d["type"]) if d.get("type") else None,
                scale=int(d.get("scale") or 0),
                min=d.get("min"),
                max=d.get("max"),
                unit=d.get("unit"),
                range=tuple(d.get("range") or ()),
                labels=tuple(d.get("labels") or ()),
                maxlen=d.get("maxlen"),
            )
            for d in doc.get("dps", [])
        },
    )


class SchemaStore:
    """Product DP schemas as last fetched, so a restart does not ask the OpenAPI for each product again."""

    def __init__(self, db: AsyncIOMotorDatabase[Document]) -> None:
        self.schemas: AsyncIOMotorCollection[Document] = db["dp_schemas"]

    async def get(self, product_id: str) -> tuple[DpSchema, datetime] | None:
        doc = await self.schemas.find_one({"_id": product_id})
        if doc is None:
            return None
        fetched_at: datetime = doc["fetched_at"]
        return schema_from_doc(doc), fetched_at

    async def put(self, schema: DpSchema, fetched_at: datetime) -> None:
        await self.schemas.replace_one(
            {"_id": schema.product_id}, schema_to_doc(schema, fetched_at), upsert=True
        )

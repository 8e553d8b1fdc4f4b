"""The local FerretDB's wire front (infra/ferretdb): it gives every collection the `_id` index FerretDB 1.24's
lookups can use. Runs its own server on a scratch data folder, so the SQLite files can be inspected."""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from motor.motor_asyncio import AsyncIOMotorClient

from fleet_devstack.build import ferretdb_binary
from fleet_devstack.config import StackConfig
from tests.support import free_port, stop_process

pytestmark = pytest.mark.integration

# the statement FerretDB 1.24 runs for a `{_id: <string>}` filter (backends/sqlite/collection.go)
LOOKUP = "SELECT _ferretdb_sjson FROM {table} WHERE _ferretdb_sjson->'$._id' = ?"


@pytest.fixture
async def ferretdb(tmp_path: Path) -> AsyncIterator[tuple[AsyncIOMotorClient[dict[str, object]], Path]]:
    port = free_port()
    binary = ferretdb_binary(StackConfig.load("test"))
    data = tmp_path / "data"
    log = (tmp_path / "ferretdb.log").open("wb")
    proc = subprocess.Popen(  # noqa: ASYNC220 - starting a server takes microseconds; it is awaited below
        [str(binary), "-listen-addr", f"127.0.0.1:{port}", "-data-dir", str(data)], stdout=log, stderr=log
    )
    client: AsyncIOMotorClient[dict[str, object]] = AsyncIOMotorClient(
        f"mongodb://127.0.0.1:{port}/", serverSelectionTimeoutMS=15_000
    )
    try:
        yield client, data
    finally:
        client.close()
        stop_process(proc)
        log.close()


def lookup_plan(data: Path, db: str, collection: str) -> str:
    with sqlite3.connect(f"file:{data / (db + '.sqlite')}?mode=ro", uri=True) as conn:
        (table,) = conn.execute(
            "SELECT table_name FROM _ferretdb_collections WHERE name = ?", (collection,)
        ).fetchone()
        plan = conn.execute(f"EXPLAIN QUERY PLAN {LOOKUP.format(table=table)}", ('"d1"',)).fetchall()
    return " ".join(str(row[-1]) for row in plan)


async def test_id_lookups_use_an_index_in_every_collection(
    ferretdb: tuple[AsyncIOMotorClient[dict[str, object]], Path],
) -> None:
    client, data = ferretdb
    shadows = client["fleet"]["shadows"]
    await shadows.insert_many([{"_id": f"d{i}", "v": i} for i in range(50)])
    await client["fleet"]["dedup"].update_one({"_id": "k1"}, {"$set": {"seen": 1}}, upsert=True)

    assert "USING INDEX" in lookup_plan(data, "fleet", "shadows")
    assert "USING INDEX" in lookup_plan(data, "fleet", "dedup")
    # lookups, updates and deletes by _id still behave
    assert (await shadows.find_one({"_id": "d7"}) or {})["v"] == 7
    assert (await shadows.update_one({"_id": "d7"}, {"$set": {"v": 70}})).modified_count == 1
    assert (await shadows.delete_one({"_id": "d8"})).deleted_count == 1
    assert await shadows.count_documents({}) == 49

    # a dropped and re-created collection gets the index again
    await shadows.drop()
    await shadows.insert_one({"_id": "d1"})
    assert "USING INDEX" in lookup_plan(data, "fleet", "shadows")
    # FerretDB's own view of the indexes is unchanged
    assert [i["name"] for i in await shadows.list_indexes().to_list(None)] == ["_id_"]

"""FLEET_DB_BACKEND: which store the local stack's FerretDB uses, and what the stack runs for it."""

from __future__ import annotations

import pytest

from fleet_devstack.config import StackConfig
from fleet_devstack.process import StackError
from fleet_devstack.stack import LocalStack

pytestmark = pytest.mark.unit


def test_sqlite_is_the_default_and_runs_no_database_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLEET_DB_BACKEND", raising=False)
    stack = LocalStack(StackConfig.load("test"))
    assert stack.config.db_backend == "sqlite"
    assert stack.postgres not in stack.servers()


def test_postgresql_adds_the_stacks_own_postgresql_on_a_socket_in_its_folder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLEET_DB_BACKEND", "postgresql")
    monkeypatch.setenv("FLEET_STACK_POSTGRES_PORT", "5499")
    stack = LocalStack(StackConfig.load("test"))
    assert stack.postgres in stack.servers()
    assert stack.postgres.ports() == []  # no TCP port: nothing to clash with another stack
    url = stack.postgres.url()
    assert url.startswith("postgres://postgres@/postgres?host=")
    assert f"host={stack.config.stack_dir / 'postgres' / 'run'}&port=5499" in url
    assert ("FerretDB's PostgreSQL (socket)", url) in stack.endpoints()


def test_an_unknown_backend_is_refused_with_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_DB_BACKEND", "mysql")
    with pytest.raises(StackError, match="sqlite, postgresql"):
        StackConfig.load("test")

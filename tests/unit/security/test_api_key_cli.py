"""`fleet-<service> api-key add|list|revoke` on an in-memory key store: the new key alone on stdout and
working with the roles and products asked for, bad input refused with nothing stored, no secret ever
listed."""

from __future__ import annotations

import argparse
import io

import pytest

from fleet_shared.security import ApiKeys, AuthenticationError, RoleTable
from fleet_shared.security.cli import add_api_key_commands, run_api_key_command
from tests.unit.security.fakes import FakeApiKeyStore, ManualClock

pytestmark = pytest.mark.unit


class Cli:
    def __init__(self) -> None:
        self.store = FakeApiKeyStore()
        self.keys = ApiKeys(self.store, RoleTable(), ManualClock())
        parser = argparse.ArgumentParser(prog="fleet-test")
        add_api_key_commands(parser.add_subparsers(dest="command"))
        self.parser = parser

    async def __call__(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        args = self.parser.parse_args(["api-key", *argv])
        code = await run_api_key_command(self.keys, args, default_role="viewer", out=out, err=err)
        return code, out.getvalue(), err.getvalue()


async def test_add_prints_only_the_key_which_has_the_roles_and_products_asked_for() -> None:
    cli = Cli()
    code, out, err = await cli("add", "ci", "--role", "operator", "--product", "p1", "--product", "p2")
    key = out.strip()
    assert (code, out) == (0, key + "\n")
    assert key.startswith("fk_")
    assert key not in err
    principal = await cli.keys.authenticate(key)
    assert (principal.display_name, principal.roles) == ("ci", frozenset({"operator"}))
    assert principal.product_filter() == frozenset({"p1", "p2"})
    assert err.strip().split("  ")[1:] == ["'ci'", "roles operator", "p1,p2"]


async def test_add_without_options_gives_the_default_role_for_every_product() -> None:
    cli = Cli()
    _, out, _ = await cli("add", "dashboard", "--expires-in-days", "30")
    principal = await cli.keys.authenticate(out.strip())
    assert (principal.roles, principal.product_filter()) == (frozenset({"viewer"}), None)
    (stored,) = await cli.keys.list()
    assert stored.expires_at is not None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["add", "ci", "--role", "superuser"], "unknown roles ['superuser']"),
        (["add", "ci", "--expires-in-days", "0"], "--expires-in-days must be positive"),
        (["add", "x" * 101], "a key needs a name of 1 to 100 characters"),
    ],
)
async def test_bad_input_is_refused_and_nothing_is_stored(argv: list[str], message: str) -> None:
    cli = Cli()
    code, out, err = await cli(*argv)
    assert (code, out) == (2, "")
    assert message in err
    assert cli.store.keys == {}


async def test_list_shows_keys_without_secrets_and_revoke_ends_a_key() -> None:
    cli = Cli()
    _, out, _ = await cli("add", "ci", "--product", "p1")
    key = out.strip()
    (stored,) = await cli.keys.list()
    code, listed, _ = await cli("list")
    assert (code, listed.strip().split("  ")) == (0, [stored.key_id, "'ci'", "roles viewer", "p1"])
    secret_hash = next(iter(cli.store.keys.values()))[1]
    for secret in (key, key.split("_")[-1], secret_hash):
        assert secret not in listed

    assert (await cli("revoke", stored.key_id))[0] == 0
    with pytest.raises(AuthenticationError):
        await cli.keys.authenticate(key)
    assert "revoked" in (await cli("list"))[1]
    code, _, err = await cli("revoke", "no-such-key")
    assert (code, err.strip()) == (1, "no API key no-such-key")

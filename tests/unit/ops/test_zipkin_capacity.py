"""The local trace viewer's capacity: spans kept (`FLEET_STACK_ZIPKIN_MAX_SPANS`) and the heap that holds them
(`FLEET_STACK_ZIPKIN_HEAP`), passed to the Zipkin server it starts."""

from __future__ import annotations

import pytest

from fleet_devstack.config import ZIPKIN_HEAP, ZIPKIN_MAX_SPANS, StackConfig
from fleet_devstack.process import StackError

pytestmark = pytest.mark.unit

#: heap per stored span, measured with bench/zipkin_heap.py (2,586-2,592 B from 100k to 400k spans)
HEAP_PER_SPAN = 2600


def megabytes(heap: str) -> int:
    number, unit = int(heap[:-1]), heap[-1].lower()
    return number * {"m": 1, "g": 1024}[unit]


def test_the_default_keeps_the_spans_within_two_thirds_of_the_default_heap() -> None:
    live_mib = ZIPKIN_MAX_SPANS * HEAP_PER_SPAN / 2**20
    assert live_mib <= megabytes(ZIPKIN_HEAP) * 2 / 3, (live_mib, ZIPKIN_HEAP)
    assert ZIPKIN_MAX_SPANS >= 200_000  # several parallel e2e runs (README, "Observe")


def test_the_stack_takes_the_span_bound_and_heap_from_its_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLEET_STACK_ZIPKIN_MAX_SPANS", raising=False)
    monkeypatch.delenv("FLEET_STACK_ZIPKIN_HEAP", raising=False)
    default = StackConfig.load("dev")
    assert (default.zipkin_max_spans, default.zipkin_heap) == (ZIPKIN_MAX_SPANS, ZIPKIN_HEAP)
    monkeypatch.setenv("FLEET_STACK_ZIPKIN_MAX_SPANS", "1000000")
    monkeypatch.setenv("FLEET_STACK_ZIPKIN_HEAP", "4g")
    custom = StackConfig.load("dev")
    assert (custom.zipkin_max_spans, custom.zipkin_heap) == (1_000_000, "4g")


@pytest.mark.parametrize("bad", ["", "many", "0", "-5", "1.5"])
def test_a_bad_span_bound_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("FLEET_STACK_ZIPKIN_MAX_SPANS", bad)
    with pytest.raises(StackError, match="FLEET_STACK_ZIPKIN_MAX_SPANS"):
        StackConfig.load("dev")


def test_the_zipkin_server_is_started_with_the_stacks_bound_and_heap(monkeypatch: pytest.MonkeyPatch) -> None:
    from fleet_devstack import servers

    monkeypatch.setenv("FLEET_STACK_ZIPKIN_MAX_SPANS", "123456")
    monkeypatch.setenv("FLEET_STACK_ZIPKIN_HEAP", "2g")
    zipkin = servers.Zipkin(StackConfig.load("dev"))
    started: list[tuple[list[str], dict[str, str]]] = []

    def start(_: object, argv: list[str], cwd: object, env: dict[str, str]) -> int:
        started.append((argv, env))
        return 1

    monkeypatch.setattr(servers, "zipkin_jar", lambda cfg: "zipkin.jar")
    monkeypatch.setattr(type(zipkin.process), "start", start)
    zipkin.launch()
    [(argv, env)] = started
    assert "-Xmx2g" in argv
    assert env["MEM_MAX_SPANS"] == "123456"
    assert env["STORAGE_TYPE"] == "mem"

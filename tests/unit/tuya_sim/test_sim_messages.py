"""Push messages: every event in both families decodes with fleet_shared's codec into the right typed
message; malformed messages fail exactly as recorded; chaos keeps the record straight."""

from __future__ import annotations

import asyncio

import pytest

from fleet_shared.tuya.codec import EncryptionMode, PushCodec
from fleet_shared.tuya.errors import PushMessageRejected
from fleet_tuya_sim.adapters.sinks import MemorySink
from fleet_tuya_sim.domain.events import (
    DeviceBound,
    DeviceRenamed,
    DeviceUnbound,
    DpReading,
    DpRenamed,
    DpReported,
    Event,
    OtaProgressed,
    WentOffline,
    WentOnline,
)
from fleet_tuya_sim.domain.fleet import FleetSpec
from fleet_tuya_sim.domain.project import ProjectAccess
from fleet_tuya_sim.domain.push_messages import MessageFamily, payloads
from fleet_tuya_sim.service_layer import malformed
from fleet_tuya_sim.service_layer.pipeline import ChaosSettings, Outgoing, PublishPipeline
from fleet_tuya_sim.service_layer.simulator import Simulator, SimulatorOptions
from fleet_tuya_sim.service_layer.truth import GroundTruth, MessageRecord

from .conftest import ACCESS_ID, ACCESS_SECRET, FakeClock

pytestmark = pytest.mark.unit

T = 1_750_000_000_123
DEV = "bf0123456789abcdef0123"
PID = "sim0plug0cz00001"

EVENTS: list[Event] = [
    DpReported(
        DEV, PID, T, "data-1", (DpReading(1, "switch_1", False, T), DpReading(19, "cur_power", 523, T))
    ),
    WentOnline(DEV, PID, T, "ay1"),
    WentOffline(DEV, PID, T, "ay1"),
    DeviceBound(DEV, PID, T, "ay1", "12345678", "uuid1", "tok12345"),
    DeviceUnbound(DEV, PID, T, "ay1", "12345678", False),
    DeviceRenamed(DEV, PID, T, "ay1", "Kitchen plug", "uuid1"),
    DpRenamed(DEV, PID, T, 1, "Main switch"),
    OtaProgressed(DEV, PID, T, 0, 2, 40, "1.3.0", "upgrading"),
]

LEGACY_KINDS = [
    "statusReport",
    "online",
    "offline",
    "bindUser",
    "delete",
    "nameUpdate",
    "dpNameUpdate",
    "upgradeStatus",
]
IOT_KINDS = [
    "devicePropertyMessage",
    "deviceOnline",
    "deviceOffline",
    "deviceBindSpace",
    "deviceUnbindSpace",
    "deviceNameUpdate",
    None,  # no IoT Core message renames a DP
    "deviceOtaProgress",
]


@pytest.mark.parametrize("mode", list(EncryptionMode))
@pytest.mark.parametrize(
    ("family", "kinds"), [(MessageFamily.LEGACY, LEGACY_KINDS), (MessageFamily.IOT_CORE, IOT_KINDS)]
)
def test_every_event_decodes_to_its_typed_message(
    family: MessageFamily, kinds: list[str | None], mode: EncryptionMode
) -> None:
    codec = PushCodec(ACCESS_SECRET)
    for event, kind in zip(EVENTS, kinds, strict=True):
        produced = payloads(event, family)
        if kind is None:
            assert produced == []
            continue
        (p,) = produced
        encoded = codec.encode(p.data, protocol=p.protocol, mode=mode, t=p.t)
        decoded = PushCodec(ACCESS_SECRET, verify_sign=True).decode(encoded.payload(), encoded.properties)
        assert decoded.message.kind == kind
        assert decoded.device_id == DEV
        assert decoded.mode is mode
        assert decoded.sign_verified


def test_status_report_carries_dp_id_keys_with_string_values() -> None:
    (p,) = payloads(EVENTS[0], MessageFamily.LEGACY)
    assert p.protocol == 4
    assert p.data["status"] == [
        {"code": "switch_1", "value": False, "t": T, "1": "false"},
        {"code": "cur_power", "value": 523, "t": T, "19": "523"},
    ]
    (iot,) = payloads(EVENTS[0], MessageFamily.IOT_CORE)
    assert iot.data["bizData"]["properties"][1] == {"code": "cur_power", "dpId": 19, "time": T, "value": 523}


def test_both_families_publish_twice() -> None:
    assert [p.protocol for p in payloads(EVENTS[1], MessageFamily.BOTH)] == [20, 1001]


@pytest.mark.parametrize("kind", list(malformed.Malformation))
def test_malformed_messages_fail_as_recorded(kind: malformed.Malformation) -> None:
    bad = malformed.build(kind, ACCESS_SECRET, DEV, T)
    codec = PushCodec(ACCESS_SECRET)
    if bad.expected == "unknown_protocol":
        decoded = codec.decode(bad.payload(), bad.properties)
        assert decoded.message.kind == "unknownProtocol"
        return
    with pytest.raises(PushMessageRejected) as err:
        codec.decode(bad.payload(), bad.properties)
    assert err.value.reason.value == bad.expected


def _record(tid: str) -> Outgoing:
    return Outgoing(MessageRecord(0, tid, "k", 4, "statusReport", "aes_gcm", 0), tid.encode(), {"tid": tid})


async def test_pipeline_sends_in_order_and_records_ids() -> None:
    sink, truth = MemorySink(), GroundTruth()
    pipeline = PublishPipeline(sink, truth, max_in_flight=3)
    runner = asyncio.create_task(pipeline.run())
    for i in range(50):
        pipeline.put(_record(f"m{i}"))
    assert await pipeline.flush(5)
    runner.cancel()
    assert [m.payload.decode() for m in sink.sent] == [f"m{i}" for i in range(50)]
    assert [r.seq for r in truth.messages] == list(range(1, 51))
    assert all(r.message_id for r in truth.messages)


async def test_chaos_duplicates_and_shuffles_within_the_window() -> None:
    sink, truth = MemorySink(), GroundTruth()
    pipeline = PublishPipeline(
        sink, truth, chaos=ChaosSettings(duplicate_ratio=0.3, shuffle_window=10), seed=4
    )
    runner = asyncio.create_task(pipeline.run())
    for i in range(100):
        pipeline.put(_record(f"m{i}"))
    assert await pipeline.flush(5)
    runner.cancel()
    sent = [m.payload.decode() for m in sink.sent]
    originals = [r for r in truth.messages if r.duplicate_of is None]
    duplicates = [r for r in truth.messages if r.duplicate_of is not None]
    assert sorted(r.tid for r in originals) == sorted(f"m{i}" for i in range(100))
    assert duplicates
    assert all(d.duplicate_of == d.tid for d in duplicates)
    assert len(sent) == 100 + len(duplicates)
    assert sent != sorted(sent, key=lambda s: int(s[1:]))  # shuffled
    # shuffling stays inside a window: among first occurrences, nothing moves further than a window or two
    firsts = list(dict.fromkeys(sent))
    assert max(abs(firsts.index(f"m{i}") - i) for i in range(100)) < 20


async def test_simulator_is_deterministic_for_a_seed_apart_from_secrets() -> None:
    async def run() -> list[tuple[object, ...]]:
        sim = Simulator(
            SimulatorOptions(access_id=ACCESS_ID, access_secret=ACCESS_SECRET),
            MemorySink(),
            ProjectAccess(),
            FakeClock(),
        )
        await sim.start()
        await sim.create_fleet(FleetSpec(seed=9, devices=30, homes=3))
        for _ in range(10):
            sim.report(count=5)
            sim.emit(sim.fleet.churn(0.1, sim.now_ms()))
        await sim.stop()
        return [(m.key, m.protocol, m.kind, m.data) for m in sim.truth.messages]

    first, second = await run(), await run()
    assert first == second
    assert len(first) >= 50


async def test_replay_re_pushes_earlier_messages_late_with_the_same_data_and_tid() -> None:
    sink = MemorySink()
    sim = Simulator(
        SimulatorOptions(access_id=ACCESS_ID, access_secret=ACCESS_SECRET), sink, ProjectAccess(), FakeClock()
    )
    await sim.start()
    await sim.create_fleet(FleetSpec(seed=9, devices=30, homes=3, online_ratio=1.0))
    sim.report(count=20)
    sim.inject_malformed(3)
    assert await sim.flush(5)
    up_to = sim.truth.messages[-1].seq
    sim.report(count=10)
    tids = sim.replay(5, up_to_seq=up_to)
    assert await sim.flush(5)
    await sim.stop()

    by_tid = {m.tid: m for m in sim.truth.messages if m.duplicate_of is None}
    replays = [m for m in sim.truth.messages if m.replayed]
    assert [m.tid for m in replays] == tids
    assert len(set(tids)) == 5
    assert sorted(tids, key=lambda t: by_tid[t].seq) == tids  # in their original order
    assert sim.truth.summary()["replayed"] == 5
    codec = PushCodec(ACCESS_SECRET)
    sent = {m.properties["tid"]: m for m in sink.sent}  # the last copy per tid: the replay
    for replay in replays:
        original = by_tid[replay.tid]
        assert original.seq <= up_to < replay.seq
        assert original.malformed is None  # only good messages come again
        assert replay.duplicate_of == original.tid
        assert (replay.key, replay.protocol, replay.kind, replay.t, replay.data) == (
            original.key,
            original.protocol,
            original.kind,
            original.t,
            original.data,
        )
        assert replay.message_id
        assert replay.message_id != original.message_id
        decoded = codec.decode(sent[replay.tid].payload, sent[replay.tid].properties)
        assert decoded.data == original.data


async def test_replay_of_more_than_was_published_replays_what_there_is() -> None:
    sim = Simulator(
        SimulatorOptions(access_id=ACCESS_ID, access_secret=ACCESS_SECRET),
        MemorySink(),
        ProjectAccess(),
        FakeClock(),
    )
    await sim.start()
    await sim.create_fleet(FleetSpec(seed=2, devices=5, homes=1, online_ratio=1.0))
    assert sim.replay(10) == []
    sim.report(count=3)
    assert len(sim.replay(10)) == 3
    await sim.stop()

from __future__ import annotations

import typing
from collections import Counter
from typing import Any

import pytest

from fleet_contracts import topics
from fleet_contracts._base import Payload
from fleet_contracts.envelope import Envelope

from .contracts_samples import DEVICE, all_samples

pytestmark = pytest.mark.unit


@pytest.fixture(params=topics.ALL, ids=lambda t: t.name)
def topic(request: pytest.FixtureRequest) -> topics.Topic[Any]:
    return typing.cast(topics.Topic[Any], request.param)


def _data_class(cls: type[Envelope[Any]]) -> type[Payload]:
    annotation = cls.model_fields["data"].annotation
    assert isinstance(annotation, type)
    assert issubclass(annotation, Payload)
    return annotation


def test_topic_names_are_unique() -> None:
    counts = Counter(t.name for t in topics.ALL)
    assert [n for n, c in counts.items() if c > 1] == []


def test_every_module_level_topic_is_registered() -> None:
    declared = {id(v) for v in vars(topics).values() if isinstance(v, topics.Topic)}
    assert declared == {id(t) for t in topics.ALL}


def test_namespaces_are_under_the_fleet_tenant() -> None:
    assert topics.TENANT == "fleet"
    assert topics.namespaces() == [
        "fleet/device",
        "fleet/ingest",
        "fleet/status",
        "fleet/pairing",
        "fleet/unbinding",
        "fleet/ota",
    ]


def test_every_namespace_is_used() -> None:
    assert {t.namespace for t in topics.ALL} == set(topics.namespaces())


def test_topic_is_persistent_under_a_declared_namespace(topic: topics.Topic[Any]) -> None:
    assert topic.name.startswith("persistent://fleet/")
    assert topic.tenant == topics.TENANT
    assert topic.namespace in topics.namespaces()
    assert topic.name == f"persistent://{topic.namespace}/{topic.local_name}"
    assert topic.local_name
    assert "/" not in topic.local_name


def test_topic_declares_schema_producer_and_semantics(topic: topics.Topic[Any]) -> None:
    assert topic.envelope_classes(), "no event types"
    assert isinstance(topic.producer, topics.Service)
    assert isinstance(topic.subscription, topics.SubscriptionType)
    assert topic.description
    assert "\n" not in topic.description
    assert topic.producer not in topic.consumers or topic.name.endswith("/commands")


def test_key_field_is_on_every_payload_and_is_its_subject(topic: topics.Topic[Any]) -> None:
    for event_type, cls in topic.envelope_classes().items():
        data_cls = _data_class(cls)
        assert topic.key.field in data_cls.model_fields, f"{event_type} lacks {topic.key.field}"
        assert data_cls.subject_field == topic.key.field, event_type


def test_union_members_are_pinned_envelopes(topic: topics.Topic[Any]) -> None:
    for event_type, cls in topic.envelope_classes().items():
        assert issubclass(cls, Envelope)
        assert typing.get_args(cls.model_fields["type"].annotation) == (event_type,)


def test_an_event_type_means_one_class_everywhere() -> None:
    seen: dict[str, type[Envelope[Any]]] = {}
    for topic in topics.ALL:
        for event_type, cls in topic.envelope_classes().items():
            assert seen.setdefault(event_type, cls) is cls


def test_device_facts_are_ordered_per_device() -> None:
    for topic in (topics.DEVICE_EVENTS, topics.STATUS_SHADOW_EVENTS, topics.STATUS_PRESENCE_EVENTS):
        assert topic.key.field == "device_id"
        assert topic.subscription is topics.SubscriptionType.KEY_SHARED
    assert topics.DEVICE_EVENTS.producer is topics.Service.INGEST
    assert topics.UNBINDING_EVENTS.key.field == "batch_id"
    assert topics.OTA_RELEASE_EVENTS.key.field == "release_id"


def test_dead_letter_topics_exist_for_ingest_and_each_consuming_service() -> None:
    dead = {t.name for t in topics.ALL if "dead-letter" in t.local_name}
    assert "persistent://fleet/ingest/tuya-dead-letter" in dead
    consumers = {c for t in topics.ALL for c in t.consumers}
    for service in consumers:
        assert f"persistent://fleet/{service.value}/dead-letter" in dead


def test_every_sample_has_a_topic_and_every_type_a_sample() -> None:
    sample_types = {e.type for e in all_samples()}
    assert sample_types == set(topics.envelope_classes())


def test_partition_key_of_a_sample_is_its_subject() -> None:
    for env in all_samples():
        for topic in topics.ALL:
            if env.type in topic.envelope_classes():
                assert topic.key.of(env) == env.subject
    device_event = next(e for e in all_samples() if e.type == "device.online.v1")
    assert topics.DEVICE_EVENTS.key.of(device_event) == DEVICE


def test_unknown_tuya_messages_without_a_device_go_unkeyed() -> None:
    env = next(e for e in all_samples() if e.type == "device.tuya_message.unknown.v1")
    anonymous = env.model_copy(update={"data": env.data.model_copy(update={"device_id": None})})
    assert topics.DEVICE_EVENTS.key.of(anonymous) is None


def test_by_name() -> None:
    assert topics.by_name("persistent://fleet/device/events") is topics.DEVICE_EVENTS
    with pytest.raises(KeyError):
        topics.by_name("persistent://fleet/device/nope")


def test_encode_refuses_non_models() -> None:
    with pytest.raises(TypeError):
        topics.DEVICE_EVENTS.encode({"type": "device.online.v1"})  # type: ignore[arg-type]


def test_tuya_side_layout() -> None:
    assert topics.tuya_event_topic("abc123") == "persistent://abc123/out/event"
    assert topics.tuya_event_topic("abc123", test=True) == "persistent://abc123/out/event-test"
    assert topics.tuya_subscription("abc123") == "abc123-sub"
    assert topics.TUYA_SUBSCRIPTION_TYPE is topics.SubscriptionType.FAILOVER


@pytest.mark.parametrize("bad", ["", "a/b"])
def test_tuya_layout_rejects_bad_access_ids(bad: str) -> None:
    with pytest.raises(ValueError, match="access id"):
        topics.tuya_event_topic(bad)
    with pytest.raises(ValueError, match="access id"):
        topics.tuya_subscription(bad)

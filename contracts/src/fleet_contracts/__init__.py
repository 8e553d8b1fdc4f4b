"""tuya-fleet event contracts.

- `envelope`: the CloudEvents 1.0 envelope (`Envelope[DataT]`, `build`, `to_json_bytes`, `from_json_bytes`)
- `device`, `status`, `pairing`, `unbinding`, `ota`, `deadletter`: payloads, envelope classes and per-topic
  discriminated unions (`DeviceEvent`, `ShadowEvent`, `PairingEvent`, ...)
- `topics`: the registry of every Pulsar topic (name, schema, key, producer, subscription)
- `export` / `asyncapi` / `compat`: committed JSON Schemas, AsyncAPI document, backward-compatibility check

    env = DeviceOnlineEvent.build(data, source=service_source("ingest"), tenant=access_id, region="eu")
    producer.send(topics.DEVICE_EVENTS.encode(env), partition_key=topics.DEVICE_EVENTS.key.of(env))
    event = topics.DEVICE_EVENTS.decode(message.data())   # -> DeviceOnlineEvent, via the `type` union
"""

from fleet_contracts.envelope import Envelope, from_json_bytes, service_source, to_json_bytes

__all__ = ["Envelope", "from_json_bytes", "service_source", "to_json_bytes"]

"""The gateway's own convention, spoken by the simulators (docs/conventions.md has the full text).

iotgw/thermo-1/telemetry   {"temperature": 21.4, "battery": {"volt": 3.7}, "ts": 1764090000.5}
iotgw/thermo-1/status      online | offline                      (retained; the last will)
iotgw/thermo-1/meta        {"type": "thermostat", "name": "…", "metrics": {…}, "commands": {…}}
iotgw/thermo-1/cmd/<name>  {"id": "c-…", "params": {...}}        (published by the gateway, QoS 1)
iotgw/thermo-1/result      {"id": "c-…", "status": "ok"|"error", "result": {...}, "error": "..."}
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from gateway.conventions.base import PrefixConvention, Surroundings
from gateway.conventions.common import (
    MAX_STRING_VALUE,
    flatten,
    is_finite_number,
    load_json,
    not_its_own,
    online_status,
    sample,
)
from gateway.errors import DecodeError
from gateway.meta import parse_meta
from gateway.models import (
    CommandResult,
    DeviceEvent,
    DeviceMeta,
    MetaChange,
    Rejected,
    Sample,
    Telemetry,
    Value,
)
from gateway.names import is_command_name, is_device_id

__all__ = ["NativeConvention", "load_json"]


class NativeConvention(PrefixConvention):
    """Native ids carry no tag, and may not start with another convention's (`z2m.lamp` is a
    Zigbee2MQTT device: a native message for it is refused as `foreign_device`)."""

    name = "native"
    tag = ""
    prefix_key = "prefix"

    def __init__(self, prefix: str = "iotgw") -> None:
        super().__init__(prefix)
        self._foreign_tags: frozenset[str] = frozenset()

    def bind(self, surroundings: Surroundings) -> None:
        super().bind(surroundings)
        self._foreign_tags = surroundings.foreign_tags

    def subscriptions(self) -> list[str]:
        return [f"{self.prefix}/+/{leaf}" for leaf in ("telemetry", "status", "meta", "result")]

    def decode(self, topic: str, payload: bytes, received_at: float) -> list[DeviceEvent]:
        levels = topic[len(self._prefix) :].split("/")
        if len(levels) != 2:
            raise DecodeError("unknown_topic", topic)
        device, leaf = levels
        if not is_device_id(device):
            raise DecodeError("bad_device_id", device)
        if device.partition(".")[0] in self._foreign_tags:
            raise DecodeError("foreign_device", device)
        if leaf == "telemetry":
            return _telemetry(device, payload, received_at)
        if leaf == "status":
            return [online_status(device, payload)]
        if leaf == "meta":
            meta = parse_meta(load_json(payload), self._shapes) if payload else None
            return [MetaChange(device, meta)]
        if leaf == "result":
            return [_result(device, payload)]
        raise DecodeError("unknown_topic", topic)

    def encode_command(
        self, device: str, meta: DeviceMeta, command: str, command_id: str, params: dict[str, Value]
    ) -> tuple[str, bytes]:
        # device and command passed the allow-lists in gateway.names before reaching here.
        topic = f"{self._prefix}{device}/cmd/{command}"
        if not self.owns_command_topic(device, topic):
            raise not_its_own(device, topic)
        return topic, orjson.dumps({"id": command_id, "params": params})

    def arm(self, device: str, command_id: str, before: Mapping[str, tuple[float, Value]]) -> bool:
        return True  # the device answers on its result topic, naming the command's id

    def owns_command_topic(self, device: str, topic: str) -> bool:
        head = f"{self._prefix}{device}/cmd/"
        return (
            is_device_id(device)
            and device.partition(".")[0] not in self._foreign_tags
            and topic.startswith(head)
            and is_command_name(topic[len(head) :])
            and self.namespace.allows(topic)
        )


def _telemetry(device: str, payload: bytes, received_at: float) -> list[DeviceEvent]:
    body = load_json(payload)
    if not isinstance(body, dict):
        raise DecodeError("bad_payload", "telemetry must be a JSON object")
    events: list[DeviceEvent] = []
    ts = body.pop("ts", None)
    if ts is None:
        ts = received_at
    elif not is_finite_number(ts):
        events.append(Rejected("bad_ts", sample(ts)))
        ts = received_at
    samples: list[Sample] = []
    flatten(body, "", float(ts), samples, events)
    if not samples:
        if events:
            return events
        raise DecodeError("empty_telemetry", device)
    events.append(Telemetry(device, samples))
    return events


def _result(device: str, payload: bytes) -> CommandResult:
    body = load_json(payload)
    if not isinstance(body, dict) or not isinstance(body.get("id"), str):
        raise DecodeError("bad_result", "result must be an object with a string id")
    status = body.get("status")
    if status not in ("ok", "error"):
        raise DecodeError("bad_result", f"status must be ok or error, not {sample(status)}")
    error = body.get("error")
    return CommandResult(
        device=device,
        command_id=body["id"],
        status=status,
        result=body.get("result"),
        error=error[:MAX_STRING_VALUE] if isinstance(error, str) else None,
    )

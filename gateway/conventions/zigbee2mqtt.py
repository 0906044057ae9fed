"""Zigbee2MQTT (https://www.zigbee2mqtt.io/guide/usage/mqtt_topics_and_messages.html).

zigbee2mqtt/bridge/devices              [{"friendly_name": "kitchen/lamp", "definition": {…}}, …]
zigbee2mqtt/kitchen/lamp                {"state": "ON", "brightness": 215, "linkquality": 65}
zigbee2mqtt/kitchen/lamp/availability   {"state": "online"}   (or legacy plain `online`/`offline`)
zigbee2mqtt/kitchen/lamp/set            {"brightness": 128}   (published by the gateway)
zigbee2mqtt/bridge/state                {"state": "online"}   (or legacy plain `online`/`offline`)

Friendly names may hold `/` and spaces, so a topic is matched against the names the bridge
announced before it is split. Device ids are `z2m.<name>` (see common.scoped_id); meta and
commands come from each device's exposes; a command's result is the state echo that shows the
value it set. A name is refused when its topics would not be its own: one Zigbee2MQTT itself
refuses (empty, `/` at either end, control characters, wildcards), one with a `set` or `get`
level or ending in `/availability` (its topics would be another name's requests or status), and
one whose command topic leaves the namespace (docs/security.md, rule 1).

The bridge itself is the device `z2m.bridge` (`bridge/state`). While it is offline every device
it announced is unreachable: shown offline, and commands to them are refused at once
(`unavailable`, reason `bridge_offline`) rather than published to a bridge that cannot hear them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.conventions.base import PrefixConvention
from gateway.conventions.common import (
    Echo,
    flatten,
    is_finite_number,
    is_value,
    load_json,
    load_json_object,
    not_its_own,
    sample,
    scoped_id,
)
from gateway.errors import CommandError, DecodeError
from gateway.meta import parse_meta
from gateway.models import (
    DeviceEvent,
    DeviceMeta,
    MetaChange,
    Rejected,
    Removed,
    Sample,
    StatusChange,
    Telemetry,
    Value,
)
from gateway.names import is_command_name

TAG = "z2m"
# Exposes access bits (https://www.zigbee2mqtt.io/guide/usage/exposes.html#access).
ACCESS_STATE = 1
ACCESS_SET = 2
MAX_EXPOSE_DEPTH = 4
AVAILABILITY = "/availability"
# Requests other clients (or the gateway itself) publish under the base topic: not device state.
REQUEST_LEAVES = ("set", "get")
_CONTROL = frozenset(chr(c) for c in (*range(0x20), *range(0x7F, 0xA0)))


@dataclass(frozen=True, slots=True)
class Setter:
    """How a `set_<property>` command is carried: the property, and its toggle value if any."""

    property: str
    toggle: Value | None = None


BRIDGE_ID = f"{TAG}.bridge"  # no friendly name can make it: names under `bridge/` are refused
BRIDGE_META = {"type": "bridge", "name": "Zigbee2MQTT bridge", "metrics": {}, "commands": {}}


@dataclass(slots=True)
class Z2mDevice:
    id: str
    friendly_name: str
    setters: dict[str, Setter] = field(default_factory=dict)
    meta_raw: dict[str, Any] | None = None
    has_meta: bool = False  # its meta parsed: a cleared status leaves it shown, not withdrawn
    #: what its own availability topic last said (None: nothing, or cleared)
    reported: bool | None = None


class Zigbee2MqttConvention(PrefixConvention):
    name = "zigbee2mqtt"
    tag = TAG

    def __init__(self, base_topic: str = "zigbee2mqtt") -> None:
        super().__init__(base_topic)
        self._by_name: dict[str, Z2mDevice] = {}
        self._by_id: dict[str, Z2mDevice] = {}
        self._bridge_online: bool | None = None  # None: bridge/state not heard (or cleared)

    def decode(self, topic: str, payload: bytes, received_at: float) -> list[DeviceEvent]:
        rest = topic[len(self._prefix) :]
        if rest.startswith("bridge/"):
            return self._bridge(rest[len("bridge/") :], payload)
        if rest in self._by_name:
            return self._state(rest, payload, received_at)
        if rest.endswith(AVAILABILITY) and len(rest) > len(AVAILABILITY):
            return self._availability(rest[: -len(AVAILABILITY)], payload)
        *name, leaf = rest.split("/")
        if name and (leaf in REQUEST_LEAVES or (len(name) > 1 and name[-1] in REQUEST_LEAVES)):
            return []  # <name>/set, <name>/get, <name>/set/<attribute>: commands, not state
        if not rest:
            raise DecodeError("unknown_topic", topic)
        # A device the bridge has not listed yet (or a group): still a device, without meta.
        return self._state(rest, payload, received_at)

    def encode_command(
        self, device: str, meta: DeviceMeta, command: str, command_id: str, params: dict[str, Value]
    ) -> tuple[str, bytes]:
        known = self._by_id.get(device)
        setter = known.setters.get(command) if known is not None else None
        if known is None or setter is None:
            raise CommandError("not_found", f"{device} did not expose {command!r:.80}")
        if self._bridge_online is False:
            # Published now, the command would wait out its timeout for an echo no one can send.
            raise CommandError(
                "unavailable",
                f"the Zigbee2MQTT bridge is offline: {device} cannot be reached",
                reason="bridge_offline",
            )
        # The friendly name is what the bridge announced, never client text.
        topic = self._set_topic(known.friendly_name)
        if not self.namespace.allows(topic):
            raise not_its_own(device, topic)
        value = params[setter.property]
        expected = None if setter.toggle is not None and value == setter.toggle else value
        # The property is also the metric its state shows (a top-level key of the state).
        echo = Echo(command_id, setter.property, expected, metric=setter.property)
        self._echoes.expect(device, echo)
        return topic, orjson.dumps({setter.property: value})

    def forget(self, device: str) -> list[DeviceEvent]:
        known = self._by_id.pop(device, None)
        if known is not None:
            del self._by_name[known.friendly_name]
        return super().forget(device)

    def owns_command_topic(self, device: str, topic: str) -> bool:
        known = self._by_id.get(device)
        return (
            known is not None
            and topic == self._set_topic(known.friendly_name)
            and self.namespace.allows(topic)
        )

    def _set_topic(self, friendly_name: str) -> str:
        return f"{self._prefix}{friendly_name}/set"

    def device_id(self, friendly_name: str) -> str:
        known = self._by_name.get(friendly_name)
        return known.id if known is not None else scoped_id(TAG, friendly_name)

    # --- decoding -------------------------------------------------------------------------

    def _state(self, name: str, payload: bytes, received_at: float) -> list[DeviceEvent]:
        body = load_json_object(payload, "state")
        device = self.device_id(name)
        samples: list[Sample] = []
        events: list[DeviceEvent] = []
        # Zigbee2MQTT publishes null for values it has not read yet: not an error.
        flatten(body, "", received_at, samples, events, skip_null=True)
        if samples:
            events.insert(0, Telemetry(device, samples))
        for key, value in body.items():
            if is_value(value):
                events.extend(self._echoes.answer(device, key, value, {key: value}))
        if not events:
            raise DecodeError("empty_state", name[:80])
        return events

    def _availability(self, name: str, payload: bytes) -> list[DeviceEvent]:
        device = self.device_id(name)
        online = _online(payload, "availability")
        known = self._by_name.get(name)
        if known is not None:
            known.reported = online
            if self._bridge_online is False:
                return []  # unreachable behind an offline bridge, whatever it said last
        return [StatusChange(device, online)]

    def _bridge_state(self, payload: bytes) -> list[DeviceEvent]:
        """`bridge/state`: the bridge as a device; offline, every device behind it too."""
        online = _online(payload, "bridge/state")
        was, self._bridge_online = self._bridge_online, online
        events: list[DeviceEvent] = [MetaChange(BRIDGE_ID, parse_meta(BRIDGE_META, self._shapes))]
        events.append(StatusChange(BRIDGE_ID, online))
        if online is False:
            events += [StatusChange(d.id, False) for d in self._by_name.values()]
        elif was is False:
            # Back: each device shows what it last said itself (unknown if nothing).
            events += [
                StatusChange(d.id, d.reported)
                for d in self._by_name.values()
                if d.reported is not None or d.has_meta
            ]
        return events

    def _bridge(self, leaf: str, payload: bytes) -> list[DeviceEvent]:
        if leaf == "state":
            return self._bridge_state(payload)
        if leaf != "devices":
            return []  # bridge/info, logging, event, groups, response/…: not devices
        entries = load_json(payload)
        if not isinstance(entries, list):
            raise DecodeError("bad_payload", "bridge/devices must be a JSON array")
        events: list[DeviceEvent] = []
        seen: dict[str, Z2mDevice] = {}
        for entry in entries:
            device = self._announced(entry, events)
            if device is not None and device.friendly_name not in seen:
                seen[device.friendly_name] = device
        for name, gone in self._by_name.items():
            if name not in seen:  # left the network: the device is gone
                self._echoes.forget(gone.id)
                events.append(Removed(gone.id))
        for name, device in seen.items():
            before = self._by_name.get(name)
            if before is not None:
                device.reported, device.has_meta = before.reported, before.has_meta
            if before is None or before.meta_raw != device.meta_raw:
                meta = self._parsed_meta(device, events)
                device.has_meta = meta is not None
                events.append(MetaChange(device.id, meta))
                if before is None and self._bridge_online is False:
                    events.append(StatusChange(device.id, False))
        self._by_name = seen
        self._by_id = {d.id: d for d in seen.values()}
        return events

    def _announced(self, entry: object, events: list[DeviceEvent]) -> Z2mDevice | None:
        if not isinstance(entry, dict) or entry.get("type") == "Coordinator":
            return None
        name = entry.get("friendly_name")
        if not isinstance(name, str) or not _usable_name(name):
            events.append(Rejected("bad_device", sample(name)))
            return None
        refusal = self.namespace.refusal(self._set_topic(name))
        if refusal is not None:
            events.append(Rejected("bad_topic", f"{sample(name)}: {refusal}"))
            return None
        definition = entry.get("definition")
        if not isinstance(definition, dict):
            definition = {}  # unsupported devices have "definition": null
        device = Z2mDevice(scoped_id(TAG, name), name)
        metrics: dict[str, Any] = {}
        commands: dict[str, Any] = {}
        for prefix, expose, in_composite in _generic_exposes(definition.get("exposes"), "", 0):
            _add_expose(prefix, expose, in_composite, metrics, commands, device.setters)
        model = definition.get("model")
        device.meta_raw = {
            "type": model if isinstance(model, str) and model else "zigbee",
            "name": name,
            "metrics": metrics,
            "commands": commands,
        }
        return device

    def _parsed_meta(self, device: Z2mDevice, events: list[DeviceEvent]) -> DeviceMeta | None:
        try:
            return parse_meta(device.meta_raw, self._shapes)
        except DecodeError as exc:
            # One device with odd exposes must not cost the others their meta.
            events.append(Rejected(exc.reason, f"{device.friendly_name[:60]}: {exc.detail}"))
            device.setters.clear()
            return None


def _online(payload: bytes, what: str) -> bool | None:
    """`{"state": "online"}` (Zigbee2MQTT 2.x) or the plain word (1.x's default); empty: the
    retained status was cleared."""
    text = payload.strip()
    if not text:
        return None
    state = text.lower()
    if text.startswith(b"{"):
        announced = load_json_object(text, what).get("state")
        state = announced.lower().encode() if isinstance(announced, str) else b""
    if state == b"online":
        return True
    if state == b"offline":
        return False
    raise DecodeError("bad_status", repr(payload[:40]))


def _usable_name(name: str) -> bool:
    """A friendly name whose topics are its own (see the module docstring)."""
    levels = name.split("/")
    return (
        bool(name)
        and levels[0] != "bridge"
        and "" not in levels
        and not any(level in REQUEST_LEAVES for level in levels)
        and levels[-1] != AVAILABILITY[1:]
        and not any(c in _CONTROL or c in "+#" for c in name)
    )


def _generic_exposes(
    exposes: object, prefix: str, depth: int, in_composite: bool = False
) -> list[tuple[str, dict[str, Any], bool]]:
    """(metric prefix, expose, inside a composite) for every generic expose, specifics unpacked.

    A composite nests its features under its property in the state (`{"color": {"x": …}}`);
    the features of a light or switch sit at the top level.
    """
    found: list[tuple[str, dict[str, Any], bool]] = []
    if not isinstance(exposes, list) or depth > MAX_EXPOSE_DEPTH:
        return found
    for expose in exposes:
        if not isinstance(expose, dict):
            continue
        features = expose.get("features")
        if isinstance(features, list):
            prop = expose.get("property")
            if expose.get("type") == "composite" and isinstance(prop, str):
                found += _generic_exposes(features, f"{prefix}{prop}.", depth + 1, True)
            else:
                found += _generic_exposes(features, prefix, depth + 1, in_composite)
        else:
            found.append((prefix, expose, in_composite))
    return found


def _add_expose(
    prefix: str,
    expose: dict[str, Any],
    in_composite: bool,
    metrics: dict[str, Any],
    commands: dict[str, Any],
    setters: dict[str, Setter],
) -> None:
    prop = expose.get("property")
    access = expose.get("access")
    if not isinstance(prop, str) or not prop or not isinstance(access, int):
        return
    if access & ACCESS_STATE:
        unit = expose.get("unit")
        metrics.setdefault(prefix + prop, {"unit": unit} if isinstance(unit, str) else {})
    command = f"set_{prop}"
    # Composite values (colours) need several params in one nested object: not offered.
    if not access & ACCESS_SET or in_composite or command in commands:
        return
    spec = _param_spec(expose)
    if spec is None or not is_command_name(command):
        return
    param, toggle = spec
    commands[command] = {"params": {prop: param}}
    setters[command] = Setter(prop, toggle)


def _param_spec(expose: dict[str, Any]) -> tuple[dict[str, Any], Value | None] | None:
    """The command param a settable expose allows, and its toggle value; None if unsupported."""
    kind = expose.get("type")
    if kind == "binary":
        on, off = expose.get("value_on"), expose.get("value_off")
        toggle = expose.get("value_toggle")
        if isinstance(on, bool) and isinstance(off, bool):
            return {"type": "boolean"}, None
        param = _enum_param([v for v in (on, off, toggle) if v is not None])
        return (param, toggle if isinstance(toggle, str | int | float) else None) if param else None
    if kind == "numeric":
        param = {"type": "number"}
        for bound, key in (("min", "value_min"), ("max", "value_max")):
            if is_finite_number(expose.get(key)):
                param[bound] = expose[key]
        return param, None
    if kind == "enum":
        values = expose.get("values")
        param = _enum_param(values) if isinstance(values, list) else None
        return (param, None) if param else None
    if kind == "text":
        return {"type": "string"}, None
    return None  # list, composite: no flat parameter fits


def _enum_param(values: list[Any]) -> dict[str, Any] | None:
    if values and all(isinstance(v, str) for v in values):
        return {"type": "string", "enum": values}
    if values and all(is_finite_number(v) for v in values):
        return {"type": "number", "enum": values}
    return None

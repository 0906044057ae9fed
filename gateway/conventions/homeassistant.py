"""Home Assistant MQTT discovery (https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery).

homeassistant/sensor/bedroom/temperature/config  {"stat_t": "bedroom/state", "unit_of_meas": "°C",
                                                  "val_tpl": "{{ value_json.temperature }}",
                                                  "dev": {"ids": ["bedroom01"], "name": "Bedroom"}}
bedroom/state                                    {"temperature": 23.2, "humidity": 43.7}
homeassistant/switch/irrigation/config           {"~": "homeassistant/switch/irrigation",
                                                  "cmd_t": "~/set", "stat_t": "~/state"}

Entities are grouped into one gateway device per discovery `device` block; each entity is one
metric named as Home Assistant names it (its `name`, else its device class), its value read as
Home Assistant reads it (on/off components as booleans, sensors with a unit as numbers), and, for
switches, lights, numbers, selects and buttons, one command (`set_<object id>`). The
state and availability topics a config names are subscribed to at run time (Subscribe events).
Every topic a config names must lie in the namespace: under the discovery prefix, or matching
`conventions.homeassistant.allowed_topics`, never a topic of another convention or the gateway
(docs/security.md, rule 1); an entity naming another is refused and counted (`bad_topic`).
Value templates are evaluated only in their simple forms (`{{ value }}`, `{{ value_json.a.b }}`,
`{{ value_json['a'] }}`); anything else is counted as `unsupported_template`, never guessed at.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Self, TypeGuard

import orjson

from gateway.conventions.base import PrefixConvention, Surroundings
from gateway.conventions.common import (
    Echo,
    Filters,
    Namespace,
    changed_meta,
    is_finite_number,
    is_publish_topic,
    is_topic_filter,
    is_value,
    load_json,
    load_text,
    not_its_own,
    parse_scalar,
    sample,
    scoped_id,
)
from gateway.errors import CommandError, ConfigError, DecodeError
from gateway.models import (
    DeviceEvent,
    DeviceMeta,
    Rejected,
    Removed,
    Sample,
    StatusChange,
    Subscribe,
    Telemetry,
    Unsubscribe,
    Value,
)
from gateway.names import is_command_name, is_metric_name

TAG = "ha"
MAX_ENTITIES = 65536
#: Entities one device may have (a device's announcements cannot grow its meta without end).
MAX_ENTITIES_PER_DEVICE = 256
# The abbreviations of the keys this module reads; others are kept as they are (they are unused).
ABBREVIATIONS = {
    "avty": "availability",
    "avty_mode": "availability_mode",
    "avty_t": "availability_topic",
    "avty_tpl": "availability_template",
    "cmd_t": "command_topic",
    "cmd_tpl": "command_template",
    "cmps": "components",
    "dev": "device",
    "dev_cla": "device_class",
    "json_attr_t": "json_attributes_topic",
    "max": "max",
    "min": "min",
    "name": "name",
    "o": "origin",
    "obj_id": "object_id",
    "ops": "options",
    "p": "platform",
    "pl_avail": "payload_available",
    "pl_not_avail": "payload_not_available",
    "pl_off": "payload_off",
    "pl_on": "payload_on",
    "pl_prs": "payload_press",
    "stat_off": "state_off",
    "stat_on": "state_on",
    "stat_t": "state_topic",
    "stat_val_tpl": "state_value_template",
    "t": "topic",
    "uniq_id": "unique_id",
    "unit_of_meas": "unit_of_measurement",
    "val_tpl": "value_template",
}
DEVICE_ABBREVIATIONS = {
    "cns": "connections",
    "ids": "identifiers",
    "mdl": "model",
    "mf": "manufacturer",
    "sw": "sw_version",
    "hw": "hw_version",
    "sa": "suggested_area",
    "cu": "configuration_url",
}
# Only `{{ value }}` and `{{ value_json<path> }}`, the path a chain of `.name`, `['key']`,
# `["key"]` or `[index]`: enough for nearly every device firmware, and no evaluation to get wrong.
_TEMPLATE = re.compile(
    r"\{\{\s*(value|value_json((?:\.[A-Za-z_]\w*|\[\s*(?:'[^']*'|\"[^\"]*\"|\d+)\s*\])+))\s*\}\}"
)
_STEP = re.compile(r"\.([A-Za-z_]\w*)|\[\s*'([^']*)'\s*\]|\[\s*\"([^\"]*)\"\s*\]|\[\s*(\d+)\s*\]")
RAW = ()  # the path of `{{ value }}` and of no template: the payload text itself
NOT_JSON = object()  # a payload where a template expected JSON
#: Sensor device classes whose state is no number (https://www.home-assistant.io/integrations/sensor/#device-class).
TEXT_DEVICE_CLASSES = frozenset({"enum", "timestamp", "date"})
#: Components whose state is on or off (`payload_on`/`payload_off`, `state_on`/`state_off`).
ON_OFF = frozenset({"binary_sensor", "switch", "light"})
AVAILABILITY_MODES = frozenset({"all", "any", "latest"})


@dataclass(frozen=True, slots=True)
class Template:
    path: tuple[str | int, ...] | None  # None: a form this module does not evaluate
    source: str = ""


@dataclass(slots=True)
class Entity:
    key: str  # the discovery topic (plus "#<id>" for device-based discovery)
    component: str
    object_id: str
    device: str
    #: what Home Assistant shows: the entity's `name`, else (null or absent) its device class
    label: str
    unit: str | None = None
    unique_id: str | None = None
    device_class: str | None = None
    metric: str | None = None
    state_topic: str | None = None
    template: Template = field(default_factory=lambda: Template(RAW))
    json_state: bool = False  # a JSON-schema light: the value is the payload's "state"
    command: str | None = None
    command_topic: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    payloads: dict[Value, str] = field(default_factory=dict)  # param value -> payload to publish
    echoes: dict[Value, Value] = field(default_factory=dict)  # param value -> state it shows
    #: state payload -> boolean, for on/off components; empty: not an on/off entity
    states: dict[str, bool] = field(default_factory=dict)
    numeric: bool = False  # a sensor with a unit or a numeric device class: numbers only
    availability: list[tuple[str, str, str, Template]] = field(default_factory=list)
    availability_mode: str = "latest"
    available: dict[str, bool] = field(default_factory=dict)  # availability topic -> last said
    latest: bool | None = None  # what the last availability message said

    def declares(self) -> tuple[object, ...]:
        """What the entity contributes to its device's meta (and which device)."""
        return (self.device, self.metric, self.info(), self.command, self.params)

    def info(self) -> dict[str, str]:
        """The metric's entry in the meta: its unit, and where it came from (traceability)."""
        info = {"unit": self.unit} if self.unit else {}
        info["component"] = self.component
        info["object_id"] = self.object_id
        if self.unique_id:
            info["unique_id"] = self.unique_id
        if self.device_class:
            info["device_class"] = self.device_class
        return info

    def is_available(self) -> bool | None:
        """Whether Home Assistant would show the entity available, by its `availability_mode`;
        None while the topics heard from cannot tell yet."""
        if self.availability_mode == "latest":
            return self.latest
        heard = [self.available.get(topic) for topic, *_ in self.availability]
        if self.availability_mode == "all":
            if False in heard:
                return False
            return True if None not in heard else None
        if True in heard:  # any
            return True
        return False if None not in heard else None


@dataclass(slots=True)
class HaDevice:
    id: str
    name: str
    model: str
    entities: dict[str, Entity] = field(default_factory=dict)
    metrics: dict[str, str] = field(default_factory=dict)  # metric -> entity key
    commands: dict[str, str] = field(default_factory=dict)  # command -> entity key
    meta_raw: dict[str, Any] | None = None


class HomeAssistantConvention(PrefixConvention):
    name = "homeassistant"
    tag = TAG
    prefix_key = "discovery_prefix"

    def __init__(
        self,
        discovery_prefix: str = "homeassistant",
        allowed_topics: Iterable[str] = (),
        duplicates: str = "suppress",
    ) -> None:
        super().__init__(discovery_prefix)
        self.namespace = Namespace(self.namespace.own, borrowed=allowed_topics)
        self._suppress = duplicates == "suppress"
        self._neighbours: list[tuple[str, Filters]] = []
        self._entities: dict[str, Entity] = {}
        self._devices: dict[str, HaDevice] = {}
        self._by_topic: dict[str, set[str]] = {}  # state or availability topic -> entity keys
        self._by_command_topic: dict[str, set[str]] = {}  # command topic -> entity keys
        self._by_config: dict[str, list[str]] = {}  # discovery topic -> entity keys it defined

    @classmethod
    def from_config(cls, section: Any) -> Self:
        allowed = list(section.allowed_topics)
        for i, topic_filter in enumerate(allowed):
            if not is_topic_filter(topic_filter) or topic_filter.startswith("$"):
                path = f"conventions.{cls.name}.allowed_topics[{i}]"
                raise ConfigError(path, "must be an MQTT topic filter, not a $ topic")
        return cls(cls.prefix_from(section), allowed, section.duplicates)

    def bind(self, surroundings: Surroundings) -> None:
        super().bind(surroundings)
        # Not the native convention's: its devices announce themselves, never through Home
        # Assistant discovery; a config naming native topics stays refused and counted.
        self._neighbours = [
            (name, Filters(own)) for name, own in surroundings.neighbours if name != "native"
        ]

    def read_elsewhere(self, config: dict[str, Any]) -> str | None:
        """The enabled convention that owns a topic this config names (Zigbee2MQTT's and
        Tasmota's discovery of the devices they read themselves), or None."""
        for topic in _named_topics(config):
            for name, own in self._neighbours:
                if own.match(topic):
                    return name
        return None

    def subscriptions(self) -> list[str]:
        return [f"{self._prefix}+/+/config", f"{self._prefix}+/+/+/config"]

    def owns(self, topic: str) -> bool:
        return topic.startswith(self._prefix) or topic in self._by_topic

    def roots(self) -> None:
        return None  # the state topics configs name may lie anywhere allowed_topics allow

    def decode(self, topic: str, payload: bytes, received_at: float) -> list[DeviceEvent]:
        if topic.startswith(self._prefix) and topic.endswith("/config"):
            levels = topic[len(self._prefix) :].split("/")
            if len(levels) in (3, 4):
                return self._config(topic, levels, payload)
        keys = self._by_topic.get(topic)
        if not keys:
            raise DecodeError("unknown_topic", topic[:120])
        return self._message(topic, keys, payload, received_at)

    def encode_command(
        self, device: str, meta: DeviceMeta, command: str, command_id: str, params: dict[str, Value]
    ) -> tuple[str, bytes]:
        known = self._devices.get(device)
        key = known.commands.get(command) if known is not None else None
        entity = self._entities[key] if key is not None else None
        if entity is None or entity.command_topic is None:
            raise CommandError("not_found", f"{device} announced no {command!r:.80}")
        if not self.owns_command_topic(device, entity.command_topic):
            raise not_its_own(device, entity.command_topic)
        value = next(iter(params.values()), None)
        payload = entity.payloads.get(value) if value is not None else entity.payloads.get("")
        if payload is None:  # a number: its value, as Home Assistant renders `{{ value }}`
            number = int(value) if isinstance(value, float) and value.is_integer() else value
            payload = str(number)
        metric = entity.metric if entity.state_topic is not None else None
        if metric is None or entity.component == "button":
            # Optimistic entities and buttons show nothing a command could be confirmed by.
            self._echoes.expect(device, Echo(command_id, None))
        else:
            expected = entity.echoes.get(value, value) if value is not None else None
            self._echoes.expect(device, Echo(command_id, metric, expected, metric=metric))
        return entity.command_topic, payload.encode()

    def owns_command_topic(self, device: str, topic: str) -> bool:
        """Inside the namespace, a command topic of `device`, and no topic of any other device:
        otherwise a token allowed to command one device could command (or fake the state of)
        another through it."""
        commanding = self._by_command_topic.get(topic)
        if not commanding or not self.namespace.allows(topic):
            return False
        keys = commanding | self._by_topic.get(topic, set())
        return all(self._entities[key].device == device for key in keys)

    def forget(self, device: str) -> list[DeviceEvent]:
        known = self._devices.pop(device, None)
        super().forget(device)
        if known is None:
            return []
        topics: set[str] = set()
        for key in list(known.entities):
            config_keys = self._by_config.get(key.partition("#")[0])
            if config_keys is not None:
                config_keys.remove(key)
                if not config_keys:
                    del self._by_config[key.partition("#")[0]]
            topics |= entity_topics(self._drop(key))
        gone = tuple(sorted(t for t in topics if t not in self._by_topic))
        return [Unsubscribe(gone)] if gone else []

    # --- discovery ------------------------------------------------------------------------

    def _config(self, topic: str, levels: list[str], payload: bytes) -> list[DeviceEvent]:
        """A config (re)defines the entities of its topic. The broker is asked for topics no
        entity used before and told to drop those none uses any more; meta is rebuilt only for
        devices whose declarations changed, so a config republished as it was costs the work of
        its own entities, not of its device's."""
        component, object_id = levels[0], levels[-2]
        node_id = levels[1] if len(levels) == 4 else ""
        old = [self._drop(key) for key in self._by_config.pop(topic, [])]
        before = {e.key: e.declares() for e in old}
        old_topics = {t for e in old for t in entity_topics(e)}
        events: list[DeviceEvent] = []
        fresh: set[str] = set()
        if payload.strip():
            config = load_json(payload)
            if not isinstance(config, dict):
                raise DecodeError("bad_config", "a discovery config must be a JSON object")
            config = _expand(config)
            if component == "device":
                entries = _device_components(config, topic, events)
            else:
                entries = [(topic, component, object_id, config)]
            for key, comp, obj, entry in entries:
                entity = self._entity(key, comp, node_id, obj, entry, events, fresh)
                if entity is not None:
                    self._by_config.setdefault(topic, []).append(key)
        new = [self._entities[key] for key in self._by_config.get(topic, ())]
        if fresh - old_topics:
            events.append(Subscribe(tuple(sorted(fresh - old_topics))))
        gone = sorted(t for t in old_topics if t not in self._by_topic)
        if gone:
            events.append(Unsubscribe(tuple(gone)))
        if {e.key: e.declares() for e in new} != before:
            for device_id in sorted({e.device for e in (*old, *new)}):
                events += self._meta_events(device_id)
        return events

    def _entity(
        self,
        key: str,
        component: str,
        node_id: str,
        object_id: str,
        config: dict[str, Any],
        events: list[DeviceEvent],
        fresh: set[str],
    ) -> Entity | None:
        """Define one entity; `fresh` collects the topics no entity used before."""
        reader = self.read_elsewhere(config) if self._suppress else None
        if reader is not None:
            # Another enabled convention reads this device under its own id: shown once, there.
            # Its topics are refused here all the same (docs/security.md, rule 1).
            events.append(Rejected("duplicate", f"{key[:100]}: read by {reader}"))
            return None
        device_id, device_name, model = _device_of(config, node_id, object_id)
        known = self._devices.get(device_id)
        crowded = known is not None and len(known.entities) >= MAX_ENTITIES_PER_DEVICE
        if len(self._entities) >= MAX_ENTITIES or crowded:
            events.append(Rejected("too_many_entities", key[:120]))
            return None
        entity = Entity(
            key,
            component,
            object_id,
            device_id,
            _label(config, object_id),
            unit=_text(config.get("unit_of_measurement")) or None,
            unique_id=_text(config.get("unique_id")) or None,
            device_class=_text(config.get("device_class")) or None,
        )
        device = self._devices.get(device_id)
        if device is None:
            device = self._devices[device_id] = HaDevice(device_id, device_name, model)
        _state_of(entity, config, self.namespace, events)
        _availability_of(entity, config, self.namespace, events)
        _command_of(entity, config, self.namespace, events)
        if entity.state_topic is not None:
            entity.metric = _metric(device, entity, events)
            if entity.metric is None:
                entity.state_topic = None
            else:
                device.metrics[entity.metric] = key
        elif entity.command is None:
            events.append(Rejected("unsupported_component", f"{component}: {key[:100]}"))
        if entity.command is not None:
            if entity.command in device.commands:
                events.append(Rejected("duplicate_entity", f"{key[:100]}: {entity.command}"))
                entity.command = entity.command_topic = None
            else:
                device.commands[entity.command] = key
        device.entities[key] = entity
        self._entities[key] = entity
        for topic in entity_topics(entity):
            if topic not in self._by_topic:
                fresh.add(topic)
            self._by_topic.setdefault(topic, set()).add(key)
        if entity.command_topic is not None:
            self._by_command_topic.setdefault(entity.command_topic, set()).add(key)
        return entity

    def _drop(self, key: str) -> Entity:
        """Remove one entity from every index (its device stays, for the caller to judge)."""
        entity = self._entities.pop(key)
        device = self._devices.get(entity.device)
        if device is not None:
            del device.entities[key]
            if entity.metric is not None and device.metrics.get(entity.metric) == key:
                del device.metrics[entity.metric]
            if entity.command is not None and device.commands.get(entity.command) == key:
                del device.commands[entity.command]
        for topic in entity_topics(entity):
            _unbind(self._by_topic, topic, key)
        if entity.command_topic is not None:
            _unbind(self._by_command_topic, entity.command_topic, key)
        return entity

    def _meta_events(self, device_id: str) -> list[DeviceEvent]:
        device = self._devices.get(device_id)
        if device is None:
            return []
        if not device.entities:
            # Its last config was cleared: the device is gone.
            del self._devices[device_id]
            self._echoes.forget(device_id)
            return [Removed(device_id)] if device.meta_raw is not None else []
        metrics: dict[str, Any] = {}
        commands: dict[str, Any] = {}
        for entity in device.entities.values():
            if entity.metric is not None:
                metrics[entity.metric] = entity.info()
            if entity.command is not None:
                commands[entity.command] = {"params": entity.params}
        raw = {"type": device.model, "name": device.name, "metrics": metrics, "commands": commands}
        found = changed_meta(device, device_id, raw, self._shapes)
        return [found] if found is not None else []

    # --- state and availability -----------------------------------------------------------

    def _message(
        self, topic: str, keys: set[str], payload: bytes, received_at: float
    ) -> list[DeviceEvent]:
        text = load_text(payload)
        parsed: list[Any] = []  # the payload as JSON, parsed once on first need
        samples: dict[str, list[Sample]] = {}
        events: list[DeviceEvent] = []
        statuses: set[str] = set()
        for key in sorted(keys):
            entity = self._entities[key]
            for avail_topic, online, offline, template in entity.availability:
                if avail_topic == topic:
                    state = _render(template, text, parsed, events)
                    if state is not None and str(state) in (online, offline):
                        entity.available[topic] = entity.latest = str(state) == online
                        statuses.add(entity.device)
                    elif state is not None:
                        events.append(Rejected("bad_status", f"{key[:80]}: {text[:40]!r}"))
            if entity.state_topic == topic and entity.metric is not None:
                value = self._state_value(entity, text, parsed, events)
                if value is not None:
                    samples.setdefault(entity.device, []).append(
                        (entity.metric, received_at, value)
                    )
                    result = {entity.metric: value}
                    events += self._echoes.answer(entity.device, entity.metric, value, result)
        found: list[DeviceEvent] = []
        for device_id in sorted(statuses):
            available = self._device_available(device_id)
            if available is not None:
                found.append(StatusChange(device_id, available))
        found += [Telemetry(device, rows) for device, rows in samples.items()]
        return found + events

    def _device_available(self, device_id: str) -> bool | None:
        """A device is online while any of its entities is available (by each entity's
        `availability_mode`), offline once every entity that can tell is not; None: none can."""
        device = self._devices.get(device_id)
        said = {e.is_available() for e in device.entities.values()} if device else set()
        if True in said:
            return True
        return False if False in said else None

    def _state_value(
        self, entity: Entity, text: str, parsed: list[Any], events: list[DeviceEvent]
    ) -> Value | None:
        value: object
        if entity.json_state:
            body = _json(text, parsed)
            value = body.get("state") if isinstance(body, dict) else None
        else:
            value = _render(entity.template, text, parsed, events)
        if value is None:
            return None
        if entity.states:
            # on/off components: their state payloads are a boolean, as Home Assistant shows it
            state = entity.states.get(str(value)) if not isinstance(value, bool) else value
            if state is None:
                events.append(Rejected("bad_value", f"{entity.metric}={sample(value)}"))
            return state
        if entity.numeric and not is_finite_number(value):
            number = parse_scalar(value) if isinstance(value, str) else value
            if not is_finite_number(number):
                # "unknown", "unavailable", "": no reading, never text in a numeric series
                events.append(Rejected("bad_value", f"{entity.metric}={sample(value)}"))
                return None
            value = number
        if not is_value(value):
            events.append(Rejected("bad_value", f"{entity.metric}={sample(value)}"))
            return None
        return value


def _unbind(index: dict[str, set[str]], topic: str, key: str) -> None:
    bound = index.get(topic)
    if bound is not None:
        bound.discard(key)
        if not bound:
            del index[topic]


def entity_topics(entity: Entity) -> set[str]:
    topics = {topic for topic, *_ in entity.availability}
    if entity.state_topic is not None:
        topics.add(entity.state_topic)
    return topics


def _expand(config: dict[str, Any]) -> dict[str, Any]:
    """Long key names, and `~` replaced by the base topic at either end of every topic."""
    expanded = {_long(k): v for k, v in config.items()}
    base = expanded.get("~")
    device = expanded.get("device")
    if isinstance(device, dict):
        expanded["device"] = {DEVICE_ABBREVIATIONS.get(k, k): v for k, v in device.items()}
    availability = expanded.get("availability")
    if isinstance(availability, list):
        expanded["availability"] = [
            _tilde({_long(k): v for k, v in entry.items()}, base)
            if isinstance(entry, dict)
            else entry
            for entry in availability
        ]
    components = expanded.get("components")
    if isinstance(components, dict):
        expanded["components"] = {
            cid: _expand(c) if isinstance(c, dict) else c for cid, c in components.items()
        }
    return _tilde(expanded, base)


def _long(key: str) -> str:
    return ABBREVIATIONS.get(key, key)


def _tilde(config: dict[str, Any], base: object) -> dict[str, Any]:
    if not isinstance(base, str):
        return config
    for key, value in config.items():
        if (key.endswith("_topic") or key == "topic") and isinstance(value, str):
            if value.startswith("~"):
                config[key] = base + value[1:]
            elif value.endswith("~"):
                config[key] = value[:-1] + base
    return config


def _device_components(
    config: dict[str, Any], topic: str, events: list[DeviceEvent]
) -> list[tuple[str, str, str, dict[str, Any]]]:
    """Device-based discovery: one config, many components sharing its device and options."""
    components = config.get("components")
    if not isinstance(components, dict):
        raise DecodeError("bad_config", "a device discovery config needs components")
    shared = {k: v for k, v in config.items() if k not in ("components", "origin")}
    entries = []
    for cid, component in components.items():
        platform = component.get("platform") if isinstance(component, dict) else None
        if not isinstance(platform, str) or not isinstance(cid, str):
            events.append(Rejected("bad_config", f"{topic[:80]}#{str(cid)[:40]}"))
            continue
        merged = {**shared, **component}
        entries.append((f"{topic}#{cid}", platform, cid, _tilde(merged, merged.get("~"))))
    return entries


def _device_of(config: dict[str, Any], node_id: str, object_id: str) -> tuple[str, str, str]:
    """Device id, name and model: from the device block, else the entity is a device alone."""
    device = config.get("device")
    device = device if isinstance(device, dict) else {}
    ids = device.get("identifiers")
    ids = [ids] if isinstance(ids, str) else ids if isinstance(ids, list) else []
    ident = next((i for i in ids if isinstance(i, str) and i), None)
    if ident is None:
        connections = device.get("connections")
        connections = connections if isinstance(connections, list) else []
        pairs = [c for c in connections if isinstance(c, list) and len(c) == 2]
        ident = next((f"{kind}:{value}" for kind, value in pairs if isinstance(value, str)), None)
    if ident is None:
        unique = config.get("unique_id")
        ident = unique if isinstance(unique, str) else f"{node_id}/{object_id}".lstrip("/")
    name = _text(device.get("name")) or _text(config.get("name")) or object_id
    return scoped_id(TAG, ident), name, _text(device.get("model")) or "homeassistant"


def _named_topics(config: dict[str, Any]) -> list[str]:
    """The state, command and availability topics a config names (after `~`)."""
    topics = [config.get(key) for key in ("state_topic", "command_topic", "availability_topic")]
    availability = config.get("availability")
    if isinstance(availability, list):
        topics += [entry.get("topic") for entry in availability if isinstance(entry, dict)]
    return [t for t in topics if is_publish_topic(t)]


def _usable(
    topic: object, namespace: Namespace, field: str, entity: Entity, events: list[DeviceEvent]
) -> TypeGuard[str]:
    """True when a topic the config names may be used; otherwise counted as bad_topic."""
    refusal = namespace.refusal(topic)
    if refusal is not None:
        events.append(Rejected("bad_topic", f"{entity.key[:80]}: {field} {refusal}"))
    return refusal is None


def _state_of(
    entity: Entity, config: dict[str, Any], namespace: Namespace, events: list[DeviceEvent]
) -> None:
    topic = config.get("state_topic")
    if topic is None or not _usable(topic, namespace, "state_topic", entity, events):
        return
    entity.state_topic = topic
    if entity.component in ON_OFF:
        on = _text(config.get("payload_on")) or "ON"
        off = _text(config.get("payload_off")) or "OFF"
        if entity.component != "binary_sensor":  # switches and lights report state_on/off
            on = _text(config.get("state_on")) or on
            off = _text(config.get("state_off")) or off
        entity.states = {on: True, off: False}
    elif entity.component == "sensor":
        numeric_class = entity.device_class not in (None, *TEXT_DEVICE_CLASSES)
        entity.numeric = bool(entity.unit) or numeric_class or "state_class" in config
    if entity.component == "light" and config.get("schema") == "json":
        entity.json_state = True
        entity.states = {"ON": True, "OFF": False}
        return
    key = "state_value_template" if entity.component == "light" else "value_template"
    entity.template = _template(config.get(key), entity.key, events)


def _availability_of(
    entity: Entity, config: dict[str, Any], namespace: Namespace, events: list[DeviceEvent]
) -> None:
    online = _text(config.get("payload_available")) or "online"
    offline = _text(config.get("payload_not_available")) or "offline"
    entries: list[dict[str, Any]] = []
    if "availability_topic" in config:
        template = config.get("availability_template")
        entries.append({"topic": config["availability_topic"], "value_template": template})
    if isinstance(config.get("availability"), list):
        entries += [e for e in config["availability"] if isinstance(e, dict)]
    mode = config.get("availability_mode", "latest")
    entity.availability_mode = mode if mode in AVAILABILITY_MODES else "latest"
    for entry in entries:
        topic = entry.get("topic")
        if not _usable(topic, namespace, "availability", entity, events):
            continue
        entity.availability.append(
            (
                topic,
                _text(entry.get("payload_available")) or online,
                _text(entry.get("payload_not_available")) or offline,
                _template(entry.get("value_template"), entity.key, events),
            )
        )


def _command_of(
    entity: Entity, config: dict[str, Any], namespace: Namespace, events: list[DeviceEvent]
) -> None:
    """The command a switch, light (on/off), number, select or button entity accepts."""
    topic = config.get("command_topic")
    component = entity.component
    if topic is None or component not in ("switch", "light", "number", "select", "button"):
        return
    if not _usable(topic, namespace, "command_topic", entity, events):
        return
    template = config.get("command_template")
    if template is not None and _template(template, entity.key, []).path != RAW:
        events.append(Rejected("unsupported_template", f"{entity.key[:80]}: command_template"))
        return
    if component == "light" and config.get("schema", "default") not in ("default", "json"):
        events.append(Rejected("unsupported_schema", entity.key[:120]))
        return
    name = f"{'press' if component == 'button' else 'set'}_{entity.object_id}"
    if not is_command_name(name):
        events.append(Rejected("bad_command_name", name[:80]))
        return
    if component in ("switch", "light"):
        on = _text(config.get("payload_on")) or "ON"
        off = _text(config.get("payload_off")) or "OFF"
        if config.get("schema") == "json":
            entity.payloads = {on: '{"state":"ON"}', off: '{"state":"OFF"}'}
        else:
            entity.payloads = {on: on, off: off}
        entity.echoes = {on: True, off: False}  # the state it shows, read as a boolean
        entity.params = {"state": {"type": "string", "enum": [on, off]}}
    elif component == "number":
        low, high = config.get("min", 1), config.get("max", 100)  # Home Assistant's defaults
        if not (is_finite_number(low) and is_finite_number(high)):
            events.append(Rejected("bad_config", f"{entity.key[:80]}: min/max"))
            return
        entity.params = {"value": {"type": "number", "min": low, "max": high}}
    elif component == "select":
        options = config.get("options")
        options = [o for o in options if isinstance(o, str)] if isinstance(options, list) else []
        if not options:
            events.append(Rejected("bad_config", f"{entity.key[:80]}: options"))
            return
        entity.params = {"option": {"type": "string", "enum": options}}
        entity.payloads = {o: o for o in options}
    else:
        entity.payloads = {"": _text(config.get("payload_press")) or "PRESS"}
    entity.command, entity.command_topic = name, topic


def _label(config: dict[str, Any], object_id: str) -> str:
    """What Home Assistant names the entity: its `name`; when that is null (or absent), its
    device class; the object id when it has neither."""
    name = config.get("name")
    if isinstance(name, str) and name.strip():
        return name[:128]
    return _text(config.get("device_class"))[:128] or object_id


def _metric(device: HaDevice, entity: Entity, events: list[DeviceEvent]) -> str | None:
    """The entity's label; only when another entity of the device already has it, the label
    with the object id (`Temperature (sensorBedroomT)`), then `<component>.<object id>`."""
    label, object_id = entity.label, entity.object_id
    for metric in (label, f"{label} ({object_id})", f"{entity.component}.{object_id}"):
        if metric not in device.metrics and is_metric_name(metric):
            return metric
    events.append(Rejected("duplicate_entity", entity.key[:120]))
    return None


def _template(source: object, where: str, events: list[DeviceEvent]) -> Template:
    if source is None:
        return Template(RAW)
    text = source.strip() if isinstance(source, str) else sample(source)
    match = _TEMPLATE.fullmatch(text)
    if match is None:
        events.append(Rejected("unsupported_template", f"{where[:60]}: {text[:60]}"))
        return Template(None, text[:80])
    if match.group(2) is None:
        return Template(RAW)
    path: list[str | int] = []
    for step in _STEP.finditer(match.group(2)):
        name, single, double, index = step.groups()
        path.append(int(index) if index is not None else name or single or double or "")
    return Template(tuple(path), text[:80])


def _render(
    template: Template, text: str, parsed: list[Any], events: list[DeviceEvent]
) -> Value | None:
    """The template's value for this payload; None (counted when it is the template's fault)."""
    if template.path is None:
        events.append(Rejected("unsupported_template", template.source))
        return None
    if template.path == RAW:
        return parse_scalar(text)
    node = _json(text, parsed)
    if node is NOT_JSON:
        events.append(Rejected("invalid_json", f"{template.source}: {text[:40]!r}"))
        return None
    for step in template.path:
        in_list = isinstance(step, int) and isinstance(node, list) and step < len(node)
        in_dict = isinstance(step, str) and isinstance(node, dict) and step in node
        if not (in_list or in_dict):
            # Devices share one state topic among entities and may send partial updates: a
            # missing key means "not in this message", not an error.
            return None
        node = node[step]
    if node is None:
        return None
    if not is_value(node):
        events.append(Rejected("bad_value", f"{template.source}: {sample(node)}"))
        return None
    return node


def _json(text: str, parsed: list[Any]) -> Any:
    if not parsed:
        try:
            parsed.append(orjson.loads(text))
        except orjson.JSONDecodeError:
            parsed.append(NOT_JSON)
    return parsed[0]


def _text(value: object) -> str:
    return value[:256] if isinstance(value, str) else ""

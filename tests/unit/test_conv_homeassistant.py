"""Home Assistant MQTT discovery, from the examples in Home Assistant's documentation.

Source: https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery (discovery examples,
abbreviations, device-based discovery) and https://www.home-assistant.io/docs/configuration/templating/
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.conventions.homeassistant import MAX_ENTITIES_PER_DEVICE, HomeAssistantConvention
from gateway.errors import CommandError, DecodeError
from gateway.models import (
    CommandResult,
    DeviceEvent,
    DeviceMeta,
    MetaChange,
    Rejected,
    Removed,
    StatusChange,
    Subscribe,
    Telemetry,
    Unsubscribe,
)
from tests.support.conventions import JSON, refusal

NOW = 1_764_090_000.0
BEDROOM_T = {
    "device_class": "temperature",
    "name": "Temperature",
    "state_topic": "homeassistant/sensor/sensorBedroom/state",
    "unit_of_measurement": "°C",
    "value_template": "{{ value_json.temperature}}",
    "unique_id": "temp01ae",
    "device": {"identifiers": ["bedroom01ae"], "name": "Bedroom"},
}
BEDROOM_H = {
    "device_class": "humidity",
    "name": "Humidity",
    "state_topic": "homeassistant/sensor/sensorBedroom/state",
    "unit_of_measurement": "%",
    "value_template": "{{ value_json.humidity}}",
    "unique_id": "hum01ae",
    "device": {"identifiers": ["bedroom01ae"], "name": "Bedroom"},
}
IRRIGATION_ABBREVIATED = {
    "~": "homeassistant/switch/irrigation",
    "name": "garden",
    "cmd_t": "~/set",
    "stat_t": "~/state",
}
KITCHEN_JSON_LIGHT = {
    "~": "homeassistant/light/kitchen",
    "name": "Kitchen",
    "unique_id": "kitchen_light",
    "cmd_t": "~/set",
    "stat_t": "~/state",
    "schema": "json",
    "brightness": True,
}
DEVICE_DISCOVERY = {
    "dev": {"ids": "ea334450945afc", "name": "Kitchen", "mf": "Bla electronics", "mdl": "xya"},
    "o": {"name": "bla2mqtt", "sw": "2.1", "url": "https://bla2mqtt.example.com/support"},
    "cmps": {
        "some_unique_component_id1": {
            "p": "sensor",
            "device_class": "temperature",
            "unit_of_measurement": "°C",
            "value_template": "{{ value_json.temperature}}",
            "unique_id": "temp01ae_t",
        },
        "some_unique_id2": {
            "p": "sensor",
            "device_class": "humidity",
            "unit_of_measurement": "%",
            "value_template": "{{ value_json.humidity}}",
            "unique_id": "temp01ae_h",
        },
    },
    "state_topic": "sensorBedroom/state",
    "qos": 2,
}


#: The examples' devices publish their state outside the discovery prefix (as ESPHome and
#: Tasmota do): topics an operator lists in conventions.homeassistant.allowed_topics.
EXAMPLE_TOPICS = ("sensorBedroom/#", "dev1/#", "meter/#", "amp/#", "dev/#", "plug/#", "t1/#")


@pytest.fixture
def ha() -> HomeAssistantConvention:
    return HomeAssistantConvention(allowed_topics=EXAMPLE_TOPICS)


def send(conv: HomeAssistantConvention, topic: str, payload: object) -> list[DeviceEvent]:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return conv.decode(topic, body, NOW)


def meta_of(events: list[DeviceEvent], device: str) -> DeviceMeta:
    metas = [e.meta for e in events if isinstance(e, MetaChange) and e.device == device]
    assert metas, events
    assert metas[-1] is not None
    return metas[-1]


def readings(events: list[DeviceEvent]) -> dict[tuple[str, str], Any]:
    return {(e.device, m): v for e in events if isinstance(e, Telemetry) for m, _, v in e.samples}


def test_motion_sensor_example_discovery_state_and_removal(ha: HomeAssistantConvention) -> None:
    """The binary sensor example: config subscribes its state topic, ON arrives, '' removes the
    entity and with its last entity the device, and unsubscribes the topic."""
    events = send(
        ha,
        "homeassistant/binary_sensor/garden/config",
        {
            "name": "garden",
            "device_class": "motion",
            "state_topic": "homeassistant/binary_sensor/garden/state",
        },
    )
    assert Subscribe(("homeassistant/binary_sensor/garden/state",)) in events
    meta = meta_of(events, "ha.garden")
    assert meta.name == "garden"
    assert list(meta.raw["metrics"]) == ["garden"]
    assert ha.owns("homeassistant/binary_sensor/garden/state")
    state = send(ha, "homeassistant/binary_sensor/garden/state", b"ON")
    assert state == [Telemetry("ha.garden", [("garden", NOW, True)])]
    assert send(ha, "homeassistant/binary_sensor/garden/config", b"") == [
        Unsubscribe(("homeassistant/binary_sensor/garden/state",)),
        Removed("ha.garden"),
    ]
    with pytest.raises(DecodeError):
        send(ha, "homeassistant/binary_sensor/garden/state", b"OFF")


def test_entities_with_one_device_block_form_one_device(ha: HomeAssistantConvention) -> None:
    """Two sensors sharing a device block and a state topic: one device, two metrics named
    as Home Assistant names the entities, the object and unique ids kept in the meta."""
    send(ha, "homeassistant/sensor/sensorBedroomT/config", BEDROOM_T)
    events = send(ha, "homeassistant/sensor/sensorBedroomH/config", BEDROOM_H)
    meta = meta_of(events, "ha.bedroom01ae")
    assert meta.name == "Bedroom"
    assert meta.units == {"Temperature": "°C", "Humidity": "%"}
    assert meta.raw["metrics"]["Temperature"] == {
        "unit": "°C",
        "component": "sensor",
        "object_id": "sensorBedroomT",
        "unique_id": "temp01ae",
        "device_class": "temperature",
    }
    state = send(
        ha, "homeassistant/sensor/sensorBedroom/state", {"temperature": 23.2, "humidity": 43.7}
    )
    assert readings(state) == {
        ("ha.bedroom01ae", "Temperature"): 23.2,
        ("ha.bedroom01ae", "Humidity"): 43.7,
    }


def test_device_based_discovery_example(ha: HomeAssistantConvention) -> None:
    """One device config with `cmps`: shared state topic, abbreviated device block, units."""
    events = send(ha, "homeassistant/device/0AFFD2/config", DEVICE_DISCOVERY)
    assert Subscribe(("sensorBedroom/state",)) in events
    meta = meta_of(events, "ha.ea334450945afc")
    assert (meta.name, meta.type) == ("Kitchen", "xya")
    assert meta.units == {"temperature": "°C", "humidity": "%"}  # no name: the device class
    state = send(ha, "sensorBedroom/state", {"temperature": 21.5, "humidity": 40})
    assert readings(state) == {
        ("ha.ea334450945afc", "temperature"): 21.5,
        ("ha.ea334450945afc", "humidity"): 40,
    }


@pytest.mark.parametrize(
    ("template", "payload", "value"),
    [
        ("{{ value_json.temperature }}", b'{"temperature": 23.2}', 23.2),
        ("{{value_json.temperature}}", b'{"temperature": 23.2}', 23.2),
        ("{{ value_json.sensor.temp }}", b'{"sensor": {"temp": 19}}', 19),
        ("{{ value_json['ENERGY']['Total'] }}", b'{"ENERGY": {"Total": 0.081}}', 0.081),
        ('{{ value_json["AM2301"].Humidity }}', b'{"AM2301": {"Humidity": 58.2}}', 58.2),
        ("{{ value_json.values[1] }}", b'{"values": [1, 2]}', 2),
        ("{{ value }}", b"21.5", 21.5),
        (None, b"heat", "heat"),
        ("{{ value_json.missing }}", b'{"temperature": 1}', None),
    ],
)
def test_simple_value_templates_are_evaluated(
    ha: HomeAssistantConvention, template: str | None, payload: bytes, value: object
) -> None:
    """value, value_json.a.b, value_json['a'] and indexes evaluate; a missing key is skipped."""
    config: dict[str, Any] = {"stat_t": "dev1/state"}
    if template is not None:
        config["val_tpl"] = template
    send(ha, "homeassistant/sensor/dev1/t/config", config)
    events = send(ha, "dev1/state", payload)
    expected = [] if value is None else [Telemetry("ha.dev1-t-0d99cebf", [("t", NOW, value)])]
    assert [e for e in events if isinstance(e, Telemetry)] == expected
    assert not [e for e in events if isinstance(e, Rejected)]


@pytest.mark.parametrize(
    "template",
    [
        "{{ float(value_json.watt) | round(0) }}",
        "{{ value_json.temperature | float }}",
        "{{ (value | int) * 2 }}",
        "{% if value == '1' %}ON{% else %}OFF{% endif %}",
        "{{ value_json.a }} {{ value_json.b }}",
    ],
)
def test_other_templates_are_counted_unsupported(
    ha: HomeAssistantConvention, template: str
) -> None:
    """Filters, expressions and statements are counted as unsupported_template, never guessed."""
    config = send(
        ha, "homeassistant/sensor/meter/config", {"stat_t": "meter/s", "val_tpl": template}
    )
    assert [e.reason for e in config if isinstance(e, Rejected)] == ["unsupported_template"]
    events = send(ha, "meter/s", b'{"watt": 12, "temperature": 3}')
    assert events == [Rejected("unsupported_template", template[:80])]


def test_switch_with_abbreviations_and_base_topic(ha: HomeAssistantConvention) -> None:
    """`~` expands in cmd_t/stat_t; the switch command publishes ON and the state echo answers."""
    events = send(ha, "homeassistant/switch/irrigation/config", IRRIGATION_ABBREVIATED)
    assert Subscribe(("homeassistant/switch/irrigation/state",)) in events
    meta = meta_of(events, "ha.irrigation")
    assert meta.raw["commands"] == {
        "set_irrigation": {"params": {"state": {"type": "string", "enum": ["ON", "OFF"]}}}
    }
    topic, payload = ha.encode_command(
        "ha.irrigation", meta, "set_irrigation", "c-1", {"state": "ON"}
    )
    assert (topic, payload) == ("homeassistant/switch/irrigation/set", b"ON")
    assert ha.arm("ha.irrigation", "c-1", {"garden": (NOW, False)})
    assert send(ha, "homeassistant/switch/irrigation/state", b"OFF")[1:] == []
    answered = send(ha, "homeassistant/switch/irrigation/state", b"ON")
    assert answered[0] == Telemetry("ha.irrigation", [("garden", NOW, True)])
    assert answered[1:] == [CommandResult("ha.irrigation", "c-1", "ok", {"garden": True})]


def test_json_schema_light_on_off(ha: HomeAssistantConvention) -> None:
    """A JSON-schema light: {"state": "ON"} goes out, and the state's `state` key is the value."""
    meta = meta_of(
        send(ha, "homeassistant/light/kitchen/config", KITCHEN_JSON_LIGHT), "ha.kitchen_light"
    )
    topic, payload = ha.encode_command(
        "ha.kitchen_light", meta, "set_kitchen", "c-2", {"state": "ON"}
    )
    assert topic == "homeassistant/light/kitchen/set"
    assert orjson.loads(payload) == {"state": "ON"}
    assert ha.arm("ha.kitchen_light", "c-2", {})
    events = send(ha, "homeassistant/light/kitchen/state", {"state": "ON", "brightness": 255})
    assert readings(events) == {("ha.kitchen_light", "Kitchen"): True}
    assert CommandResult("ha.kitchen_light", "c-2", "ok", {"Kitchen": True}) in events


@pytest.mark.parametrize(
    ("component", "config", "command", "params", "payload", "echo"),
    [
        ("number", {"min": 0, "max": 100, "step": 1}, "set_vol", {"value": 42.0}, b"42", b"42"),
        ("select", {"ops": ["eco", "comfort"]}, "set_vol", {"option": "eco"}, b"eco", b"eco"),
        (
            "switch",
            {"pl_on": "1", "pl_off": "0", "stat_on": "on", "stat_off": "off"},
            "set_vol",
            {"state": "1"},
            b"1",
            b"on",
        ),
    ],
)
def test_number_select_and_custom_payload_commands(
    ha: HomeAssistantConvention,
    component: str,
    config: dict[str, Any],
    command: str,
    params: dict[str, Any],
    payload: bytes,
    echo: bytes,
) -> None:
    """Numbers send their value, selects their option, switches their payload_on; echo answers."""
    full = {"cmd_t": "amp/vol/set", "stat_t": "amp/vol", **config}
    meta = meta_of(
        send(ha, f"homeassistant/{component}/amp/vol/config", full), "ha.amp-vol-83787870"
    )
    topic, body = ha.encode_command("ha.amp-vol-83787870", meta, command, "c-3", params)
    assert (topic, body) == ("amp/vol/set", payload)
    assert ha.arm("ha.amp-vol-83787870", "c-3", {})
    results = [e for e in send(ha, "amp/vol", echo) if isinstance(e, CommandResult)]
    assert [r.status for r in results] == ["ok"]


def test_button_press_has_no_echo(ha: HomeAssistantConvention) -> None:
    """A button publishes payload_press; nothing can confirm it (arm says so)."""
    meta = meta_of(
        send(ha, "homeassistant/button/reboot/config", {"cmd_t": "dev/reboot"}), "ha.reboot"
    )
    assert meta.raw["commands"] == {"press_reboot": {"params": {}}}
    assert ha.encode_command("ha.reboot", meta, "press_reboot", "c-4", {}) == (
        "dev/reboot",
        b"PRESS",
    )
    assert not ha.arm("ha.reboot", "c-4", {})


@pytest.mark.parametrize(
    ("config", "payload", "online"),
    [
        ({"avty_t": "plug/LWT", "pl_avail": "Online", "pl_not_avail": "Offline"}, b"Online", True),
        (
            {"avty_t": "plug/LWT", "pl_avail": "Online", "pl_not_avail": "Offline"},
            b"Offline",
            False,
        ),
        ({"avty_t": "plug/LWT"}, b"online", True),
        ({"avty": [{"t": "plug/LWT", "pl_avail": "up", "pl_not_avail": "down"}]}, b"down", False),
        (
            {"avty": [{"topic": "plug/LWT", "val_tpl": "{{ value_json.state }}"}]},
            b'{"state": "offline"}',
            False,
        ),
    ],
)
def test_availability_topics_set_the_device_status(
    ha: HomeAssistantConvention, config: dict[str, Any], payload: bytes, online: bool
) -> None:
    """avty_t with its payloads, and the avty list (with templates), give online/offline."""
    full = {"stat_t": "plug/state", "dev": {"ids": "plug1"}, **config}
    events = send(ha, "homeassistant/sensor/plug/power/config", full)
    assert Subscribe(("plug/LWT", "plug/state")) in events
    assert send(ha, "plug/LWT", payload) == [StatusChange("ha.plug1", online)]


def test_a_config_can_be_replaced(ha: HomeAssistantConvention) -> None:
    """A new config on the same topic replaces the entity (unit change reaches the meta)."""
    send(ha, "homeassistant/sensor/t1/config", {"stat_t": "t1/s", "unit_of_meas": "°C"})
    events = send(ha, "homeassistant/sensor/t1/config", {"stat_t": "t1/s", "unit_of_meas": "°F"})
    assert meta_of(events, "ha.t1").units == {"t1": "°F"}
    assert not [e for e in events if isinstance(e, Subscribe)]  # already subscribed


def test_unsafe_topics_are_refused(ha: HomeAssistantConvention) -> None:
    """Topics with wildcards are never subscribed to nor published on."""
    events = send(ha, "homeassistant/switch/x/config", {"stat_t": "a/+/b", "cmd_t": "a/#"})
    assert [e.reason for e in events if isinstance(e, Rejected)].count("bad_topic") == 2
    assert not [e for e in events if isinstance(e, Subscribe)]
    with pytest.raises(CommandError):
        ha.encode_command("ha.x", DeviceMeta(), "set_x", "c-1", {"state": "ON"})


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("homeassistant/sensor/x/config", b"{", "invalid_json"),
        ("homeassistant/sensor/x/config", b"[1]", "bad_config"),
        ("homeassistant/device/x/config", b'{"dev": {}}', "bad_config"),
        ("homeassistant/status", b"online", "unknown_topic"),
        ("homeassistant/sensor/x/y/z/config", b"{}", "unknown_topic"),
    ],
)
def test_malformed_configs_raise_decode_errors(
    ha: HomeAssistantConvention, topic: str, payload: bytes, reason: str
) -> None:
    """Configs that are no JSON objects, and unknown topics, are refused with a reason."""
    assert refusal(ha, topic, payload, NOW) == reason


KEYS = st.sampled_from(
    [
        "stat_t",
        "cmd_t",
        "avty_t",
        "avty",
        "val_tpl",
        "dev",
        "~",
        "ops",
        "min",
        "schema",
        "cmps",
        "pl_on",
        "unit_of_meas",
        "p",
        "uniq_id",
        "name",
    ]
)


@given(
    component=st.sampled_from(
        ["sensor", "switch", "light", "number", "select", "button", "device"]
    ),
    config=st.dictionaries(KEYS, JSON | st.just("s/t") | st.just("{{ value_json.a }}"), max_size=6),
    state=st.binary(max_size=32) | JSON.map(orjson.dumps),
)
def test_arbitrary_input_raises_nothing_but_decode_errors(
    component: str, config: dict[str, Any], state: bytes
) -> None:
    """Untrusted discovery configs and state payloads never raise anything but DecodeError."""
    ha = HomeAssistantConvention()
    with contextlib.suppress(DecodeError):
        events = send(ha, f"homeassistant/{component}/n/o/config", config)
        assert all(isinstance(e, DeviceEvent) for e in events)
    for topic in ("s/t", "homeassistant/x"):
        with contextlib.suppress(DecodeError):
            events = send(ha, topic, state)
            assert all(isinstance(e, DeviceEvent) for e in events)


def test_entities_per_device_are_bounded(ha: HomeAssistantConvention) -> None:
    """Past MAX_ENTITIES_PER_DEVICE entities of one device, more are refused and counted."""
    for i in range(MAX_ENTITIES_PER_DEVICE):
        send(ha, f"homeassistant/sensor/s{i}/config", {"stat_t": "t1/s", "dev": {"ids": "big"}})
    events = send(ha, "homeassistant/sensor/more/config", {"stat_t": "t1/s", "dev": {"ids": "big"}})
    assert events == [Rejected("too_many_entities", "homeassistant/sensor/more/config")]


@pytest.mark.parametrize(
    ("configs", "metrics"),
    [
        ([{"name": "Garden", "device_class": "motion"}], ["Garden"]),
        ([{"name": None, "device_class": "motion"}], ["motion"]),
        ([{"device_class": "temperature"}], ["temperature"]),
        ([{"name": None}], ["o0"]),
        ([{"name": ""}, {"name": "  "}], ["o0", "o1"]),
        (
            [{"device_class": "temperature"}, {"device_class": "temperature"}],
            ["temperature", "temperature (o1)"],
        ),
        ([{"name": "Power"}, {"name": "Energy"}], ["Power", "Energy"]),
    ],
)
def test_metrics_are_named_as_home_assistant_names_entities(
    ha: HomeAssistantConvention, configs: list[dict[str, Any]], metrics: list[str]
) -> None:
    """The entity's name; when null or absent its device class; the object id only when it has
    neither, and disambiguated within the device only when two entities would collide."""
    events: list[DeviceEvent] = []
    for i, config in enumerate(configs):
        full = {"stat_t": f"dev/s{i}", "dev": {"ids": "d1"}, **config}
        events = send(ha, f"homeassistant/sensor/o{i}/config", full)
    assert list(meta_of(events, "ha.d1").raw["metrics"]) == metrics


@pytest.mark.parametrize(
    ("component", "config", "payload", "value"),
    [
        ("binary_sensor", {}, b"ON", True),
        ("binary_sensor", {}, b"OFF", False),
        ("binary_sensor", {"pl_on": "open", "pl_off": "closed"}, b"open", True),
        ("binary_sensor", {"pl_on": "open", "pl_off": "closed"}, b"closed", False),
        ("binary_sensor", {"val_tpl": "{{ value_json.occupancy }}"}, b'{"occupancy":true}', True),
        ("switch", {}, b"ON", True),
        ("switch", {"stat_on": "on", "stat_off": "off"}, b"off", False),
        ("switch", {"pl_on": "1", "pl_off": "0"}, b"1", True),
        ("light", {}, b"OFF", False),
        ("light", {"schema": "json"}, b'{"state":"ON","brightness":3}', True),
        ("sensor", {"unit_of_meas": "W"}, b"12.5", 12.5),
        ("sensor", {"dev_cla": "temperature"}, b"21", 21),
        ("sensor", {"unit_of_meas": "°C", "val_tpl": "{{ value_json.t }}"}, b'{"t":"20.5"}', 20.5),
        ("sensor", {"state_class": "measurement"}, b"7", 7),
        ("sensor", {}, b"heat", "heat"),
        ("sensor", {"dev_cla": "enum"}, b"42", 42),
        ("sensor", {"dev_cla": "timestamp"}, b"2025-01-01T00:00:00Z", "2025-01-01T00:00:00Z"),
    ],
)
def test_state_payloads_become_what_home_assistant_shows(
    ha: HomeAssistantConvention,
    component: str,
    config: dict[str, Any],
    payload: bytes,
    value: object,
) -> None:
    """On/off components give booleans (their payloads or state words), sensors with a unit or a
    numeric device class give numbers, text sensors text."""
    send(ha, f"homeassistant/{component}/dev/e/config", {"stat_t": "dev/e", **config})
    events = send(ha, "dev/e", payload)
    assert list(readings(events).values()) == [value]
    assert type(next(iter(readings(events).values()))) is type(value)
    assert not [e for e in events if isinstance(e, Rejected)]


@pytest.mark.parametrize(
    ("component", "config", "payload"),
    [
        ("binary_sensor", {}, b"maybe"),
        ("switch", {"stat_on": "on", "stat_off": "off"}, b"ON"),
        ("sensor", {"unit_of_meas": "W"}, b"unavailable"),
        ("sensor", {"dev_cla": "humidity"}, b""),
        ("sensor", {"unit_of_meas": "W", "val_tpl": "{{ value_json.p }}"}, b'{"p":"n/a"}'),
    ],
)
def test_states_outside_the_entitys_vocabulary_are_counted_not_shown(
    ha: HomeAssistantConvention, component: str, config: dict[str, Any], payload: bytes
) -> None:
    """An on/off payload that is neither state, or text where a number belongs, is no reading
    (bad_value), never a string in a boolean or numeric series."""
    send(ha, f"homeassistant/{component}/dev/e/config", {"stat_t": "dev/e", **config})
    events = send(ha, "dev/e", payload)
    assert readings(events) == {}
    assert [e.reason for e in events if isinstance(e, Rejected)] == ["bad_value"]


AVAILABILITY = [{"t": "dev/a1"}, {"t": "dev/a2"}]


@pytest.mark.parametrize(
    ("mode", "messages", "statuses"),
    [
        ("latest", [("dev/a1", b"online"), ("dev/a2", b"offline")], [True, False]),
        ("all", [("dev/a1", b"online"), ("dev/a2", b"online")], [True]),
        ("all", [("dev/a1", b"online"), ("dev/a2", b"offline")], [False]),
        ("all", [("dev/a1", b"offline")], [False]),
        ("any", [("dev/a1", b"offline"), ("dev/a2", b"online")], [True]),
        ("any", [("dev/a1", b"offline"), ("dev/a2", b"offline")], [False]),
        ("any", [("dev/a1", b"online"), ("dev/a2", b"offline")], [True, True]),
    ],
)
def test_availability_mode_all_any_latest_drives_the_status(
    ha: HomeAssistantConvention,
    mode: str,
    messages: list[tuple[str, bytes]],
    statuses: list[bool],
) -> None:
    """`availability_mode` as Home Assistant reads it: all topics available, any, or the latest;
    nothing is said while the topics heard from cannot tell."""
    config = {"stat_t": "dev/s", "avty": AVAILABILITY, "avty_mode": mode, "dev": {"ids": "d2"}}
    send(ha, "homeassistant/sensor/d2/config", config)
    said = [
        e.online
        for topic, payload in messages
        for e in send(ha, topic, payload)
        if isinstance(e, StatusChange)
    ]
    assert said == statuses

"""The simulator's Home Assistant discovery, decoded by the gateway's homeassistant convention."""

from __future__ import annotations

import orjson

from tests.unit.test_sim_conv_common import Loop, results


def test_discovery_configs_use_both_long_and_abbreviated_keys() -> None:
    """Sensors use long keys; command entities abbreviations, `~` and a device block."""
    loop = Loop("homeassistant")
    configs = {m.topic: orjson.loads(m.payload) for m in loop.speakers["thermo-1"].announce()}
    sensor = configs["homeassistant/sensor/thermo-1/temperature/config"]
    assert sensor["value_template"] == "{{ value_json.temperature }}"
    assert sensor["device"]["identifiers"] == ["thermo-1"]
    number = configs["homeassistant/number/thermo-1/target/config"]
    assert (number["~"], number["cmd_t"]) == ("homeassistant/number/thermo-1/target", "~/set")
    assert (number["min"], number["max"]) == (5, 30)
    assert all(m.retain for m in loop.speakers["thermo-1"].announce())


def test_entities_group_into_one_device_with_commands() -> None:
    """All of a thermostat's entities form one device offering number and select commands."""
    loop = Loop("homeassistant")
    loop.boot()
    meta = loop.metas["ha.thermo-1"]
    assert meta is not None
    assert (meta.type, meta.name) == ("thermostat", "Living room thermostat")
    assert set(meta.commands) == {"set_target", "set_mode"}
    assert meta.commands["set_mode"].params["option"].enum == ("off", "heat", "cool", "auto")


def test_number_select_and_switch_commands_are_echoed_ok() -> None:
    """Each command entity's command changes the model and the state echo answers it ok."""
    loop = Loop("homeassistant")
    loop.boot()
    for device, command, params, metric, expected in (
        ("thermo-1", "set_target", {"value": 23.5}, "target", 23.5),
        ("thermo-1", "set_mode", {"option": "off"}, "mode", "off"),
        ("switch-1", "set_on", {"state": "ON"}, "on", True),
        ("switch-1", "set_on", {"state": "OFF"}, "on", False),
    ):
        events, values = loop.command(device, command, params)
        assert values[metric] == expected
        assert [r.status for r in results(events)] == ["ok"], (command, events)

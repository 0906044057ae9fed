"""The simulator's Zigbee2MQTT bridge, decoded by the gateway's zigbee2mqtt convention."""

from __future__ import annotations

import orjson

from gateway.models import CommandResult, StatusChange
from tests.unit.test_sim_conv_common import Loop, results


def test_bridge_devices_lists_the_fleet_with_settable_exposes() -> None:
    """bridge/devices is one retained message, bridge/state another (online); settable exposes
    carry access bit 2."""
    loop = Loop("zigbee2mqtt")
    bridge, state = loop.bridge
    assert bridge.topic == "zigbee2mqtt/bridge/devices"
    assert bridge.retain
    assert (state.topic, state.payload, state.retain) == (
        "zigbee2mqtt/bridge/state",
        b'{"state":"online"}',
        True,
    )
    entries = orjson.loads(bridge.payload)
    assert entries[0]["type"] == "Coordinator"
    names = {e["friendly_name"] for e in entries[1:]}
    assert "Living room/Thermostat" in names
    (thermostat,) = [e for e in entries if e["friendly_name"] == "Living room/Thermostat"]
    (climate,) = [x for x in thermostat["definition"]["exposes"] if x["type"] == "climate"]
    settable = {f["property"] for f in climate["features"] if f["access"] & 2}
    assert settable == {"occupied_heating_setpoint", "system_mode"}


def test_names_with_spaces_and_slashes_get_slugged_ids_and_keep_the_name() -> None:
    """`Living room/Thermostat` becomes a safe id; its meta keeps the friendly name."""
    loop = Loop("zigbee2mqtt")
    loop.boot()
    gateway_id = loop.ids["thermo-1"]
    assert gateway_id.startswith("z2m.Living-room-Thermostat-")
    meta = loop.metas[gateway_id]
    assert meta is not None
    assert meta.name == "Living room/Thermostat"
    assert meta.units["occupied_heating_setpoint"] == "°C"


def test_availability_is_json() -> None:
    """Availability is Zigbee2MQTT 2.x's JSON form, retained."""
    loop = Loop("zigbee2mqtt", devices=2)
    (online,) = loop.speakers["thermo-1"].online()
    assert online.topic == "zigbee2mqtt/Living room/Thermostat/availability"
    assert (online.payload, online.retain) == (b'{"state":"online"}', True)
    loop.boot()
    assert loop.deliver([online]) == [StatusChange(loop.ids["thermo-1"], True)]


def test_setpoint_command_is_echoed_by_the_next_state() -> None:
    """set_occupied_heating_setpoint 25 goes to `<name>/set` and the state echo answers it ok."""
    loop = Loop("zigbee2mqtt")
    loop.boot()
    events, values = loop.command(
        "thermo-1", "set_occupied_heating_setpoint", {"occupied_heating_setpoint": 25}
    )
    assert values["target"] == 25
    (result,) = results(events)
    assert result == CommandResult(
        loop.ids["thermo-1"], "c-1", "ok", {"occupied_heating_setpoint": 25.0}
    )


def test_system_mode_and_switch_state_commands() -> None:
    """system_mode and the plug's state (ON, OFF, TOGGLE) take effect and are answered ok."""
    loop = Loop("zigbee2mqtt")
    loop.boot()
    events, values = loop.command("thermo-1", "set_system_mode", {"system_mode": "cool"})
    assert values["mode"] == "cool"
    assert [r.status for r in results(events)] == ["ok"]
    for state, on in (("ON", True), ("OFF", False), ("TOGGLE", True)):
        events, values = loop.command("switch-1", "set_state", {"state": state})
        assert values["on"] is on
        assert [r.status for r in results(events)] == ["ok"]

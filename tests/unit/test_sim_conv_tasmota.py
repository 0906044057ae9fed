"""The simulator's Tasmota devices, decoded by the gateway's tasmota convention."""

from __future__ import annotations

import orjson

from simulators.encoders.base import apply
from tests.unit.test_sim_conv_common import Loop, results


def test_lwt_sensor_and_state_topics() -> None:
    """LWT Offline is the retained will; a plug sends STATE with POWER, then SENSOR nested per
    chip, as the firmware does every TelePeriod."""
    loop = Loop("tasmota")
    plug = loop.speakers["switch-1"]
    will = plug.will()
    assert will is not None
    assert (will.topic, will.payload, will.retain) == ("tele/switch-1/LWT", b"Offline", True)
    state, sensor = plug.reading(plug.model.step(0.0), 0.0)
    assert sensor.topic == "tele/switch-1/SENSOR"
    assert "Power" in orjson.loads(sensor.payload)["ENERGY"]
    assert state.topic == "tele/switch-1/STATE"
    assert orjson.loads(state.payload)["POWER"] in ("ON", "OFF")


def test_power_commands_are_answered_on_result_and_power() -> None:
    """POWER ON/OFF/TOGGLE takes effect; RESULT answers the gateway ok, stat/POWER follows."""
    loop = Loop("tasmota")
    loop.boot()
    loop.reading("switch-1")  # the gateway offers POWER once the device has shown it
    for state, on in (("ON", True), ("OFF", False), ("TOGGLE", True)):
        events, values = loop.command("switch-1", "POWER", {"state": state})
        assert values["on"] is on
        (result,) = results(events)
        assert (result.status, result.result) == ("ok", {"POWER": "ON" if on else "OFF"})


def test_unknown_command_and_bad_value_are_refused_the_tasmota_way() -> None:
    """An unknown command answers {"Command":"Unknown"}, a bad value {"Command":"Error"}."""
    loop = Loop("tasmota", devices=3)
    plug = loop.speakers["switch-1"]
    for leaf, payload, answer in (
        ("Dimmer", b"50", {"Command": "Unknown"}),
        ("Power", b"maybe", {"Command": "Error"}),
    ):
        request = plug.parse(f"cmnd/switch-1/{leaf}", payload)
        assert request is not None
        (message,) = plug.answer(request, [], plug.model.readings())
        assert (message.topic, orjson.loads(message.payload)) == ("stat/switch-1/RESULT", answer)


def test_empty_payload_asks_for_the_state() -> None:
    """`cmnd/<topic>/POWER` with no payload answers the current state and changes nothing."""
    loop = Loop("tasmota", devices=3)
    plug = loop.speakers["switch-1"]
    request = plug.parse("cmnd/switch-1/power", b"")
    assert request is not None
    assert request.actions == ()
    values = plug.model.readings()
    result, power = plug.answer(request, [], values)
    expected = "ON" if values["on"] else "OFF"
    assert orjson.loads(result.payload) == {"POWER": expected}
    assert (power.topic, power.payload) == ("stat/switch-1/POWER", expected.encode())


def test_thermostat_target_command_is_understood_by_the_device() -> None:
    """TempTargetSet 24 sets the target; the answer names the command and the new value."""
    loop = Loop("tasmota", devices=2)
    thermostat = loop.speakers["thermo-1"]
    request = thermostat.parse("cmnd/thermo-1/TempTargetSet", b"24")
    assert request is not None
    outcomes = [apply(thermostat.model, a) for a in request.actions]
    (message,) = thermostat.answer(request, outcomes, thermostat.model.readings())
    assert orjson.loads(message.payload) == {"TempTargetSet": 24.0}

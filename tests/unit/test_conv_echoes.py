"""An echo is not an answer unless it shows the requested change after the broker's PUBACK
(issue 12.10; docs/security.md, rule 5), for every convention that confirms by a state report.

`encode_command` registers the command unarmed; the router calls `arm` once the broker has
acknowledged the publish, with the device's values from before the command. Reports before that
prove nothing; a report confirms only when it shows the requested value (a toggle: any change
from the value before); a set to the value the device already shows cannot be confirmed by any
report (`arm` says False: the router answers `unconfirmed`). Tasmota's stat answers and native
results are the device's own answers and stay `ok`.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.conventions.homeassistant import HomeAssistantConvention
from gateway.conventions.homie import HomieConvention
from gateway.conventions.native import NativeConvention
from gateway.conventions.tasmota import TasmotaConvention
from gateway.conventions.zigbee2mqtt import Zigbee2MqttConvention
from gateway.models import CommandResult, DeviceEvent, MetaChange, Value

NOW = 1_764_090_000.0
LAMP = "z2m.lamp"
LAMP_EXPOSES = [
    {"type": "binary", "property": "state", "value_on": "ON", "value_off": "OFF",
     "value_toggle": "TOGGLE", "access": 7},
]  # fmt: skip


def answers(events: list[DeviceEvent]) -> list[tuple[str, str]]:
    return [(e.command_id, e.status) for e in events if isinstance(e, CommandResult)]


def values(**metrics: Value) -> dict[str, tuple[float, Value]]:
    """The device's latest values as the registry holds them."""
    return {metric: (NOW, value) for metric, value in metrics.items()}


def meta_of(events: list[DeviceEvent]) -> Any:
    return next(e.meta for e in reversed(events) if isinstance(e, MetaChange))


# --- Zigbee2MQTT --------------------------------------------------------------------------------


def lamp() -> tuple[Zigbee2MqttConvention, Any]:
    z2m = Zigbee2MqttConvention()
    devices = [{"friendly_name": "lamp", "definition": {"exposes": LAMP_EXPOSES}}]
    return z2m, meta_of(z2m.decode("zigbee2mqtt/bridge/devices", orjson.dumps(devices), NOW))


def report(z2m: Zigbee2MqttConvention, state: str) -> list[DeviceEvent]:
    return z2m.decode("zigbee2mqtt/lamp", orjson.dumps({"state": state}), NOW)


def test_zigbee2mqtt_a_report_before_the_puback_proves_nothing() -> None:
    """set_state ON on an OFF lamp: an ON report decoded before `arm` answers nothing; the
    first ON after it answers ok."""
    z2m, meta = lamp()
    z2m.encode_command(LAMP, meta, "set_state", "c-1", {"state": "ON"})
    assert answers(report(z2m, "ON")) == []
    assert z2m.arm(LAMP, "c-1", values(state="OFF"))
    assert answers(report(z2m, "OFF")) == []
    assert answers(report(z2m, "ON")) == [("c-1", "ok")]


def test_zigbee2mqtt_a_set_to_the_state_already_shown_cannot_be_confirmed() -> None:
    """The lamp reports ON every 200 ms: set_state ON cannot be confirmed by any report."""
    z2m, meta = lamp()
    z2m.encode_command(LAMP, meta, "set_state", "c-1", {"state": "ON"})
    assert not z2m.arm(LAMP, "c-1", values(state="ON"))
    assert answers(report(z2m, "ON")) == []


def test_zigbee2mqtt_a_toggle_needs_a_change_from_the_state_before() -> None:
    """TOGGLE on an ON lamp that keeps reporting ON stays unanswered; OFF answers it. A toggle of
    a state never seen cannot be confirmed."""
    z2m, meta = lamp()
    z2m.encode_command(LAMP, meta, "set_state", "c-1", {"state": "TOGGLE"})
    assert z2m.arm(LAMP, "c-1", values(state="ON"))
    assert answers(report(z2m, "ON") + report(z2m, "ON")) == []
    assert answers(report(z2m, "OFF")) == [("c-1", "ok")]
    z2m.encode_command(LAMP, meta, "set_state", "c-2", {"state": "TOGGLE"})
    assert not z2m.arm(LAMP, "c-2", values())


# --- Home Assistant -----------------------------------------------------------------------------


def ha_switch() -> tuple[HomeAssistantConvention, Any]:
    ha = HomeAssistantConvention()
    config = {"~": "homeassistant/switch/sw", "cmd_t": "~/set", "stat_t": "~/state"}
    events = ha.decode("homeassistant/switch/sw/config", orjson.dumps(config), NOW)
    return ha, meta_of(events)


def test_home_assistant_switch_confirms_only_a_change_after_the_puback() -> None:
    """An OFF switch set ON: ON before `arm` answers nothing, ON after it answers ok; the same
    set on a switch already ON cannot be confirmed."""
    ha, meta = ha_switch()
    ha.encode_command("ha.sw", meta, "set_sw", "c-1", {"state": "ON"})
    assert answers(ha.decode("homeassistant/switch/sw/state", b"ON", NOW)) == []
    assert ha.arm("ha.sw", "c-1", values(sw=False))
    assert answers(ha.decode("homeassistant/switch/sw/state", b"ON", NOW)) == [("c-1", "ok")]
    ha.encode_command("ha.sw", meta, "set_sw", "c-2", {"state": "ON"})
    assert not ha.arm("ha.sw", "c-2", values(sw=True))
    assert answers(ha.decode("homeassistant/switch/sw/state", b"ON", NOW)) == []


def test_home_assistant_entities_without_state_cannot_be_confirmed() -> None:
    """An optimistic switch (no state topic) and a button: `arm` says no report can confirm."""
    ha = HomeAssistantConvention()
    switch = ha.decode("homeassistant/switch/o/config", b'{"cmd_t": "homeassistant/o/set"}', NOW)
    ha.encode_command("ha.o", meta_of(switch), "set_o", "c-1", {"state": "ON"})
    assert not ha.arm("ha.o", "c-1", values())
    button = ha.decode("homeassistant/button/b/config", b'{"cmd_t": "homeassistant/b/p"}', NOW)
    ha.encode_command("ha.b", meta_of(button), "press_b", "c-2", {})
    assert not ha.arm("ha.b", "c-2", values())


# --- Homie --------------------------------------------------------------------------------------


def homie_light() -> tuple[HomieConvention, Any]:
    homie = HomieConvention()
    events: list[DeviceEvent] = []
    for leaf, payload in (("$nodes", b"light"), ("light/$properties", b"power"),
                          ("light/power/$datatype", b"boolean"), ("light/power/$settable", b"true"),
                          ("$state", b"ready")):  # fmt: skip
        events += homie.decode(f"homie/l/{leaf}", payload, NOW)
    return homie, meta_of(events)


def test_homie_confirms_the_requested_value_after_the_puback() -> None:
    """A light set on: `true` before `arm` proves nothing, `false` after it does not answer,
    `true` does; set on a light already on cannot be confirmed."""
    homie, meta = homie_light()
    homie.encode_command("homie.l", meta, "set_light_power", "c-1", {"value": True})
    assert answers(homie.decode("homie/l/light/power", b"true", NOW)) == []
    assert homie.arm("homie.l", "c-1", values(**{"light.power": False}))
    assert answers(homie.decode("homie/l/light/power", b"false", NOW)) == []
    assert answers(homie.decode("homie/l/light/power", b"true", NOW)) == [("c-1", "ok")]
    homie.encode_command("homie.l", meta, "set_light_power", "c-2", {"value": True})
    assert not homie.arm("homie.l", "c-2", values(**{"light.power": True}))


# --- Tasmota and native: answers, not echoes ----------------------------------------------------


def test_tasmota_answers_count_only_after_the_puback_and_need_no_change() -> None:
    """A stat/RESULT (or a refusal) decoded before `arm` answers nothing; after it, the device's
    answer is `ok` even when the relay was already ON (Tasmota answers every command)."""
    tasmota = TasmotaConvention()
    meta = meta_of(tasmota.decode("tele/plug/STATE", b'{"POWER": "ON"}', NOW))
    tasmota.encode_command("tasmota.plug", meta, "POWER", "c-1", {"state": "ON"})
    assert answers(tasmota.decode("stat/plug/RESULT", b'{"POWER": "ON"}', NOW)) == []
    assert answers(tasmota.decode("stat/plug/RESULT", b'{"Command": "Error"}', NOW)) == []
    assert tasmota.arm("tasmota.plug", "c-1", values(POWER="ON"))
    assert answers(tasmota.decode("stat/plug/POWER", b"ON", NOW)) == [("c-1", "ok")]


def test_native_results_are_answers() -> None:
    """A native device answers by command id on its result topic: always armed."""
    assert NativeConvention().arm("thermo-1", "c-1", values())

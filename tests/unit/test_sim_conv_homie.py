"""The simulator's Homie 4 devices, decoded by the gateway's homie convention."""

from __future__ import annotations

from gateway.models import MetaChange
from simulators.encoders.base import apply
from tests.unit.test_sim_conv_common import Loop, results


def test_attributes_are_retained_under_init_then_ready() -> None:
    """$state goes init (first) → ready; every attribute is retained; the will is `lost`."""
    loop = Loop("homie", devices=2)
    speaker = loop.speakers["thermo-1"]
    announce = speaker.announce()
    assert (announce[0].topic, announce[0].payload) == ("homie/thermo-1/$state", b"init")
    assert all(m.retain for m in announce)
    attributes = {m.topic: m.payload for m in announce}
    assert attributes["homie/thermo-1/thermostat/target/$settable"] == b"true"
    assert attributes["homie/thermo-1/thermostat/target/$format"] == b"5:30"
    assert attributes["homie/thermo-1/thermostat/mode/$datatype"] == b"enum"
    assert [m.payload for m in speaker.online()] == [b"ready"]
    will = speaker.will()
    assert will is not None
    assert will.payload == b"lost"


def test_meta_waits_for_ready() -> None:
    """No meta while the device says init; `ready` brings it, with typed settable commands."""
    loop = Loop("homie", devices=2)
    speaker = loop.speakers["thermo-1"]
    assert not [e for e in loop.deliver(speaker.announce()) if isinstance(e, MetaChange)]
    loop.boot()
    meta = loop.metas["homie.thermo-1"]
    assert meta is not None
    assert set(meta.commands) == {"set_thermostat_target", "set_thermostat_mode"}
    target = meta.commands["set_thermostat_target"].params["value"]
    assert (target.min, target.max) == (5, 30)


def test_set_is_answered_by_the_new_property_value() -> None:
    """A /set is applied and answered by publishing the property's new value (retained)."""
    loop = Loop("homie")
    loop.boot()
    events, values = loop.command("thermo-1", "set_thermostat_target", {"value": 26})
    assert values["target"] == 26
    (result,) = results(events)
    assert (result.status, result.result) == ("ok", {"thermostat.target": 26.0})
    events, values = loop.command("switch-1", "set_switch_on", {"value": True})
    assert values["on"] is True
    assert [r.status for r in results(events)] == ["ok"]


def test_invalid_set_changes_nothing_and_is_not_answered() -> None:
    """A value out of range is refused by the device: no new value, so no answer."""
    loop = Loop("homie", devices=2)
    speaker = loop.speakers["thermo-1"]
    before = speaker.model.readings()["target"]
    request = speaker.parse("homie/thermo-1/thermostat/target/set", b"99")
    assert request is not None
    (outcome,) = [apply(speaker.model, a) for a in request.actions]
    assert not outcome.ok
    assert speaker.answer(request, [outcome], speaker.model.readings()) == []
    assert speaker.model.readings()["target"] == before

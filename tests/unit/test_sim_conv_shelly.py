"""The simulator's Shelly Gen2+ devices, decoded by the gateway's shelly convention."""

from __future__ import annotations

import orjson

from tests.unit.test_sim_conv_common import Loop, results


def test_each_type_is_a_shelly_model_reporting_by_notify_status() -> None:
    """The plug is a Plus 1PM (`switch:0`), its id `<model>-<mac>`; a reading is one
    NotifyStatus on `<id>/events/rpc`; the will is `online` false, retained."""
    loop = Loop("shelly")
    plug = loop.speakers["switch-1"]
    will = plug.will()
    assert will is not None
    assert will.topic.startswith("shellyplus1pm-")
    assert will.topic.endswith("/online")
    assert (will.payload, will.retain) == (b"false", True)
    (status,) = plug.reading(plug.model.step(0.0), 0.0)
    frame = orjson.loads(status.payload)
    assert frame["method"] == "NotifyStatus"
    assert set(frame["params"]["switch:0"]) == {"id", "output", "apower"}


def test_the_meter_reports_energy_in_shellys_wh() -> None:
    """Energy is an EM1data total in Wh: the model's kWh times 1000."""
    loop = Loop("shelly")
    loop.boot()
    values = loop.reading("meter-1")
    model = loop.speakers["meter-1"].model.readings()
    assert abs(values["em1data:0.total_act_energy"] - model["energy"] * 1000) < 1e-3
    assert loop.metas[loop.ids["meter-1"]].units["em1data:0.total_act_energy"] == "Wh"  # type: ignore[union-attr]


def test_switch_set_is_answered_on_the_gateways_rpc_topic() -> None:
    """Switch.Set is applied and answered (result) on `<src>/rpc` with the request's id; the new
    state follows in a NotifyStatus."""
    loop = Loop("shelly")
    loop.boot()
    loop.reading("switch-1")
    before = loop.speakers["switch-1"].model.readings()["on"]
    events, values = loop.command("switch-1", "switch_0.set", {"on": not before})
    assert values["on"] is (not before)
    (result,) = results(events)
    assert result.status == "ok"


def test_virtual_number_and_enum_set_the_thermostat() -> None:
    """Number.Set on number:200 is the target, Enum.Set on enum:200 the mode; a refused value
    is answered with Shelly's error, and changes nothing."""
    loop = Loop("shelly")
    loop.boot()
    loop.reading("thermo-1")
    events, values = loop.command("thermo-1", "number_200.set", {"value": 26})
    assert values["target"] == 26
    assert [r.status for r in results(events)] == ["ok"]
    events, values = loop.command("thermo-1", "enum_200.set", {"value": "cool"})
    assert values["mode"] == "cool"
    events, values = loop.command("thermo-1", "number_200.set", {"value": 99})
    assert values["target"] == 26
    (refused,) = results(events)
    assert refused.status == "error"
    assert refused.error is not None
    assert refused.error.startswith("-103:")

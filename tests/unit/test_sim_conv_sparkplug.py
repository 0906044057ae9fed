"""The simulator's Sparkplug B edge nodes, decoded by the gateway's sparkplug convention."""

from __future__ import annotations

from gateway.conventions.tahu.sparkplug_b_pb2 import Payload
from gateway.models import Rejected, StatusChange
from tests.unit.test_sim_conv_common import Loop, results


def test_each_connection_is_a_session_with_the_next_bd_seq() -> None:
    """connecting() starts the next session: the will and the NBIRTH carry the same new bdSeq,
    the NBIRTH seq 0, and every later message the next seq."""
    loop = Loop("sparkplug", devices=1)
    (speaker,) = loop.speakers.values()
    speaker.connecting()
    death = Payload.FromString(speaker.will().payload)  # type: ignore[union-attr]
    (birth_message,) = speaker.online()
    birth = Payload.FromString(birth_message.payload)
    bd_seq = [m.long_value for m in birth.metrics if m.name == "bdSeq"]
    assert bd_seq == [m.long_value for m in death.metrics] == [1]
    assert birth.seq == 0
    (data,) = speaker.reading(speaker.model.step(0.0), 0.0)
    assert Payload.FromString(data.payload).seq == 1
    assert birth_message.topic == "spBv1.0/iotgw-sim/NBIRTH/env-1"


def test_a_write_takes_effect_and_the_next_ndata_confirms_it() -> None:
    """An NCMD write of the thermostat's target changes it; the NDATA after it answers ok."""
    loop = Loop("sparkplug")
    loop.boot()
    events, values = loop.command("thermo-1", "set_target", {"value": 26.5})
    assert values["target"] == 26.5
    assert [r.status for r in results(events)] == ["ok"]
    assert not [e for e in events if isinstance(e, Rejected)]


def test_a_rebirth_request_is_answered_with_a_new_birth() -> None:
    """`Node Control/Rebirth` = true makes the node publish its NBIRTH again (seq 0)."""
    loop = Loop("sparkplug", devices=1)
    loop.boot()
    (speaker,) = loop.speakers.values()
    request = Payload()
    request.metrics.add(name="Node Control/Rebirth", datatype=11, boolean_value=True)
    parsed = speaker.parse("spBv1.0/iotgw-sim/NCMD/env-1", request.SerializeToString())
    assert parsed is not None
    (birth,) = speaker.answer(parsed, [], speaker.model.readings())
    assert birth.topic.endswith("/NBIRTH/env-1")
    assert StatusChange(loop.ids["env-1"], True) in loop.deliver([birth])

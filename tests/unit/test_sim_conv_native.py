"""The native encoder is simulators.wire behind the Speaker interface, answered by id."""

from __future__ import annotations

from simulators.encoders.base import apply
from tests.unit.test_sim_conv_common import Loop, results


def test_command_answered_by_id_with_ok_and_error() -> None:
    """set_target is answered ok with the new target; a command a model refuses, error."""
    loop = Loop("native")
    loop.boot()
    events, values = loop.command("thermo-1", "set_target", {"target": 24})
    assert values["target"] == 24
    (result,) = results(events)
    assert (result.command_id, result.status, result.result) == ("c-1", "ok", {"target": 24.0})
    speaker = loop.speakers["switch-1"]
    request = speaker.parse("iotgw/switch-1/cmd/explode", b'{"id": "c-2", "params": {}}')
    assert request is not None
    outcomes = [apply(speaker.model, a) for a in request.actions]
    (answer,) = results(loop.deliver(speaker.answer(request, outcomes, {})))
    assert (answer.status, answer.error) == ("error", "unknown command 'explode'")

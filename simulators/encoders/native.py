"""The gateway's own convention (docs/conventions.md, "native"), built from simulators.wire.

iotgw/thermo-1/meta         {"type": "thermostat", "name": "…", "metrics": {…}}   (retained)
iotgw/thermo-1/status       online | offline                                  (retained; the will)
iotgw/thermo-1/telemetry    {"temperature": 21.4, "target": 21.0, "ts": 1764090000.5}
iotgw/thermo-1/cmd/<name>   {"id": "c-…", "params": {…}}                      (from the gateway)
iotgw/thermo-1/result       {"id": "c-…", "status": "ok", "result": {…}}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.models import Value
from simulators.encoders.base import Action, Encoder, Message, Outcome, Request, Speaker
from simulators.wire import (
    OFFLINE,
    ONLINE,
    Topics,
    meta_payload,
    parse_command_payload,
    result_payload,
    telemetry_payload,
)

if TYPE_CHECKING:
    from simulators.roster import Member


class NativeSpeaker(Speaker):
    def __init__(self, member: Member, base: str) -> None:
        super().__init__(member, base)
        self.topics = Topics(base)
        self.device = member.device_id

    def will(self) -> Message:
        return Message(self.topics.status(self.device), OFFLINE, retain=True)

    def announce(self) -> list[Message]:
        return [Message(self.topics.meta(self.device), meta_payload(self.model.meta()), True)]

    def online(self) -> list[Message]:
        return [Message(self.topics.status(self.device), ONLINE, retain=True)]

    def offline(self) -> list[Message]:
        return [self.will()]

    def command_filters(self) -> list[str]:
        return [self.topics.commands(self.device)]

    def parse(self, topic: str, payload: bytes) -> Request | None:
        parsed = self.topics.parse_command(topic)
        if parsed is None or parsed[0] != self.device:
            return None
        command_id, params = parse_command_payload(payload)
        return Request((Action(parsed[1], params),), id=command_id)

    def reading(self, values: dict[str, Value], ts: float) -> list[Message]:
        return [Message(self.topics.telemetry(self.device), telemetry_payload(values, ts))]

    def answer(
        self, request: Request, outcomes: list[Outcome], values: dict[str, Value]
    ) -> list[Message]:
        (outcome,) = outcomes
        if outcome.ok:
            body = result_payload(request.id, "ok", outcome.result)
        else:
            body = result_payload(request.id, "error", error=outcome.error)
        return [Message(self.topics.result(self.device), body)]


def gateway_settings(base: str) -> dict[str, Any]:
    return {"conventions.native.enabled": True, "conventions.native.prefix": base}


ENCODER = Encoder("native", "iotgw", NativeSpeaker, gateway_settings)

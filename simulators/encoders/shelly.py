"""Shelly Gen2+, RPC over MQTT (https://shelly-api-docs.shelly.cloud/gen2/).

shellyplus1pm-5f2c1a0e9b3d/online         true | false                   (retained; the last will)
shellyplus1pm-5f2c1a0e9b3d/events/rpc     {"src": "shellyplus1pm-5f2c1a0e9b3d", "dst": "…/events",
                                           "method": "NotifyStatus",
                                           "params": {"ts": 1764090000.5,
                                                      "switch:0": {"output": true, "apower": 41.2}}}
shellyplus1pm-5f2c1a0e9b3d/rpc            {"id": 7, "src": "iotgw-shelly", "method": "Switch.Set",
                                           "params": {"id": 0, "on": false}}     (from the gateway)
iotgw-shelly/rpc                          {"id": 7, "src": "shellyplus1pm-5f2c1a0e9b3d",
                                           "dst": "iotgw-shelly", "result": {"was_on": true}}

Each device type is a Shelly model whose components carry its metrics: the plug a Plus 1PM's
`switch:0`, the meter an EM1's `em1:0`/`em1data:0`, the sensor an H&T's `temperature:0`,
`humidity:0` and `devicepower:0`; what no real component measures (a thermostat's target and
mode, a tracker's position) lives in virtual components (`number:200`, `enum:200`, `text:200`),
set with `Number.Set` / `Enum.Set` as on real firmware. A request is answered on `<src>/rpc` with
its id, then the new state follows as a NotifyStatus.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from gateway.models import Value
from simulators.encoders.base import (
    Action,
    BadCommand,
    Encoder,
    Message,
    Outcome,
    Request,
    Speaker,
    join,
)

if TYPE_CHECKING:
    from simulators.roster import Member


@dataclass(frozen=True, slots=True)
class Slot:
    """Where a model metric lives in a Shelly status: component, key path, and its scale."""

    metric: str
    component: str
    path: tuple[str, ...]
    scale: float = 1.0  # model unit -> Shelly's (kWh -> Wh)


MODELS: dict[str, tuple[str, tuple[Slot, ...]]] = {
    "switch": (
        "shellyplus1pm",
        (Slot("on", "switch:0", ("output",)), Slot("power", "switch:0", ("apower",))),
    ),
    "meter": (
        "shellypmminig3",
        (
            Slot("voltage", "em1:0", ("voltage",)),
            Slot("current", "em1:0", ("current",)),
            Slot("power", "em1:0", ("act_power",)),
            Slot("energy", "em1data:0", ("total_act_energy",), 1000.0),
        ),
    ),
    "environment": (
        "shellyplusht",
        (
            Slot("temperature", "temperature:0", ("tC",)),
            Slot("humidity", "humidity:0", ("rh",)),
            Slot("pressure", "number:200", ("value",)),
            Slot("battery", "devicepower:0", ("battery", "percent")),
        ),
    ),
    "thermostat": (
        "shellywalldisplay",
        (
            Slot("temperature", "temperature:0", ("tC",)),
            Slot("target", "number:200", ("value",)),
            Slot("mode", "enum:200", ("value",)),
            Slot("action", "text:200", ("value",)),
        ),
    ),
    "tracker": (
        "shellyplusuni",
        tuple(
            Slot(metric, f"number:{200 + i}", ("value",))
            for i, metric in enumerate(("lat", "lon", "speed", "heading"))
        ),
    ),
}
#: RPC method -> the component type it sets (Switch.Toggle has no value).
SETTERS = {"Switch.Set": "switch", "Number.Set": "number", "Enum.Set": "enum"}


class ShellySpeaker(Speaker):
    def __init__(self, member: Member, base: str) -> None:
        super().__init__(member, base)
        model, self.slots = MODELS[self.model.kind]
        mac = hashlib.sha1(member.device_id.encode()).hexdigest()[:12]
        self.id = f"{model}-{mac}"  # what its frames carry as src
        self.prefix = join(base, self.id)  # its MQTT topic prefix (the id, under the base)
        # A component's first slot is its settable value (a switch's output, a number's value).
        self.by_component: dict[str, Slot] = {}
        for slot in self.slots:
            self.by_component.setdefault(slot.component, slot)

    def will(self) -> Message:
        return Message(f"{self.prefix}/online", b"false", retain=True)

    def announce(self) -> list[Message]:
        return []  # a Shelly announces nothing but `online`; its status says what it has

    def online(self) -> list[Message]:
        return [Message(f"{self.prefix}/online", b"true", retain=True)]

    def offline(self) -> list[Message]:
        return [self.will()]

    def command_filters(self) -> list[str]:
        return [f"{self.prefix}/rpc"]

    def status(self, values: dict[str, Value], ts: float) -> Message:
        """A NotifyStatus carrying every component, as the device sends on a change."""
        params: dict[str, Any] = {"ts": round(ts, 2)}
        for slot in self.slots:
            value = values[slot.metric]
            if slot.scale != 1.0 and isinstance(value, float | int):
                value = round(value * slot.scale, 3)
            node = params.setdefault(slot.component, {"id": int(slot.component.split(":")[1])})
            for key in slot.path[:-1]:
                node = node.setdefault(key, {})
            node[slot.path[-1]] = value
        frame = {"src": self.id, "dst": f"{self.id}/events", "method": "NotifyStatus",
                 "params": params}  # fmt: skip
        return Message(f"{self.prefix}/events/rpc", orjson.dumps(frame))

    def parse(self, topic: str, payload: bytes) -> Request | None:
        if topic != f"{self.prefix}/rpc":
            return None
        try:
            frame = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise BadCommand("not JSON") from None
        if not isinstance(frame, dict) or not isinstance(frame.get("src"), str):
            raise BadCommand("a request needs a src to answer to")
        request_id = orjson.dumps(frame.get("id")).decode()
        method, params = frame.get("method"), frame.get("params")
        params = params if isinstance(params, dict) else {}
        reply = {"id": request_id, "reply_to": frame["src"]}
        component = f"{SETTERS.get(str(method), 'switch')}:{params.get('id')}"
        slot = self.by_component.get(component)
        if method == "Switch.Toggle" and slot is not None:
            return Request((Action("toggle", key=component),), **reply)
        if method not in SETTERS or slot is None:
            return Request(refused=f"No handler for {method!s:.40}", **reply)
        value = params.get("on" if method == "Switch.Set" else "value")
        if not isinstance(value, bool | int | float | str):
            return Request(refused=f"Invalid argument: {value!r:.40}", **reply)
        return Request((Action(f"set_{slot.metric}", key=component, write=(slot.metric, value)),),
                       **reply)  # fmt: skip

    def reading(self, values: dict[str, Value], ts: float) -> list[Message]:
        return [self.status(values, ts)]

    def answer(
        self, request: Request, outcomes: list[Outcome], values: dict[str, Value]
    ) -> list[Message]:
        frame: dict[str, Any] = {"id": orjson.loads(request.id), "src": self.id,
                                 "dst": request.reply_to}  # fmt: skip
        failed = request.refused or next((o.error for o in outcomes if not o.ok), None)
        if failed:
            code = 404 if request.refused else -103  # Shelly's "no handler" and "invalid argument"
            frame["error"] = {"code": code, "message": failed}
        else:
            frame["result"] = None  # Number.Set and Enum.Set answer null; enough for all here
        answer = Message(f"{request.reply_to}/rpc", orjson.dumps(frame))
        return [answer] if failed else [answer, self.status(values, time.time())]


def rpc_src(base: str) -> str:
    """The gateway's `src` for a fleet under `base` (apart from other gateways' in tests)."""
    return f"iotgw-{base.replace('/', '-')}" if base else "iotgw-shelly"


def gateway_settings(base: str) -> dict[str, Any]:
    return {
        "conventions.shelly.enabled": True,
        "conventions.shelly.base_topic": base,
        "conventions.shelly.rpc_src": rpc_src(base),
    }


ENCODER = Encoder("shelly", "", ShellySpeaker, gateway_settings)

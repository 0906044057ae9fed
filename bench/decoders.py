"""What one message costs each convention's decoder, and what enabled but idle conventions cost
native traffic (issue 17):

    python -m bench.decoders [--rounds 9 --messages 20000]

Every case is a typical message of one convention (a Shelly NotifyStatus, a Sparkplug NDATA by
alias, …), routed (`Routes.owner`) and decoded by conventions built from the real config, in
steady state (births and discovery already seen). The cases run interleaved, in a new random
order every round, so a busy neighbour on the shared machine slows all of them alike; each
reports the median over rounds of the mean µs per message, and the spread (min to max). Two native
cases are paired to answer the second question: the same telemetry with only native enabled,
and with all seven conventions enabled and idle. The load average before and after is printed:
the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from gateway.config import load_config
from gateway.conventions import Routes, build_conventions
from gateway.conventions.tahu.sparkplug_b_pb2 import Payload

ALL = ("zigbee2mqtt", "tasmota", "homie", "shelly", "sparkplug", "homeassistant")
NOW = 1_764_090_000.0


@dataclass
class Case:
    name: str
    routes: Routes
    messages: list[tuple[str, bytes]]  # decoded in turn (Sparkplug needs seq to advance)

    def run(self, count: int) -> float:
        """Mean seconds per message over `count` messages: route, then decode."""
        messages, owner = self.messages, self.routes.owner
        n = len(messages)
        started = time.perf_counter()
        for i in range(count):
            topic, payload = messages[i % n]
            convention = owner(topic)
            assert convention is not None
            convention.decode(topic, payload, NOW)
        return (time.perf_counter() - started) / count


def routes(*enabled: str) -> Routes:
    overrides: dict[str, object] = {f"conventions.{name}.enabled": True for name in enabled}
    overrides["conventions.homeassistant.allowed_topics"] = ["dev/#"]
    return Routes(build_conventions(load_config(env={}, overrides=overrides).conventions))


def prepared(r: Routes, setup: list[tuple[str, bytes]]) -> Routes:
    for topic, payload in setup:
        convention = r.owner(topic)
        assert convention is not None, topic
        convention.decode(topic, payload, NOW)
    return r


def sparkplug_data(device: str = "") -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    """An NBIRTH (and a DBIRTH) of 4 metrics, then 256 DATA messages by alias, seq in turn."""
    birth = Payload(timestamp=1, seq=0)
    birth.metrics.add(name="bdSeq", datatype=4, long_value=0)
    for alias, name in enumerate(("temperature", "target", "power", "energy"), 1):
        birth.metrics.add(name=name, alias=alias, datatype=10, double_value=1.0)
    setup = [("spBv1.0/G/NBIRTH/E", birth.SerializeToString())]
    kind, tail = ("DDATA", f"/{device}") if device else ("NDATA", "")
    if device:
        setup.append((f"spBv1.0/G/DBIRTH/E/{device}", _device_birth()))
    data = []
    for i in range(256):
        message = Payload(timestamp=1_764_090_000_000, seq=(i + (2 if device else 1)) % 256)
        for alias in range(1, 5):
            message.metrics.add(alias=alias, double_value=20.0 + i / 10)
        data.append((f"spBv1.0/G/{kind}/E{tail}", message.SerializeToString()))
    return setup, data


def _device_birth() -> bytes:
    birth = Payload(timestamp=1, seq=1)
    for alias, name in enumerate(("temperature", "target", "power", "energy"), 1):
        birth.metrics.add(name=name, alias=alias, datatype=10, double_value=1.0)
    return birth.SerializeToString()


def cases() -> list[Case]:
    telemetry = orjson.dumps(
        {"temperature": 21.4, "target": 21.0, "mode": "heat", "action": "idle"}
    )
    native = [("iotgw/thermo-1/telemetry", telemetry)]
    shelly_notify = orjson.dumps(
        {
            "src": "shellyplus1pm-a8032ab636ec",
            "method": "NotifyStatus",
            "params": {
                "ts": NOW,
                "switch:0": {"output": True, "apower": 8.9, "voltage": 237.5, "current": 0.068},
            },
        }
    )
    shelly_status = orjson.dumps(
        {
            "id": 0,
            "source": "timer",
            "output": True,
            "apower": 8.9,
            "voltage": 237.5,
            "current": 0.068,
            "aenergy": {"total": 6.532, "by_minute": [45.2, 47.1, 88.4], "minute_ts": 1654511760},
            "temperature": {"tC": 23.5, "tF": 74.4},
        }
    )
    ha_configs = [
        (
            f"homeassistant/sensor/d1/{m}/config",
            orjson.dumps(
                {
                    "name": m.capitalize(),
                    "stat_t": "dev/d1/state",
                    "unit_of_meas": "°C",
                    "val_tpl": f"{{{{ value_json.{m} }}}}",
                    "dev": {"ids": ["d1"]},
                }
            ),
        )
        for m in ("temperature", "target", "power", "energy")
    ]
    ha_state = orjson.dumps({"temperature": 21.4, "target": 21.0, "power": 12.0, "energy": 3.5})
    z2m_state = orjson.dumps({"local_temperature": 21.4, "occupied_heating_setpoint": 21,
                              "system_mode": "heat", "running_state": "idle"})  # fmt: skip
    tasmota_sensor = orjson.dumps({"Time": "2025-11-25T17:40:00", "ENERGY": {"Total": 0.081,
                                   "Power": 12, "Voltage": 231, "Current": 0.065}})  # fmt: skip
    homie_setup = [
        ("homie/d1/$nodes", b"n"),
        ("homie/d1/n/$properties", b"t"),
        ("homie/d1/n/t/$datatype", b"float"),
        ("homie/d1/$state", b"ready"),
    ]
    spb_setup, spb_data = sparkplug_data()
    spbd_setup, spbd_data = sparkplug_data("PLC1")
    every = routes(*ALL)
    return [
        Case("native, only native enabled", routes(), native),
        Case("native, all seven enabled (idle)", every, native),
        Case("zigbee2mqtt state (4 keys)", routes("zigbee2mqtt"),
             [("zigbee2mqtt/Living room/Thermostat", z2m_state)]),
        Case("tasmota tele/SENSOR (ENERGY, 4)", routes("tasmota"),
             [("tele/plug/SENSOR", tasmota_sensor)]),
        Case("homie property value", prepared(routes("homie"), homie_setup),
             [("homie/d1/n/t", b"21.5")]),
        Case("homeassistant shared state (4 entities)", prepared(routes("homeassistant"),
             ha_configs), [("dev/d1/state", ha_state)]),
        Case("shelly NotifyStatus (switch:0, 4)", routes("shelly"),
             [("shellyplus1pm-a8032ab636ec/events/rpc", shelly_notify)]),
        Case("shelly status/switch:0 (full)", routes("shelly"),
             [("shellyplus1pm-a8032ab636ec/status/switch:0", shelly_status)]),
        Case("sparkplug NDATA (4 by alias)", prepared(routes("sparkplug"), spb_setup), spb_data),
        Case("sparkplug DDATA (4 by alias)", prepared(routes("sparkplug"), spbd_setup),
             spbd_data),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.decoders", description=__doc__)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--messages", type=int, default=20000, help="per case and round")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    all_cases = cases()
    for case in all_cases:
        case.run(1000)  # warm up: first-message meta, caches
    timings: dict[str, list[float]] = {c.name: [] for c in all_cases}
    rng = random.Random(args.seed)
    for _ in range(args.rounds):
        order = list(all_cases)
        rng.shuffle(order)
        for case in order:
            timings[case.name].append(case.run(args.messages))
    load_after = os.getloadavg()
    print(f"{args.rounds} rounds × {args.messages} messages per case, {os.cpu_count()} cores; "
          f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")  # fmt: skip
    print(f"{'case':44} {'µs/msg (median)':>16} {'min–max':>14}")
    show: Callable[[float], str] = lambda s: f"{s * 1e6:.2f}"  # noqa: E731 - a formatter
    for case in all_cases:
        values = timings[case.name]
        print(f"{case.name:44} {show(statistics.median(values)):>16} "
              f"{show(min(values)) + '–' + show(max(values)):>14}")  # fmt: skip
    alone = timings["native, only native enabled"]
    idle = timings["native, all seven enabled (idle)"]
    ratios = [b / a for a, b in zip(alone, idle, strict=True)]
    spread = f"min {min(ratios):.3f}, max {max(ratios):.3f}"
    print(f"native with six idle conventions / native alone, paired per round: median "
          f"{statistics.median(ratios):.3f} ({spread})")  # fmt: skip


if __name__ == "__main__":
    main()

"""The scenarios of issue 5, with their default load (every one can be scaled from the CLI)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    devices: int = 100
    rates: tuple[float, ...] = (1000.0,)  # msg/s; several = stepwise (S3)
    duration: float = 20.0  # seconds per step
    clients: int = 10
    slow_clients: int = 0  # extra clients reading at `slow_fraction` of the message rate (S7)
    slow_fraction: float = 0.1
    full_every: int = 1  # every n-th client decodes every row (gaps, latency); others count
    narrow: int = 0  # > 0: each client subscribes to this many devices instead of "*" (S4)
    compress: int = 0  # > 0: clients offer permessage-deflate with this server window (bits)
    commands_per_s: float = 0.0  # S5
    command_clients: int = 0
    publishers: int = 1  # processes
    subscriber_procs: int = 1
    stop_p99_ms: float | None = None  # stepwise: stop after a step with a higher p99...
    stop_delivery: float | None = None  # ...or a lower delivery ratio
    settings: dict[str, str] = field(default_factory=dict)  # gateway config overrides
    cold_start: bool = False  # S6: retained meta and status first, then the target starts
    # False: no warm-up message, so every device is new to the gateway inside the measured window.
    warmup: bool = True
    # S8: a fleet of this many devices (own MQTT connections, last wills) that appears in the
    # first step, within `appear_s`, and goes offline at once (wills) in the second, within
    # `wills_s`, while the publishers' devices carry on (their readings' latency is measured).
    storm_devices: int = 0
    storm_procs: int = 4
    appear_s: float = 2.0
    wills_s: float = 1.0

    def with_overrides(self, **changes: Any) -> Scenario:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario("smoke", "CI smoke: 10 devices, 200 msg/s, 2 clients", 10, (200.0,), 2.0, 2),
        Scenario("S1", "steady: 100 devices, 1,000 msg/s, 10 clients", 100, (1000.0,), 20.0, 10),
        Scenario(
            "S2",
            "fan-out: 100 devices, 1,000 msg/s, 100 clients",
            100,
            (1000.0,),
            20.0,
            100,
            full_every=10,
            subscriber_procs=2,
        ),
        Scenario(
            "S3",
            "saturation: 1,000 devices, 100 clients, rate raised stepwise",
            1000,
            (250.0, 500.0, 1000.0, 2000.0, 4000.0, 6000.0, 8000.0, 12000.0, 16000.0, 20000.0),
            8.0,
            100,
            full_every=10,
            subscriber_procs=2,
            publishers=1,
            stop_p99_ms=250.0,
            stop_delivery=0.99,
        ),
        Scenario(
            "S3i",
            "ingest ceiling: 1,000 devices, 1 client, rate raised stepwise",
            1000,
            (5000.0, 10000.0, 15000.0, 20000.0, 25000.0, 30000.0, 40000.0),
            8.0,
            1,
            publishers=2,
            stop_p99_ms=250.0,
            stop_delivery=0.99,
        ),
        Scenario(
            "S4",
            "connections: 2,000 clients, 3 devices each, 10 msg/s, 5 s heartbeats",
            1000,
            (10.0,),
            30.0,
            2000,
            narrow=3,
            subscriber_procs=4,
            settings={
                "ws.heartbeat_s": "5",
                # The admission limits (docs/operations.md) are not what S4 measures.
                "ws.max_connections": "100000",
                "ws.max_connections_per_token": "100000",
                "ws.connect_rate": "100000",
                "ws.connect_burst": "100000",
            },
        ),
        Scenario(
            "S5",
            "commands: 100 commands/s from 20 clients to 20 device stand-ins",
            20,
            (0.0,),
            20.0,
            0,
            commands_per_s=100.0,
            command_clients=20,
            settings={
                # All 20 clients are one principal on one address: the command limits per
                # principal and address (docs/operations.md) are not what S5 measures.
                "commands.rate_per_principal": "100000",
                "commands.burst_per_principal": "100000",
                "commands.rate_per_address": "100000",
                "commands.burst_per_address": "100000",
            },
        ),
        Scenario(
            "S6",
            "cold start: 50,000 devices' retained meta and status, then the target starts",
            50000,
            (0.0,),
            20.0,  # only bounds a --profile recording
            1,
            cold_start=True,
        ),
        Scenario(
            "S7",
            "slow neighbour: S2 plus 5 clients reading at 10% speed, 60 s",
            100,
            (1000.0,),
            # Long enough for the slow clients' backlog to pass the kernel's send buffer (up to
            # 4 MB each) and the 1 MiB outbox, so coalescing and its notices are exercised.
            60.0,
            100,
            slow_clients=5,
            full_every=10,
            subscriber_procs=2,
        ),
        Scenario(
            "S8",
            "device storm: 10,000 new devices within 2 s (step 0), then their 10,000 wills within"
            " 1 s (step 1), 1,000 clients on '*', 100 devices at 1,000 msg/s, no warm-up",
            100,
            (1000.0, 1000.0),
            10.0,
            1000,
            full_every=50,
            subscriber_procs=4,
            warmup=False,
            storm_devices=10000,
            settings={
                # A subscriber process stalled by the storm's frames answers pings late (as in
                # S4); the gateway's heartbeat is not what S8 measures.
                "ws.heartbeat_s": "60",
                # The admission limits (docs/operations.md) are not what S8 measures.
                "ws.max_connections": "100000",
                "ws.max_connections_per_token": "100000",
                "ws.connect_rate": "100000",
                "ws.connect_burst": "100000",
                "registry.max_devices": "100000",
            },
        ),
    ]
}

#: What each step of a storm scenario does to the storm fleet.
STORM_STEPS = ("appear", "wills")

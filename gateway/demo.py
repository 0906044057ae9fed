"""`iotgw demo`: a broker, the gateway and a small mixed fleet in one process tree.

The broker is a child process (mosquitto when installed, else embedded amqtt); the gateway and the
fleet share this process's event loop. On Ctrl-C or SIGTERM they stop in the order that keeps the
story true: devices say goodbye (retained `offline`), the gateway tells its clients 1001, and the
broker goes last.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.app import serve
from gateway.brokers import local_broker
from gateway.config import load_config

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DemoOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    devices: int = 12
    rate: float = 1.0  # readings per second per device
    broker_port: int = 0  # 0: a free port
    broker_kind: str = "auto"  # auto | mosquitto | amqtt
    # the convention the fleet speaks (simulators.encoders), or `all` of them in turn
    convention: str = "native"
    data_dir: str = "iotgw-data"  # history: <data_dir>/demo.sqlite3, kept across runs


async def run_demo(options: DemoOptions, stop: asyncio.Event) -> None:
    from simulators.config import FleetConfig, mixed_groups
    from simulators.encoders import gateway_settings
    from simulators.fleet import Fleet

    async with local_broker(options.broker_port, options.broker_kind) as broker:
        log.info("%s broker on %s", broker.kind, broker.url)
        fleet_config = FleetConfig(
            broker=broker.url,
            convention=options.convention,
            groups=mixed_groups(options.devices),
            rate=options.rate,
        )
        config = load_config(
            overrides={
                "broker.url": broker.url,
                "http.host": options.host,
                "http.port": options.port,
                # A demo fleet is small and lively; show a silent device as stale quickly.
                "registry.stale_after_s": 30.0,
                # Its own file: a demo's history never mixes with a gateway's in the same place.
                "history.backend": "sqlite",
                "history.path": str(Path(options.data_dir) / "demo.sqlite3"),
                # The fleet's conventions enabled at their default base topics, as a user would in
                # config.toml; native stays on as it does by default (its prefix is disjoint).
                **gateway_settings(fleet_config.conventions, fleet_config.base_for),
            }
        )
        fleet = Fleet(fleet_config)
        gateway_stop = asyncio.Event()
        gateway_up = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            gateway = tasks.create_task(
                serve(config, gateway_stop, gateway_up, wait_for_broker=True), name="demo.gateway"
            )
            await _first(gateway_up.wait(), gateway)
            fleet_task = tasks.create_task(fleet.run(), name="demo.fleet")
            url = f"http://{options.host}:{options.port}/"
            spoken = fleet_config.conventions
            kind = spoken[0] if len(spoken) == 1 else f"mixed ({', '.join(spoken)})"
            print(
                f"iotgw demo: dashboard at {url}  ({options.devices} simulated "
                f"{kind} devices, "
                f"{broker.kind} broker on port {broker.port}; history in "
                f"{config.history.sqlite_path().absolute()}; Ctrl-C to stop)",
                flush=True,
            )
            await _first(stop.wait(), gateway, fleet_task)
            fleet.stop()
            await fleet_task
            gateway_stop.set()
    print("iotgw demo: stopped", file=sys.stderr, flush=True)


async def _first(waiting: Awaitable[object], *watched: asyncio.Task[Any]) -> None:
    """Await `waiting`, unless one of `watched` ends first (then its error surfaces)."""
    waiter = asyncio.ensure_future(waiting)
    try:
        await asyncio.wait([waiter, *watched], return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    for task in watched:
        if task.done():
            task.result()  # raises what stopped it
            raise RuntimeError(f"{task.get_name()} stopped unexpectedly")

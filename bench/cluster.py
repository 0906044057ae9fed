"""Cluster benchmarks (issue 14), each one command:

    python -m bench.cluster split  [--clients 100 --rate 1000 --devices 100 --duration 20 --pairs 3]
    python -m bench.cluster split --zero --set ws.batch_interval_max_ms=5   # fixed batch interval
    python -m bench.cluster broker [--instances 0,1,2,3 --rate 2000 --runs 2]

`split`: K WebSocket clients on one instance, then the same K split over two instances, paired
(one, two, one, two, ...: each pair sees similar machine load). Every instance runs as in
production: cluster.enabled, history in a fresh PostgreSQL database, the writer group on. Reports
each instance's CPU per message and per delivery (a delivery = one message to one client), so
that the per-instance cost can be compared: 2 cores cannot show the aggregate throughput doubling.
`--zero` adds the same instances with no clients to every pair: what an instance pays per message
whoever watches (ingest, its share of history, the writer link), so that the fan-out's own cost
per delivery can be told apart. The gateway's own view of each step (batches and frames per
second, its event loop's lateness; bench/procs.py) is in every record.
`broker`: Mosquitto's CPU per published message with N instances subscribed (no clients),
N = 0, 1, 2, ... in turn: the broker's extra cost per instance (each one's main link gets every
message; the writer group gets each message once between them).

Both use bench/'s publisher and subscriber workers and a fresh broker per run, and record the
machine's load from processes the run did not start (`others_cpu_pct`). PostgreSQL: `--dsn` (a
server where the user may CREATE DATABASE), else one started for the invocation from Debian's
binaries (tests/support/postgres.py). Results: one JSON line per run in
bench/results/cluster.jsonl, and a table on stdout. Only 127.0.0.1 (and the DSN given) is used.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg

from bench import machine, procs, publisher, subscriber
from bench.runner import device_ids, merge_groups, split
from bench.workers import Worker, Workers, broadcast, gather

RESULTS = Path(__file__).resolve().parent / "results" / "cluster.jsonl"
READY_S = 60.0
DRAIN_MAX_S = 30.0
DRAIN_QUIET_S = 2.0
SUBSCRIBER_PROCS = 2  # in both variants: the clients' own load is the same


@contextlib.contextmanager
def postgres(dsn: str | None) -> Iterator[str]:
    """The server DSN: the one given, or a server started for this invocation."""
    if dsn:
        yield dsn
        return
    from tests.support.postgres import PostgresServer  # a dev checkout's own helper

    server = PostgresServer(durable=True).init()
    try:
        yield server.dsn
    finally:
        server.cleanup()


def fresh_database(server: str) -> str:
    """A new database on `server`; its DSN."""
    import asyncio

    from tests.support.postgres import database_dsn

    name = f"iotgw_bench_{secrets.token_hex(4)}"

    async def create() -> None:
        admin = await asyncpg.connect(server)
        try:
            await admin.execute(f"CREATE DATABASE {name}")
        finally:
            await admin.close()

    asyncio.run(create())
    return database_dsn(server, name)


def instance_settings(name: str, dsn: str, group: str, extra: dict[str, str]) -> dict[str, str]:
    return {
        "cluster.enabled": "true",
        "cluster.instance_id": name,
        "cluster.writer_group": group,
        "history.backend": "postgres",
        "history.dsn": dsn,
        "log.level": "warning",
        **extra,
    }


class Cluster:
    """A broker and N gateway instances (not yet started)."""

    def __init__(self, instances: int, dsn: str, prefix: str, extra: dict[str, str]) -> None:
        self.broker, self.broker_port = procs.broker()
        self.instances: list[tuple[procs.Child, int]] = [
            procs.target(
                "gateway",
                self.broker_port,
                prefix,
                instance_settings(f"gw-{i}", dsn, f"bench-{prefix}", extra),
            )
            for i in range(instances)
        ]

    def __enter__(self) -> Cluster:
        self.broker.start()
        procs.wait_until(lambda: procs.port_open(self.broker_port), 15, "mosquitto")
        for child, _ in self.instances:
            child.start()
        for child, port in self.instances:
            try:
                procs.wait_until(lambda p=port: procs.target_ready("gateway", p), READY_S, "gw")
            except TimeoutError:
                raise RuntimeError(child.log_tail()) from None
        return self

    def __exit__(self, *exc: object) -> None:
        for child, _ in self.instances:
            child.stop()
        self.broker.stop()

    def cpu(self) -> tuple[list[float], float, float]:
        """Each instance's CPU seconds, the broker's, and the clock."""
        return (
            [procs.cpu_seconds(child.pid) for child, _ in self.instances],
            procs.cpu_seconds(self.broker.pid),
            time.monotonic(),
        )


def drain(subs: list[Worker], expected: int, key: str = "msgs") -> float:
    """Wait until the clients counted `expected`, or their count stopped moving."""
    started = last_change = time.monotonic()
    last = -1
    while subs and time.monotonic() - started < DRAIN_MAX_S:
        broadcast(subs, "poll")
        total = sum(c[key] for c in gather(subs, "counts", 30))
        now = time.monotonic()
        if total >= expected:
            break
        if total != last:
            last, last_change = total, now
        elif now - last_change > DRAIN_QUIET_S:
            break
        time.sleep(0.1)  # polling other processes' counters
    return time.monotonic() - started


def run_once(
    args: argparse.Namespace, variant: str, instances: int, server: str, clients: int
) -> dict[str, Any]:
    """One run: `instances` gateways, `clients` split over them (0: ingest only)."""
    prefix = f"bc{secrets.token_hex(3)}"
    devices = device_ids(args.devices)
    extra = dict(item.split("=", 1) for item in args.set)
    with (
        Cluster(instances, fresh_database(server), prefix, extra) as cluster,
        Workers() as workers,
    ):
        subs: list[list[Worker]] = []  # per instance
        first = 0
        shares = split(clients, instances) if clients else [0] * instances
        procs_each = split(SUBSCRIBER_PROCS, instances) if clients else [0] * instances
        for (_, port), share, nprocs in zip(cluster.instances, shares, procs_each, strict=True):
            mine = []
            for count in split(share, nprocs) if share else []:
                config = subscriber.SubscriberConfig(
                    f"http://127.0.0.1:{port}/ws", count, first, args.full_every
                )
                mine.append(workers.add(Worker(f"subscriber-{first}", subscriber.run, config)))
                first += count
            subs.append(mine)
        every = [w for group in subs for w in group]
        gather(every, "ready", 120)
        pub = workers.add(
            Worker(
                "publisher",
                publisher.run,
                publisher.PublisherConfig(cluster.broker_port, prefix, devices, f"{prefix}-pub"),
            )
        )
        gather([pub], "ready", 60)
        drain(every, len(devices) * 3 * clients, "rows")  # every client has the warm-up
        time.sleep(0.5)
        broadcast(every, "collect")
        gather(every, "result", 60)
        views0 = [procs.gateway_samples(port) for _, port in cluster.instances]
        cpu0, machine0 = cluster.cpu(), procs.system_cpu()
        start_at = time.time() + 0.3
        broadcast([pub], "go", (start_at, args.rate, args.duration))
        [sent] = gather([pub], "done", args.duration + 60)
        drain(every, sent["sent"] * clients)
        cpu1, machine1 = cluster.cpu(), procs.system_cpu()
        views1 = [procs.gateway_samples(port) for _, port in cluster.instances]
        broadcast(every, "collect")
        per_instance = [
            merge_groups(gather(group, "result", 60)) if group else None for group in subs
        ]
    window = cpu1[2] - cpu0[2]
    gateway_s = [b - a for a, b in zip(cpu0[0], cpu1[0], strict=True)]
    broker_s = cpu1[1] - cpu0[1]
    client_s = sum(g["cpu_s"] for g in per_instance if g)
    ours = sum(gateway_s) + broker_s + client_s + sent["cpu_s"]
    busy = machine1[0] - machine0[0]
    rows = []
    for i, (cpu_s, group) in enumerate(zip(gateway_s, per_instance, strict=True)):
        delivered = group["delivered"] if group else 0
        view = procs.step_view(views0[i], views1[i], window)
        rows.append(
            {
                "gateway": view,
                "instance": f"gw-{i}",
                "clients": shares[i],
                "cpu_s": round(cpu_s, 3),
                "cpu_pct": round(100 * cpu_s / window, 1),
                "delivered": delivered,
                "us_per_delivery": round(1e6 * cpu_s / delivered, 3) if delivered else None,
                "us_per_message": round(1e6 * cpu_s / sent["sent"], 2),
                "p99_ms": group["latency_ms"]["p99"] if group else None,
            }
        )
    return {
        "bench": "cluster",
        "variant": variant,
        "settings": extra,
        "instances": instances,
        "clients": clients,
        "rate": args.rate,
        "devices": args.devices,
        "duration_s": args.duration,
        "published": sent["sent"],
        "window_s": round(window, 2),
        "gateways": rows,
        "broker_cpu_pct": round(100 * broker_s / window, 1),
        "broker_us_per_message": round(1e6 * broker_s / sent["sent"], 2),
        "client_cpu_pct": round(100 * client_s / window, 1),
        "others_cpu_pct": round(100 * max(0.0, busy - ours) / window, 1),
        "machine_busy_pct": round(100 * busy / window, 1),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "top_at_end": machine.busy_processes(),
        "commit": machine.git_commit(),
        "machine": machine.describe(),
        "ts": time.time(),
    }


def record(result: dict[str, Any]) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(result) + "\n")


def split_bench(args: argparse.Namespace) -> None:
    variants = [("one", 1, args.clients), ("two", 2, args.clients)]
    if args.zero:
        # The same instances with no clients: what each pays per message whoever watches.
        variants += [("one-0", 1, 0), ("two-0", 2, 0)]
    results: dict[str, list[dict[str, Any]]] = {v: [] for v, _, _ in variants}
    with postgres(args.dsn) as server:
        for pair in range(args.pairs):
            for variant, n, clients in variants:
                result = run_once(args, variant, n, server, clients)
                record(result)
                results[variant].append(result)
                costs = ", ".join(
                    f"{g['instance']} {g['cpu_pct']}% {g['us_per_message']} µs/message "
                    f"{g['us_per_delivery']} µs/delivery"
                    for g in result["gateways"]
                )
                print(
                    f"pair {pair + 1} {variant}: {costs}; broker {result['broker_cpu_pct']}%,"
                    f" others {result['others_cpu_pct']}%",
                    flush=True,
                )
    print(
        "\n| variant | runs | µs per message, per instance | µs per delivery, per instance | "
        "instance CPU % | deliveries/s per instance | others' CPU % per run |\n"
        "|---|---:|---:|---:|---:|---:|---|"
    )
    for variant, runs in results.items():
        per_msg = statistics.median(g["us_per_message"] for r in runs for g in r["gateways"])
        per_client = [g["us_per_delivery"] for r in runs for g in r["gateways"] if g["delivered"]]
        cpu = [g["cpu_pct"] for r in runs for g in r["gateways"]]
        rate = [g["delivered"] / r["window_s"] for r in runs for g in r["gateways"]]
        others = ", ".join(str(r["others_cpu_pct"]) for r in runs)
        per_delivery = f"{statistics.median(per_client):.3f}" if per_client else "—"
        print(
            f"| {variant} | {len(runs)} | {per_msg:.1f} | {per_delivery} | "
            f"{statistics.median(cpu):.0f} | {statistics.median(rate):,.0f} | {others} |"
        )


def broker_bench(args: argparse.Namespace) -> None:
    counts = [int(n) for n in args.instances.split(",")]
    by_n: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
    with postgres(args.dsn) as server:
        for repeat in range(args.runs):
            for n in counts:
                result = run_once(args, f"broker-{n}", n, server, 0)
                record(result)
                by_n[n].append(result)
                print(
                    f"run {repeat + 1}, {n} instances: broker {result['broker_cpu_pct']}% "
                    f"{result['broker_us_per_message']} µs/message, others "
                    f"{result['others_cpu_pct']}%",
                    flush=True,
                )
    print(
        "\n| instances subscribed | runs | broker µs per published message (median) | "
        "broker CPU % | others' CPU % per run |\n|---:|---:|---:|---:|---|"
    )
    for n, runs in by_n.items():
        us = statistics.median(r["broker_us_per_message"] for r in runs)
        pct = statistics.median(r["broker_cpu_pct"] for r in runs)
        others = ", ".join(str(r["others_cpu_pct"]) for r in runs)
        print(f"| {n} | {len(runs)} | {us:.2f} | {pct:.0f} | {others} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("split", help="K clients on one instance vs split over two, paired")
    one.add_argument("--clients", type=int, default=100)
    one.add_argument("--rate", type=float, default=1000.0)
    one.add_argument("--pairs", type=int, default=3)
    one.add_argument("--full-every", type=int, default=10)
    one.add_argument("--zero", action="store_true", help="also each variant with no clients")
    two = sub.add_parser("broker", help="the broker's cost per subscribed instance")
    two.add_argument("--instances", default="0,1,2,3")
    two.add_argument("--rate", type=float, default=2000.0)
    two.add_argument("--runs", type=int, default=2)
    for p in (one, two):
        p.add_argument("--devices", type=int, default=100)
        p.add_argument("--duration", type=float, default=20.0)
        p.add_argument("--dsn", help="a PostgreSQL server (CREATEDB); default: start one")
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="a gateway setting for every instance (ws.batch_interval_max_ms=5)",
        )
    args = parser.parse_args()
    if args.command == "split":
        split_bench(args)
    else:
        broker_bench(args)


if __name__ == "__main__":
    main()

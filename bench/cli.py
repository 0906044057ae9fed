"""`python -m bench run|report|list`: drive scenarios, append JSON lines, regenerate the doc."""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from bench import coldstart, procs, report
from bench.procs import REPO
from bench.runner import Options, Run
from bench.scenarios import SCENARIOS, Scenario

RESULTS = REPO / "bench" / "results" / "results.jsonl"
DOC = REPO / "docs" / "performance.md"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a scenario against the gateway and/or the baseline")
    run.add_argument("--scenario", "-s", required=True, choices=sorted(SCENARIOS))
    run.add_argument("--target", choices=["gateway", "naive", "both"], default="both")
    run.add_argument("--runs", type=int, default=3, help="runs per target (alternating)")
    run.add_argument("--duration", type=float, help="seconds per step")
    run.add_argument("--rates", help="msg/s, comma-separated for stepwise scenarios")
    run.add_argument("--devices", type=int)
    run.add_argument("--clients", type=int, help="healthy WebSocket clients")
    run.add_argument("--slow-clients", type=int)
    run.add_argument("--publishers", type=int, help="publisher processes")
    run.add_argument("--subscriber-procs", type=int, help="subscriber processes")
    run.add_argument("--full-every", type=int, help="every n-th client checks every row")
    run.add_argument("--commands-per-s", type=float)
    run.add_argument(
        "--no-warmup",
        dest="warmup",
        action="store_false",
        default=None,
        help="no warm-up message: devices are new to the gateway inside the measured window",
    )
    run.add_argument("--storm-devices", type=int, help="S8: devices appearing, then their wills")
    run.add_argument("--storm-procs", type=int, help="S8: processes holding their connections")
    run.add_argument(
        "--compress",
        type=int,
        nargs="?",
        const=15,
        metavar="BITS",
        help="clients offer permessage-deflate with this server window (9-15, default 15); "
        "turns ws.compress on",
    )
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="gateway config override, e.g. ws.batch_interval_ms=2 (repeatable)",
    )
    run.add_argument(
        "--broker-conf",
        action="append",
        default=[],
        metavar="LINE",
        help='extra mosquitto.conf line, e.g. "max_queued_messages 1000" (repeatable)',
    )
    run.add_argument("--publisher", choices=["raw", "paho"], default="raw")
    run.add_argument(
        "--nice-load",
        type=int,
        default=0,
        metavar="N",
        help="run the load generators at niceness N, so that on a busy machine they wait for the "
        "CPU rather than the target (its event loop's lateness is then its own)",
    )
    run.add_argument("--gateway-python", help="interpreter for the gateway (e.g. a uvloop venv)")
    run.add_argument("--gateway-tree", type=Path, help="checkout whose gateway/ to run (A/B)")
    run.add_argument("--gc-probe", action="store_true", help="record the gateway's GC pauses")
    run.add_argument("--profile", type=Path, metavar="DIR", help="py-spy the target into DIR")
    run.add_argument("--results", type=Path, default=RESULTS)
    run.add_argument("--label", default="", help="free text stored with every record")
    run.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="PCT",
        help="before each run, wait (at most 3 minutes) until the machine is PCT%% idle",
    )
    rep = commands.add_parser("report", help="regenerate the table in docs/performance.md")
    rep.add_argument("--results", type=Path, default=RESULTS)
    rep.add_argument("--output", type=Path, default=DOC)
    commands.add_parser("list", help="list the scenarios")
    return parser


def scenario_from_args(args: argparse.Namespace) -> Scenario:
    scenario = SCENARIOS[args.scenario]
    settings = dict(scenario.settings)
    for item in args.set:
        key, _, value = item.partition("=")
        settings[key.strip()] = value.strip()
    if args.compress:
        settings.setdefault("ws.compress", "true")
    rates = tuple(float(r) for r in args.rates.split(",")) if args.rates else None
    return scenario.with_overrides(
        duration=args.duration,
        rates=rates,
        devices=args.devices,
        clients=args.clients,
        slow_clients=args.slow_clients,
        publishers=args.publishers,
        subscriber_procs=args.subscriber_procs,
        full_every=args.full_every,
        commands_per_s=args.commands_per_s,
        compress=args.compress,
        warmup=args.warmup,
        storm_devices=args.storm_devices,
        storm_procs=args.storm_procs,
        settings=settings,
    )


def one_line(record: dict[str, Any]) -> str:
    if "snapshot" in record:
        return coldstart.one_line(record)
    lat = record["latency_ms"]
    commands = record.get("commands")
    if commands:
        lat = commands["rtt_ms"]
    ratio = record["delivery_ratio"]
    if commands and commands["sent"]:
        ratio = commands["answered"] / commands["sent"]
    return (
        f"{record['scenario']:>5} {record['target']:<8} step {record['step']} "
        f"rate {record['publisher_achieved_rate']:>8.0f}/s "
        f"delivered {'-' if ratio is None else f'{100 * ratio:.2f}%':>8} "
        f"{record['deliveries_per_s']:>10.0f}/s p50 {lat['p50']} p99 {lat['p99']} "
        f"max {lat['max']} ms | {record['target']} cpu {record['target_cpu_pct']}% "
        f"rss {record['target_rss_kib']['peak'] // 1024} MiB | clients cpu "
        f"{record['client_cpu_pct']}% broker {record['broker_cpu_pct']}% "
        f"load {record['loadavg'][0]}{_loop_line(record)}"
    )


def _loop_line(record: dict[str, Any]) -> str:
    """The gateway's own view of the step: its event loop and fan-out."""
    view = record.get("gateway") or {}
    if not view:
        return ""
    events = record["clients"].get("events_min_client")
    return (
        f" | loop late max {view['loop_late_max_ms']} total {view['loop_late_total_ms']} ms, "
        f">100 ms {view['loop_ticks_over_100ms']} | batches/s {view['batches_per_s']}, "
        f"frames/s per client {record.get('frames_per_client_per_s')}"
        + (f", events per client >= {events}" if events else "")
        + _history_line(view)
    )


def _history_line(view: dict[str, Any]) -> str:
    """The history writer during the step: keeping up (written/s), or dropping."""
    if "history_written_per_s" not in view:
        return ""
    return (
        f" | history {view['history_written_per_s']} points/s, dropped "
        f"{view['history_dropped']}, queued {view['history_queued']}"
    )


def wait_idle(wanted: float, patience_s: float = 180.0) -> float:
    """The machine's idle % over 2 s, re-measured until it reaches `wanted` or patience ends."""
    deadline = time.monotonic() + patience_s
    while True:
        idle = round(procs.idle_pct(2.0), 1)
        if idle >= wanted or time.monotonic() > deadline:
            return idle


def run(args: argparse.Namespace) -> int:
    scenario = scenario_from_args(args)
    targets = ["gateway", "naive"] if args.target == "both" else [args.target]
    invocation = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    options = Options(
        args.publisher,
        args.gateway_python,
        args.gateway_tree,
        args.gc_probe,
        args.profile,
        invocation,
        tuple(args.broker_conf),
        args.nice_load,
    )
    args.results.parent.mkdir(parents=True, exist_ok=True)
    print(f"invocation {invocation}: {scenario.name} — {scenario.description}", flush=True)
    for index in range(args.runs):
        # Alternate the order so that neither target always runs on a warmer (or busier) box.
        for target in targets if index % 2 == 0 else targets[::-1]:
            idle = wait_idle(args.wait_idle)
            for record in Run(scenario, target, options).execute():
                record["run"] = index
                record["label"] = args.label
                record["idle_before_pct"] = idle
                with args.results.open("a") as f:
                    f.write(json.dumps(record) + "\n")
                print(one_line(record), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "list":
        for scenario in SCENARIOS.values():
            print(f"{scenario.name:>6}  {scenario.description}")
        return 0
    if args.command == "report":
        report.write(args.results, args.output)
        print(f"wrote {args.output}")
        return 0
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130
    except (RuntimeError, TimeoutError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1

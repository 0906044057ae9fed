"""`iotgw tail | send | devices | history`: the command line on the Python client.

Libraries raise, the CLI exits: each handler returns the process's exit status (gateway/cli.py
exits with it). `send` says the command's outcome in its status, like mosquitto_rr (EXIT below);
every error is one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import re
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import IO, Any

import orjson

from gateway.client.client import Client
from gateway.client.errors import (
    ClientError,
    CommandNotSent,
    CommandRefused,
    CommandTimeout,
    CommandUnconfirmed,
    CommandUnknown,
    DeviceError,
    RequestRefused,
    Unauthorized,
)
from gateway.client.frames import Device, DeviceEvent, Reading
from gateway.client.subscription import Lagging, Resync, Snapshot

DEFAULT_URL = "ws://127.0.0.1:8080/ws"

#: Exit statuses (docs/clients.md, "Exit status").
EXIT = {
    "ok": 0,
    "error": 1,  # cannot connect, a wrong URL, anything else
    "usage": 2,  # argparse's own
    "unauthorized": 3,  # the token was refused (or one is needed)
    "refused": 4,  # the gateway refused the request: unknown device, bad params, ...
    "device_error": 5,
    "timeout": 6,
    "unknown": 7,
    "unconfirmed": 8,
    "not_sent": 9,
}

_OUTCOMES: tuple[tuple[type[ClientError], str], ...] = (
    (Unauthorized, "unauthorized"),
    (CommandRefused, "refused"),
    (RequestRefused, "refused"),
    (DeviceError, "device_error"),
    (CommandTimeout, "timeout"),
    (CommandUnknown, "unknown"),
    (CommandUnconfirmed, "unconfirmed"),
    (CommandNotSent, "not_sent"),
)


def add_parsers(commands: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    """Add the client subcommands to `iotgw`'s subparsers; return their handlers by name."""
    tail = commands.add_parser("tail", help="print the live readings and device events")
    _client_flags(tail)
    tail.add_argument("--devices", nargs="+", default=["*"], metavar="GLOB",
                      help="device globs (default: every device)")  # fmt: skip
    tail.add_argument("--metrics", nargs="+", metavar="GLOB", help="metric globs (default: all)")
    tail.add_argument("--format", choices=("jsonl", "table"), default="jsonl",
                      help="one JSON object per line (default) or aligned text")  # fmt: skip

    send = commands.add_parser("send", help="send a command to a device and print its result")
    _client_flags(send)
    send.add_argument("device", help="the device's id")
    send.add_argument("name", metavar="COMMAND", help="a command its meta declares")
    send.add_argument("params", nargs="*", metavar="KEY=VALUE",
                      help="params; a value is read as JSON when it parses (21.5, true, "
                      '"text"), else taken as text')  # fmt: skip
    send.add_argument("--timeout", type=float, default=5.0, metavar="S",
                      help="seconds for the device to answer (default 5)")  # fmt: skip

    devices = commands.add_parser("devices", help="list the devices and their latest values")
    _client_flags(devices)
    devices.add_argument("--format", choices=("table", "json"), default="table",
                         help="aligned text (default) or a JSON array")  # fmt: skip

    history = commands.add_parser("history", help="print a metric's history")
    _client_flags(history)
    history.add_argument("device", help="the device's id")
    history.add_argument("metric", help="one of its metrics")
    history.add_argument("--from", dest="from_", default="-1h", metavar="TIME",
                         help="Unix seconds, ISO 8601, 'now' or relative: -90s, -15m, -2h, -7d "
                         "(default -1h)")  # fmt: skip
    history.add_argument("--to", default="now", metavar="TIME", help="as --from (default now)")
    history.add_argument("--max-points", type=int, default=1000,
                         help="past this, min/max/avg buckets (at most 5000)")  # fmt: skip
    history.add_argument("--csv", action="store_true",
                         help="every raw point as CSV time,value (the REST export)")  # fmt: skip
    return {"tail": _sync(_tail), "send": _sync(_send), "devices": _sync(_devices),
            "history": _sync(_history)}  # fmt: skip


def _client_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=os.environ.get("IOTGW_URL", DEFAULT_URL),
                        help=f"the gateway (IOTGW_URL; default {DEFAULT_URL})")  # fmt: skip
    parser.add_argument("--token", default=os.environ.get("IOTGW_TOKEN"),
                        help="access token (IOTGW_TOKEN)")  # fmt: skip


def _sync(
    main: Callable[[argparse.Namespace], Coroutine[Any, Any, int]],
) -> Callable[[argparse.Namespace], int]:
    """Run `main(args)` until it ends or SIGINT/SIGTERM (then 0: the user asked to stop); a
    ClientError is one line on stderr and its exit status."""

    def run(args: argparse.Namespace) -> int:
        async def runner() -> int:
            task = asyncio.current_task()
            assert task is not None
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, task.cancel)
            try:
                return await main(args)
            except asyncio.CancelledError:
                return EXIT["ok"]

        try:
            return asyncio.run(runner())
        except ClientError as exc:
            print(f"iotgw {args.command}: {exc}", file=sys.stderr)
            return next((EXIT[name] for cls, name in _OUTCOMES if isinstance(exc, cls)), 1)
        except BrokenPipeError:
            _quiet_stdout()  # `iotgw tail | head`: the reader left, which is not an error
            return EXIT["ok"]

    return run


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's last flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _note(command: str) -> Callable[[str, str], None]:
    def on_state(phase: str, info: str) -> None:
        if phase == "reconnecting":
            print(f"iotgw {command}: {info}", file=sys.stderr, flush=True)

    return on_state


# --- tail ---------------------------------------------------------------------------------------


async def _tail(args: argparse.Namespace) -> int:
    out = sys.stdout.buffer
    write = _jsonl(out) if args.format == "jsonl" else _table(out)
    async with Client(args.url, token=args.token, on_state=_note("tail")) as gw:
        sub = gw.subscribe(args.devices, args.metrics)
        async for event in sub:
            if isinstance(event, Reading | DeviceEvent):
                write(event)
            elif isinstance(event, Resync):
                count = len(event.snapshot.devices)
                print(f"iotgw tail: resync: {event.reason}; {count} devices in the fresh snapshot",
                      file=sys.stderr, flush=True)  # fmt: skip
            elif isinstance(event, Snapshot):
                print(f"iotgw tail: {len(event.devices)} devices", file=sys.stderr, flush=True)
            elif isinstance(event, Lagging):
                print(f"iotgw tail: fell behind ({event.source}): {event.dropped} readings "
                      "skipped, latest values kept", file=sys.stderr, flush=True)  # fmt: skip
            if sub.pending == 0:
                out.flush()  # once per burst, not per line: 10,000 lines/s stay cheap
    return EXIT["ok"]


def _jsonl(out: IO[bytes]) -> Callable[[Reading | DeviceEvent], None]:
    dumps = orjson.dumps

    def write(event: Reading | DeviceEvent) -> None:
        if isinstance(event, Reading):
            line = {"type": "reading", "device": event.device, "metric": event.metric,
                    "ts": event.ts, "value": event.value}  # fmt: skip
        else:
            d = event.device
            device = {"id": d.id, "status": d.status, "last_seen": d.last_seen, "name": d.name,
                      "type": d.type, "meta": d.meta}  # fmt: skip
            line = {"type": "event", "event": event.event, "device": device}
        out.write(dumps(line, option=orjson.OPT_APPEND_NEWLINE))

    return write


def _table(out: IO[bytes]) -> Callable[[Reading | DeviceEvent], None]:
    def write(event: Reading | DeviceEvent) -> None:
        if isinstance(event, Reading):
            line = f"{_clock(event.ts)}  {event.device:<20} {event.metric:<16} {_text(event.value)}"
        else:
            d = event.device
            line = f"{_clock(d.last_seen)}  {d.id:<20} [{event.event}] {d.status}"
        out.write(line.encode() + b"\n")

    return write


def _clock(ts: float | None) -> str:
    if ts is None:
        return " " * 23
    return dt.datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="milliseconds")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


# --- send ---------------------------------------------------------------------------------------


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """KEY=VALUE pairs; a value is JSON when it parses as JSON, else text."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ClientError(f"{pair!r}: params are KEY=VALUE")
        try:
            params[key] = orjson.loads(raw)
        except orjson.JSONDecodeError:
            params[key] = raw
    return params


async def _send(args: argparse.Namespace) -> int:
    params = parse_params(args.params)
    async with Client(args.url, token=args.token) as gw:
        result = await gw.command(args.device, args.name, params, timeout=args.timeout)
    print(orjson.dumps(result.result).decode())
    return EXIT["ok"]


# --- devices ------------------------------------------------------------------------------------


async def _devices(args: argparse.Namespace) -> int:
    async with Client(args.url, token=args.token) as gw:
        devices = await gw.devices()
    if args.format == "json":
        print(orjson.dumps([_device_json(d) for d in devices]).decode())
        return EXIT["ok"]
    print(f"{'ID':<24} {'STATUS':<8} {'TYPE':<14} {'LAST SEEN':<23}  NAME")
    for d in sorted(devices, key=lambda d: d.id):
        print(f"{d.id:<24} {d.status:<8} {d.type:<14} {_clock(d.last_seen)}  {d.name}")
    return EXIT["ok"]


def _device_json(d: Device) -> dict[str, Any]:
    return {"id": d.id, "status": d.status, "last_seen": d.last_seen, "name": d.name,
            "type": d.type, "meta": d.meta,
            "values": {m: [ts, v] for m, (ts, v) in d.values.items()}}  # fmt: skip


# --- history ------------------------------------------------------------------------------------

_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, now: float) -> float:
    """Unix seconds, 'now', a relative -90s/-15m/-2h/-7d, or ISO 8601 (local time if naive)."""
    if text == "now":
        return now
    if match := _RELATIVE.match(text):
        return now - float(match.group(1)) * _UNITS[match.group(2)]
    with contextlib.suppress(ValueError):
        return float(text)
    try:
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ClientError(f"{text!r}: not a time (Unix seconds, ISO 8601, now, -15m)") from None


async def _history(args: argparse.Namespace) -> int:
    now = dt.datetime.now().timestamp()
    start, end = parse_time(args.from_, now), parse_time(args.to, now)
    out = sys.stdout.buffer
    async with Client(args.url, token=args.token) as gw:
        if args.csv:
            async for chunk in gw.export_csv(args.device, args.metric, start, end):
                out.write(chunk)
            out.flush()
            return EXIT["ok"]
        history = await gw.history(args.device, args.metric, start, end, args.max_points)
    if history.buckets is not None:
        out.write(f"# buckets of {history.bucket_s:g} s: start, min, max, avg, count\n".encode())
        for b in history.buckets:
            line = f"{_clock(b.start)}  {b.min:g} {b.max:g} {b.avg:g} {b.count}\n"
            out.write(line.encode())
    else:
        for ts, value in history.points or ():
            out.write(f"{_clock(ts)}  {_text(value)}\n".encode())
        if history.truncated:
            out.write(b"# truncated: only the newest points\n")
    out.flush()
    return EXIT["ok"]

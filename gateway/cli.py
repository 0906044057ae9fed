"""`iotgw`: run | check-config | simulate | demo, and the client commands tail | send | devices |
history (gateway/client/cli.py). The only place that exits the process."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import signal
import sys
import types
from collections.abc import Callable, Coroutine
from typing import Any

from gateway import __version__
from gateway.app import serve
from gateway.client import cli as client_cli
from gateway.cluster import with_instance_id
from gateway.config import Config, load_config
from gateway.demo import DemoOptions, run_demo
from gateway.errors import ConfigError, GatewayError
from gateway.logs import configure_logging, redact_url

log = logging.getLogger("iotgw")


#: The client subcommands' handlers, filled in by build_parser.
_CLIENT_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iotgw", description="IoT telemetry gateway: MQTT devices to WebSocket clients."
    )
    parser.add_argument("--version", action="version", version=f"iotgw {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the gateway daemon")
    _add_config_flags(run)

    check = commands.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("file", help="path to a config.toml")
    _CLIENT_COMMANDS.update(client_cli.add_parsers(commands))

    simulators_cli: types.ModuleType | None
    try:
        from simulators import cli as simulators_cli
    except ImportError as exc:  # the simulators package is optional in a trimmed install...
        simulators_cli = None
        if not (isinstance(exc, ModuleNotFoundError) and exc.name == "simulators"):
            # ...but a broken one (a module missing from the wheel) must say so when used.
            _add_unavailable(commands, ("simulate", "demo"), f"{type(exc).__name__}: {exc}")
    if simulators_cli is not None:
        from simulators.encoders import ALL, ENCODERS

        simulate = commands.add_parser("simulate", help="run a fleet of simulated devices")
        simulators_cli.configure_parser(simulate)
        demo = commands.add_parser(
            "demo", help="run a local broker, the gateway and a simulated fleet together"
        )
        demo.add_argument("--host", default="127.0.0.1", help="HTTP bind address")
        demo.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080)")
        demo.add_argument("--devices", type=int, default=12, help="simulated devices (default 12)")
        demo.add_argument("--rate", type=float, default=1.0,
                          help="readings per second per device (default 1)")  # fmt: skip
        demo.add_argument("--broker-port", type=int, default=0,
                          help="port for the local broker (default: any free port)")  # fmt: skip
        demo.add_argument("--broker", choices=("auto", "mosquitto", "amqtt"), default="auto",
                          help="which local broker to run (default: mosquitto when installed, "
                          "else the embedded amqtt)")  # fmt: skip
        demo.add_argument("--convention", choices=(*ENCODERS, ALL),
                          default="native", help="the convention the fleet speaks, enabled in "
                          "the gateway too (default native)")  # fmt: skip
        demo.add_argument("--data-dir", default="iotgw-data",
                          help="where the demo keeps its history, demo.sqlite3 (default "
                          "./iotgw-data; it comes back on the next run)")  # fmt: skip
        demo.add_argument("--log-level", default="warning", help="debug | info | warning | error")
    return parser


def _add_unavailable(commands: Any, names: tuple[str, ...], reason: str) -> None:
    """Subcommands that cannot run in this installation: using one prints why and exits 1."""
    for name in names:
        sub = commands.add_parser(name, help=f"unavailable here ({reason})", add_help=False)
        sub.set_defaults(unavailable=f"{name} is unavailable in this installation: {reason}")


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", "-c", metavar="FILE", help="config.toml (default: built-in defaults)"
    )
    parser.add_argument("--broker", metavar="URL", help="broker URL, mqtt://host:port (broker.url)")
    parser.add_argument("--host", help="HTTP bind address (http.host)")
    parser.add_argument("--port", type=int, help="HTTP port (http.port)")
    parser.add_argument("--prefix", help="native topic prefix (conventions.native.prefix)")
    parser.add_argument("--log-level", help="debug | info | warning | error (log.level)")
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="text: human-readable lines; json: one JSON object per line (log.format)",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    """The config file, then IOTGW_* variables, then flags: each overrides the one before."""
    return load_config(
        args.config,
        overrides={
            "broker.url": args.broker,
            "http.host": args.host,
            "http.port": args.port,
            "conventions.native.prefix": args.prefix,
            "log.level": args.log_level,
            "log.format": args.log_format,
        },
    )


def run_until_signal(main: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
    """Run `main(stop)` on the best available event loop; SIGINT and SIGTERM set `stop`."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    # The loop is chosen first and run outside any `except`: run inside one, every exception
    # the gateway raised and logged carried the ImportError as its context ("No module named
    # 'uvloop'" at the end of each traceback).
    with asyncio.Runner(loop_factory=_loop_factory()) as loop_runner:
        loop_runner.run(runner())


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when it is installed (the `fast` extra), else None: asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _run(args: argparse.Namespace) -> int:
    config = with_instance_id(config_from_args(args))
    instance = config.cluster.instance_id
    # JSON lines always name the instance; text lines in a cluster, where lines of several
    # instances end up side by side.
    tagged = config.log.format == "json" or config.cluster.enabled
    configure_logging(config.log.level, config.log.format, instance if tagged else None)
    log.info(
        "iotgw %s, instance %s, broker %s", __version__, instance, redact_url(config.broker.url)
    )
    try:
        run_until_signal(lambda stop: serve(config, stop))
    except OSError as exc:
        raise GatewayError(_listen_error(exc, config.http.host, config.http.port)) from None
    return 0


_LISTEN_ERRORS = {
    errno.EADDRINUSE: "the port is in use (choose another with --port or http.port)",
    errno.EACCES: "permission denied (ports below 1024 need privileges)",
    errno.EADDRNOTAVAIL: "no such address on this machine (--host or http.host)",
}


def _listen_error(exc: OSError, host: str, port: int) -> str:
    """One line for an OSError out of the server, naming the address when it is a bind error."""
    reason = _LISTEN_ERRORS.get(exc.errno or 0)
    if reason is None:
        return str(exc)
    return f"cannot listen on {host}:{port}: {reason}"


def _demo(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, "text")
    if args.devices < 1 or args.rate <= 0:
        print("iotgw demo: --devices must be at least 1 and --rate above 0", file=sys.stderr)
        return 2
    options = DemoOptions(
        args.host, args.port, args.devices, args.rate, args.broker_port, args.broker,
        args.convention, args.data_dir,
    )  # fmt: skip
    run_until_signal(lambda stop: run_demo(options, stop))
    return 0


def _check_config(args: argparse.Namespace) -> int:
    load_config(args.file)
    print(f"{args.file}: ok")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "unavailable", None):  # whatever its arguments: say why it cannot run
        print(f"iotgw: {args.unavailable}", file=sys.stderr)
        return 1
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "run": _run,
        "check-config": _check_config,
        "demo": _demo,
        **_CLIENT_COMMANDS,
    }
    if args.command == "simulate":
        from simulators import cli as simulators_cli

        handlers["simulate"] = simulators_cli.run
    try:
        with contextlib.suppress(KeyboardInterrupt):
            return handlers[args.command](args)
        return 130
    except ConfigError as exc:
        print(f"iotgw: config error: {exc}", file=sys.stderr)
        return 2
    except GatewayError as exc:
        print(f"iotgw: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. the HTTP port is taken
        print(f"iotgw: {exc}", file=sys.stderr)
        return 1

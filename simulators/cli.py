"""`iotgw simulate` and `python -m simulators`: run a simulated fleet until Ctrl-C or --duration."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

from gateway.errors import ConfigError
from simulators.config import DEFAULT_TYPES, FleetConfig, mixed_groups
from simulators.devices import DEVICE_TYPES
from simulators.encoders import ALL, ENCODERS
from simulators.faults import FaultConfig, Share
from simulators.fleet import Fleet
from simulators.profile import load_profile

log = logging.getLogger("simulators")

# flag dest → FaultConfig field, for the fault flags that map one to one
_FAULT_FLAGS = {
    "drop": "drop", "drop_every": "drop_every_s", "drop_for": "drop_for_s",
    "malformed": "malformed", "malformed_ratio": "malformed_ratio",
    "oversize_bytes": "oversize_bytes", "burst": "burst", "burst_size": "burst_size",
    "burst_every": "burst_every_s", "skew": "skew", "skew_s": "skew_s",
    "ignore_commands": "ignore_commands",
}  # fmt: skip


def _share(text: str) -> Share:
    try:
        return Share.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _types(text: str) -> list[str]:
    types = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in types if t not in DEVICE_TYPES]
    if unknown or not types:
        raise argparse.ArgumentTypeError(
            f"unknown type {unknown[0] if unknown else text!r}; known: {', '.join(DEVICE_TYPES)}"
        )
    return types


def _delay_ms(text: str) -> tuple[float, float]:
    try:
        parts = [float(p) / 1000.0 for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected MS or LOW,HIGH in ms") from None
    if len(parts) not in (1, 2):
        raise argparse.ArgumentTypeError(f"{text!r}: expected MS or LOW,HIGH in ms")
    return parts[0], parts[-1]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's flags. Defaults are None so a --profile value is only overridden
    by flags the user actually gave."""
    parser.add_argument("--broker", help="mqtt://[user:pass@]host[:port] or mqtts://… "
                        "(default mqtt://127.0.0.1:1883)")  # fmt: skip
    parser.add_argument("--convention", choices=(*ENCODERS, ALL), help="the convention the "
                        "devices speak, or all of them in turn (default native); see "
                        "docs/simulators.md")  # fmt: skip
    parser.add_argument("--prefix", help="the convention's base topic (default: its own: iotgw, "
                        "zigbee2mqtt, homeassistant, homie; none for tasmota)")  # fmt: skip
    parser.add_argument("--profile", metavar="FILE", help="fleet profile (TOML), see "
                        "simulators/fleet.example.toml")  # fmt: skip
    parser.add_argument("--devices", type=int, metavar="N", help="number of devices, spread over "
                        "--types (default 10, or the profile's)")  # fmt: skip
    parser.add_argument("--types", type=_types, metavar="T,T", help="device types to mix "
                        f"(default all: {','.join(DEFAULT_TYPES)})")  # fmt: skip
    parser.add_argument("--rate", type=float, metavar="R", help="readings per second per device "
                        "(default 1)")  # fmt: skip
    parser.add_argument("--jitter", type=float, help="interval jitter, 0..1 (default 0.2)")
    parser.add_argument("--seed", type=int, help="random seed; the same seed gives the same fleet")
    parser.add_argument("--connections", "--multiplex", type=int, metavar="N",
                        help="share N MQTT connections among the devices (default 0: one "
                        "connection and last will per device); see docs/simulators.md")  # fmt: skip
    parser.add_argument("--qos", type=int, choices=(0, 1), help="telemetry QoS (default 0)")
    parser.add_argument("--result-delay-ms", type=_delay_ms, metavar="LOW[,HIGH]",
                        help="delay before a device answers a command (default 20,80)")  # fmt: skip
    parser.add_argument("--stop-mode", choices=("offline", "will"), help="on stop, devices "
                        "publish offline (default) or vanish so their wills fire")  # fmt: skip
    parser.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    out.add_argument("--progress", action="store_true", help="print the live rate line even "
                     "when stdout is not a terminal")  # fmt: skip

    faults = parser.add_argument_group(
        "fault injection",
        "SHARE is a device count (3) or a fraction of the fleet (0.1 or 10%).",
    )
    faults.add_argument("--drop", type=_share, metavar="SHARE", help="devices that drop their "
                        "connection abruptly (will fires) and reconnect")  # fmt: skip
    faults.add_argument("--drop-every", type=float, metavar="S", help="mean seconds between "
                        "drops (default 30)")  # fmt: skip
    faults.add_argument("--drop-for", type=float, metavar="S", help="seconds offline per drop "
                        "(default 5)")  # fmt: skip
    faults.add_argument("--malformed", type=_share, metavar="SHARE", help="devices that send "
                        "broken JSON, wrong types, NaN or oversize payloads")  # fmt: skip
    faults.add_argument("--malformed-ratio", type=float, metavar="P", help="share of their "
                        "messages that are malformed (default 0.2)")  # fmt: skip
    faults.add_argument("--oversize-bytes", type=int, metavar="B", help="size of oversize "
                        "payloads (default 300000)")  # fmt: skip
    faults.add_argument("--burst", type=_share, metavar="SHARE", help="devices that send "
                        "bursts of readings back to back")  # fmt: skip
    faults.add_argument("--burst-size", type=int, metavar="N", help="readings per burst "
                        "(default 50)")  # fmt: skip
    faults.add_argument("--burst-every", type=float, metavar="S", help="mean seconds between "
                        "bursts (default 10)")  # fmt: skip
    faults.add_argument("--skew", type=_share, metavar="SHARE", help="devices whose clock is "
                        "off by ±--skew-s")  # fmt: skip
    faults.add_argument("--skew-s", type=float, metavar="S", help="clock skew (default 300)")
    faults.add_argument("--ignore-commands", type=_share, metavar="SHARE", help="devices that "
                        "never answer commands (to test timeouts)")  # fmt: skip


def config_from_args(args: argparse.Namespace) -> FleetConfig:
    """Defaults, then the profile, then the flags given; raise ConfigError on a bad value."""
    settings: dict[str, Any] = load_profile(args.profile) if args.profile else {}
    keys = ("broker", "convention", "prefix", "rate", "jitter", "seed", "connections", "qos")
    for key in (*keys, "stop_mode"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    if args.result_delay_ms is not None:
        settings["result_delay_s"] = args.result_delay_ms
    if args.devices is not None or args.types is not None or "groups" not in settings:
        count = args.devices if args.devices is not None else 10
        settings["groups"] = mixed_groups(count, args.types or DEFAULT_TYPES)
    fault_flags = {
        field: getattr(args, dest)
        for dest, field in _FAULT_FLAGS.items()
        if getattr(args, dest) is not None
    }
    if fault_flags:
        base = settings.get("faults", FaultConfig())
        settings["faults"] = FaultConfig(**{**_fields(base), **fault_flags})
    return FleetConfig(**settings)


def _fields(faults: FaultConfig) -> dict[str, Any]:
    return {name: getattr(faults, name) for name in FaultConfig.__dataclass_fields__}


def run(args: argparse.Namespace) -> int:
    """Run the fleet until SIGINT/SIGTERM or --duration; 0 on a clean stop, 2 on bad config."""
    try:
        config = config_from_args(args)
    except (ConfigError, ValueError) as exc:
        print(f"iotgw simulate: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return asyncio.run(_main(config, args))


async def _main(config: FleetConfig, args: argparse.Namespace) -> int:
    live = not args.quiet and (args.progress or sys.stdout.isatty())
    fleet = Fleet(config, report_to=sys.stdout if live else None)
    if not args.quiet:
        print(
            f"simulating {config.devices} {config.convention} devices on {config.broker}"
            f"{f' under {config.base}/' if config.base else ''} "
            f"(seed {fleet.seed}); Ctrl-C stops",
            flush=True,
        )
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    signals = 0

    def on_signal() -> None:
        # The first signal stops cleanly; a second one means "now", for a broker that hangs.
        nonlocal signals
        signals += 1
        if signals == 1:
            fleet.stop()
        elif main is not None:
            main.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        stats = await fleet.run(args.duration)
    except asyncio.CancelledError:
        return 130
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    if not args.quiet:
        print(
            f"stopped: {stats.messages:,} readings sent, {stats.commands_answered} commands "
            f"answered, {stats.drops} drops, {stats.malformed} malformed"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulators", description=__doc__)
    configure_parser(parser)
    return run(parser.parse_args(argv))

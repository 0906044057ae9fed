"""FleetConfig: everything a fleet needs to run, validated once; libraries raise, the CLI exits."""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote, urlsplit

from gateway.errors import ConfigError
from gateway.names import is_device_id
from simulators.devices import DEVICE_TYPES
from simulators.encoders import ALL, ENCODERS
from simulators.faults import FaultConfig

StopMode = Literal["offline", "will"]
DEFAULT_TYPES = tuple(DEVICE_TYPES)


@dataclass(frozen=True, slots=True)
class Broker:
    """Where to connect: `mqtt://[user:pass@]host[:port]`, or `mqtts://` for TLS (port 8883)."""

    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> Broker:
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        if parts.scheme not in ("mqtt", "tcp", "mqtts", "ssl"):
            raise ConfigError(
                "broker", f"scheme must be mqtt:// or mqtts://, not {parts.scheme}://"
            )
        tls = parts.scheme in ("mqtts", "ssl")
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError:
            raise ConfigError("broker", f"bad port in {url!r}") from None
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=port,
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    def tls_context(self) -> ssl.SSLContext | None:
        return ssl.create_default_context() if self.tls else None


@dataclass(frozen=True, slots=True)
class DeviceGroup:
    """`count` devices of one type; ids are `<stem>-1`, `<stem>-2`, … unless `ids` names them."""

    type: str
    count: int
    rate: float | None = None  # readings per second per device; None: the fleet's rate
    stem: str | None = None  # id stem; None: the type's own (thermo, env, …)
    names: tuple[str, ...] = ()  # display names, used in order; generated when exhausted

    def __post_init__(self) -> None:
        if self.type not in DEVICE_TYPES:
            known = ", ".join(DEVICE_TYPES)
            raise ConfigError("device.type", f"unknown type {self.type!r}; known: {known}")
        if self.count < 0:
            raise ConfigError("device.count", "must be ≥ 0")
        if self.rate is not None and self.rate < 0:
            raise ConfigError("device.rate", "must be ≥ 0")
        if self.stem is not None and not is_device_id(f"{self.stem}-1"):
            raise ConfigError("device.stem", f"{self.stem!r} does not make valid device ids")


def mixed_groups(devices: int, types: Sequence[str] = DEFAULT_TYPES) -> tuple[DeviceGroup, ...]:
    """`devices` spread over `types` as evenly as possible, earlier types getting the remainder."""
    if not types:
        raise ConfigError("types", "at least one device type is needed")
    share, extra = divmod(devices, len(types))
    return tuple(
        DeviceGroup(kind, share + (1 if i < extra else 0))
        for i, kind in enumerate(types)
        if share + (1 if i < extra else 0)
    )


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """A fleet: which devices, how fast, on which broker, with which faults."""

    broker: str = "mqtt://127.0.0.1:1883"
    #: the convention the devices speak: native, zigbee2mqtt, tasmota, homeassistant, homie,
    #: shelly, sparkplug, or `all` (a mixed fleet: devices take the conventions in turn)
    convention: str = "native"
    #: the convention's base topic; None: its default (iotgw, zigbee2mqtt, none for Tasmota, …)
    prefix: str | None = None
    groups: tuple[DeviceGroup, ...] = field(default_factory=lambda: mixed_groups(10))
    rate: float = 1.0  # readings per second per device
    jitter: float = 0.2  # each interval is scaled by uniform(1 - jitter, 1 + jitter)
    seed: int | None = None  # None: random, reported in Fleet.seed so a run can be repeated
    # 0: one MQTT connection (and last will) per device; N: devices share N connections.
    connections: int = 0
    qos: Literal[0, 1] = 0  # for telemetry; status, meta and results always use QoS 1
    result_delay_s: tuple[float, float] = (0.02, 0.08)  # uniform delay before answering a command
    stop_mode: StopMode = "offline"
    faults: FaultConfig = field(default_factory=FaultConfig)
    keepalive_s: int = 30
    reconnect_max_s: float = 10.0

    def __post_init__(self) -> None:
        Broker.parse(self.broker)
        if self.convention not in ENCODERS and self.convention != ALL:
            known = ", ".join([*ENCODERS, ALL])
            raise ConfigError("convention", f"unknown {self.convention!r}; known: {known}")
        prefix = self.prefix
        if prefix is not None and (
            not prefix or any(c in prefix for c in "+#\0") or prefix.strip("/") != prefix
        ):
            raise ConfigError("prefix", f"{prefix!r} is not a usable topic prefix")
        if self.rate < 0:
            raise ConfigError("rate", "must be ≥ 0")
        if not 0 <= self.jitter < 1:
            raise ConfigError("jitter", "must be in [0, 1)")
        if self.connections < 0:
            raise ConfigError("connections", "must be ≥ 0")
        low, high = self.result_delay_s
        if not 0 <= low <= high:
            raise ConfigError("result_delay_s", "must be (low, high) with 0 ≤ low ≤ high")
        if self.stop_mode not in ("offline", "will"):
            raise ConfigError("stop_mode", "must be offline or will")
        if self.qos not in (0, 1):
            raise ConfigError("qos", "must be 0 or 1")

    @property
    def conventions(self) -> tuple[str, ...]:
        """The conventions the fleet speaks: one, or every one (`all`), in ENCODERS' order."""
        return tuple(ENCODERS) if self.convention == ALL else (self.convention,)

    @property
    def base(self) -> str:
        """The base topic in use: `prefix`, or the convention's default (a mixed fleet: the
        prefix, or none)."""
        if self.convention == ALL:
            return self.prefix or ""
        return self.base_for(self.convention)

    def base_for(self, convention: str) -> str:
        """One convention's base topic: `prefix` (a mixed fleet: `<prefix>-<convention>`, so the
        native prefix cannot swallow the others' topics), or the convention's default."""
        if self.prefix is None:
            return ENCODERS[convention].default_base
        return self.prefix if self.convention != ALL else f"{self.prefix}-{convention}"

    @property
    def devices(self) -> int:
        return sum(group.count for group in self.groups)

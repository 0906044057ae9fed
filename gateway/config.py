"""One typed configuration object, read from TOML, then environment, then CLI flags.

Every section is a frozen, slotted dataclass whose field names are the TOML keys. Unknown keys and
wrong types are errors that name the full key path (`ws.batch_interval_ms: expected a number`).
Environment overrides use `IOTGW_<SECTION>__<KEY>` (e.g. `IOTGW_BROKER__URL`,
`IOTGW_CONVENTIONS__NATIVE__PREFIX`); their values are parsed as TOML values when they parse,
else taken as strings, so `IOTGW_HTTP__PORT=9000` and `IOTGW_BROKER__URL=mqtt://h` both work.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway.errors import ConfigError

if typing.TYPE_CHECKING:
    from _typeshed import DataclassInstance

ENV_PREFIX = "IOTGW_"
#: An http.allowed_hosts entry: a host name, with a leading dot for the names under it too.
_HOST_ENTRY = re.compile(r"\.?[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?")
T = typing.TypeVar("T", bound="DataclassInstance")


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    url: str = "mqtt://127.0.0.1:1883"  # mqtt://host:port, or mqtts:// for TLS
    client_id: str = ""  # empty: "iotgw-" plus a random suffix
    # Keep the MQTT session across reconnects and restarts (clean_session=false): the broker
    # queues QoS 1 messages while the gateway is away. Needs a fixed client_id and qos = 1.
    persistent_session: bool = False
    username: str = ""
    password: str = ""
    password_env: str = ""  # name of an environment variable holding the password
    keepalive_s: int = 30
    qos: int = 1  # subscription QoS
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    publish_timeout_s: float = 5.0  # waiting for the PUBACK of a command
    # After each connect: how long to wait for the broker's retained messages (meta, status) to
    # arrive before serving snapshots and answering /readyz anyway (docs/operations.md).
    sync_timeout_s: float = 60.0
    max_payload_bytes: int = 65536  # larger messages are refused before parsing
    # Read the broker's socket with gateway/mqtt_reader.py (uses paho/aiomqtt internals, fenced
    # by gateway/paho_compat.py); false: aiomqtt's public message iterator (docs/operations.md).
    fast_reader: bool = True

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"


@dataclass(frozen=True, slots=True)
class NativeConventionConfig:
    enabled: bool = True
    prefix: str = "iotgw"


@dataclass(frozen=True, slots=True)
class Zigbee2MqttConfig:
    enabled: bool = False
    base_topic: str = "zigbee2mqtt"  # Zigbee2MQTT's mqtt.base_topic


@dataclass(frozen=True, slots=True)
class TasmotaConfig:
    enabled: bool = False
    full_topic: str = "%prefix%/%topic%/"  # Tasmota's FullTopic (%prefix% and %topic% once each)
    prefix_tele: str = "tele"  # Tasmota's Prefix3
    prefix_stat: str = "stat"  # Prefix2
    prefix_cmnd: str = "cmnd"  # Prefix1


@dataclass(frozen=True, slots=True)
class HomeAssistantConfig:
    enabled: bool = False
    discovery_prefix: str = "homeassistant"
    # Topics outside the discovery prefix that discovery configs may name (state, availability,
    # command), as MQTT filters; never another convention's or the gateway's (docs/security.md).
    allowed_topics: list[str] = field(default_factory=list)
    # Devices another enabled convention already reads (Zigbee2MQTT's and Tasmota's own Home
    # Assistant discovery): "suppress" them here (shown once, by that convention), or "show" them
    # again as ha.* devices whose topics stay refused (bad_topic).
    duplicates: str = "suppress"


@dataclass(frozen=True, slots=True)
class HomieConfig:
    enabled: bool = False
    base_topic: str = "homie"  # v5 devices live under <base_topic>/5/


@dataclass(frozen=True, slots=True)
class ShellyConfig:
    enabled: bool = False
    # Devices whose MQTT topic prefix starts with this are read (Shelly's default prefix is the
    # device id, `shellyplus1pm-a8032ab636ec`): the first level of their topics.
    id_prefix: str = "shelly"
    # The `src` of the gateway's RPC requests: devices answer on `<rpc_src>/rpc`.
    rpc_src: str = "iotgw-shelly"
    # Empty: device prefixes are first levels. Else the level(s) above every device's prefix
    # (topic prefixes like `home/shellyplus1pm-…`): everything under <base_topic>/+ is Shelly's.
    base_topic: str = ""


@dataclass(frozen=True, slots=True)
class SparkplugConfig:
    enabled: bool = False
    # At most one rebirth request (NCMD Node Control/Rebirth) per edge node this often, seconds.
    rebirth_interval_s: float = 10.0


@dataclass(frozen=True, slots=True)
class ConventionsConfig:
    native: NativeConventionConfig = field(default_factory=NativeConventionConfig)
    zigbee2mqtt: Zigbee2MqttConfig = field(default_factory=Zigbee2MqttConfig)
    tasmota: TasmotaConfig = field(default_factory=TasmotaConfig)
    homie: HomieConfig = field(default_factory=HomieConfig)
    shelly: ShellyConfig = field(default_factory=ShellyConfig)
    sparkplug: SparkplugConfig = field(default_factory=SparkplugConfig)
    homeassistant: HomeAssistantConfig = field(default_factory=HomeAssistantConfig)


@dataclass(frozen=True, slots=True)
class HttpConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    tls_cert_file: str = ""  # serve https:// and wss:// (or terminate TLS in a reverse proxy)
    tls_key_file: str = ""
    # Host names the gateway answers to besides any IP address, localhost (and names under it),
    # `host` and the machine's host name: a reverse proxy's public name (docs/security.md).
    # "name", ".name" (it and every name under it), or "*" (any: no DNS-rebinding guard).
    allowed_hosts: list[str] = field(default_factory=list)
    # GET /metrics requires `Authorization: Bearer <this>` when set (empty: open to anyone who
    # can reach the port); metrics_token_env names an environment variable holding it instead.
    metrics_token: str = ""
    metrics_token_env: str = ""

    def metrics_secret(self) -> str:
        if self.metrics_token_env:
            return os.environ.get(self.metrics_token_env, "")
        return self.metrics_token


@dataclass(frozen=True, slots=True)
class WsConfig:
    batch_interval_ms: float = 5.0  # a batch under load is flushed at least this often...
    # ...stretched by 0.1 ms per connected client up to this: every frame costs once per client,
    # so many clients want fewer, larger frames (docs/performance.md).
    batch_interval_max_ms: float = 20.0
    batch_max_readings: int = 2000  # ...or as soon as it holds this many readings
    outbox_max_bytes: int = 1_048_576  # per client; past this, readings are coalesced
    slow_client_timeout_s: float = 10.0  # coalescing this long without catching up: close 4000
    send_timeout_s: float = 10.0  # one send blocked this long: the transport is aborted
    # The kernel's send buffer per connection (SO_SNDBUF; 0: the OS default, which Linux grows to
    # tcp_wmem's 4 MB). Bounded, a client that falls behind reaches the outbox, coalescing and
    # 4000 after ~0.5 MB instead of ~4 MB, and 10,000 connections cannot pin 40 GB of kernel memory.
    send_buffer_bytes: int = 262144
    heartbeat_s: float = 20.0
    max_message_bytes: int = 65536  # client frames; larger ones close the connection with 1009
    max_subscriptions: int = 32
    # Requests that build a large reply, per connection: past the rate (with bursts up to the
    # burst) the connection is closed with 4001. Every frame also counts against outbox_max_bytes.
    subscribe_rate: float = 5.0  # subscribes per second, on average...
    subscribe_burst: int = 64  # ...with bursts up to this (a reconnect re-sends every subscribe)
    history_rate: float = 20.0  # history requests per second, on average...
    history_burst: int = 200  # ...with bursts up to this (a chart per metric of a device)
    compress: bool = False  # permessage-deflate
    # Write uncompressed frames straight to the transport when it can take them (fenced by
    # gateway/ws_socket.py); false: aiohttp's public send_frame and ping (docs/operations.md).
    fast_writer: bool = True
    resume_buffer_bytes: int = 262144  # readings kept per connection for a resume after reconnect
    resume_window_s: float = 30.0  # how long a dropped connection's stream waits to be resumed
    max_parked: int = 1000  # dropped connections' streams kept at once for resuming
    max_connections: int = 10000  # WebSocket connections in all; more are refused with 503
    max_connections_per_token: int = 1000  # per auth token (or for all anonymous clients)
    # Connections that have not sent their `auth` frame yet, per remote address (they count
    # against no token until they do); more are refused with 429.
    max_unauthenticated_per_address: int = 16
    connect_rate: float = 200.0  # new WebSocket connections per second, on average...
    connect_burst: int = 400  # ...with bursts up to this; more are refused with 429


@dataclass(frozen=True, slots=True)
class RegistryConfig:
    max_devices: int = 10000
    max_metrics_per_device: int = 64
    history_length: int = 1000  # points kept per (device, metric)
    stale_after_s: float = 120.0  # online but silent this long: shown as stale
    # Silent this long (no reading, no status): forgotten, as if removed; 0 never forgets.
    forget_after_s: float = 0.0


@dataclass(frozen=True, slots=True)
class CommandsConfig:
    default_timeout_ms: int = 5000
    max_timeout_ms: int = 60000
    max_in_flight_per_client: int = 16
    rate_per_client: float = 20.0  # commands per second per connection, on average...
    burst_per_client: int = 40  # ...with bursts up to this; more get error rate_limited
    # Per token (all clients without a token are one principal, "anonymous") and per client
    # address, WebSocket and REST together; more get rate_limited (REST: 429 with Retry-After).
    rate_per_principal: float = 100.0
    burst_per_principal: int = 200
    rate_per_address: float = 50.0
    burst_per_address: int = 100
    max_pending: int = 1000  # commands awaiting their outcome, in all; more get too_many (503)


@dataclass(frozen=True, slots=True)
class TokenConfig:
    token: str = ""
    token_env: str = ""  # read the token from this environment variable instead
    name: str = ""  # shown in logs instead of the token
    read: list[str] = field(default_factory=lambda: ["*"])  # device globs it may read
    command: list[str] = field(default_factory=list)  # device globs it may command
    admin: bool = False  # may also forget devices (DELETE /api/devices/{id})

    def secret(self) -> str:
        return os.environ.get(self.token_env, "") if self.token_env else self.token


@dataclass(frozen=True, slots=True)
class AuthConfig:
    tokens: list[TokenConfig] = field(default_factory=list)  # empty: no authentication
    allowed_origins: list[str] = field(default_factory=list)  # empty: same host only
    auth_timeout_s: float = 5.0  # a connection that has not authenticated by then: closed 4500


@dataclass(frozen=True, slots=True)
class HistoryConfig:
    backend: str = "sqlite"  # sqlite | postgres | memory (docs/operations.md#history)
    # SQLite: the file is `path`, or <data_dir>/history.sqlite3; relative paths are taken from
    # the working directory the gateway was started in.
    data_dir: str = "iotgw-data"
    path: str = ""
    dsn: str = ""  # postgres: postgresql://user@host:5432/db (a password: prefer dsn_env)
    dsn_env: str = ""  # name of an environment variable holding the DSN
    commit_interval_s: float = 1.0  # queued points are committed at least this often...
    batch_points: int = 50000  # ...or as soon as this many are queued
    queue_points: int = 200000  # points waiting for the writer; past this they are dropped
    raw_retention_days: float = 10.0
    minute_rollup_retention_days: float = 30.0  # the 1-minute min/max/avg/count...
    rollup_retention_days: float = 365.0  # ...and the 1-hour ones
    audit_retention_days: float = 365.0
    purge_interval_s: float = 60.0  # how often the retention job runs...
    purge_batch: int = 5000  # ...deleting at most this many rows per step between commits
    restore_points: int = 200000  # recent points put back into memory at start, over all series
    audit_queue: int = 10000  # audit records waiting for the writer; past this they are dropped

    def postgres_dsn(self) -> str:
        return os.environ.get(self.dsn_env, "") if self.dsn_env else self.dsn

    def sqlite_path(self) -> Path:
        return Path(self.path) if self.path else Path(self.data_dir) / "history.sqlite3"


@dataclass(frozen=True, slots=True)
class DashboardConfig:
    # Map tiles under the track of devices that report a position. Empty (the default): the page
    # draws the track on a plain coordinate plot and loads nothing from anywhere but the gateway.
    # Set: an http(s) URL template with {z}, {x} and {y}, e.g.
    # "https://tile.openstreetmap.org/{z}/{x}/{y}.png"; the page's Content-Security-Policy then
    # allows images from that origin, and from no other (docs/security.md).
    map_tiles: str = ""
    map_attribution: str = ""  # plain text under the map, as the tile server's terms require

    def map_tiles_origin(self) -> str:
        """scheme://host[:port] of map_tiles ("" when unset); validate() has checked it."""
        if not self.map_tiles:
            return ""
        parts = urlsplit(self.map_tiles)
        return f"{parts.scheme}://{parts.netloc}".lower()


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """Several instances behind a load balancer, sharing one broker and one PostgreSQL history
    (docs/scaling.md, docs/operations.md#cluster)."""

    enabled: bool = False
    # Names this process in logs, hello, /healthz, /metrics, audit rows and command ids; empty:
    # the host name plus a random suffix, new on every start. Letters, digits, `_ . -`.
    instance_id: str = ""
    # The MQTT shared-subscription group ($share/<group>/...) through which the broker hands
    # each message to one instance, the one that stores its readings.
    writer_group: str = "iotgw-history"
    # How long a message waits for its other copy (main link / writer link) before it is given
    # up: a claim left alone is counted as lost (iotgw_cluster_claims_unmatched_total).
    claim_window_s: float = 2.0
    heartbeat_s: float = 2.0  # membership row in PostgreSQL; 3 missed: the member is lost
    # On SIGTERM: /readyz answers 503 this long before the listener closes, for load balancers
    # that poll it (nginx does not: 0 is right behind nginx).
    drain_s: float = 0.0
    # The broker's per-client in-flight window (Mosquitto's max_inflight_messages): messages a
    # member killed with -9 may have lost, part of the bound the survivors log.
    broker_inflight: int = 20


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "info"
    format: str = "text"  # text | json


@dataclass(frozen=True, slots=True)
class Config:
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    conventions: ConventionsConfig = field(default_factory=ConventionsConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    ws: WsConfig = field(default_factory=WsConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    commands: CommandsConfig = field(default_factory=CommandsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    history: HistoryConfig = field(default_factory=HistoryConfig)
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    log: LogConfig = field(default_factory=LogConfig)


def load_config(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Read `path` (if any), apply `IOTGW_*` variables from `env`, then dotted `overrides`."""
    data = read_toml(path) if path is not None else {}
    for key, value in _env_overrides(os.environ if env is None else env).items():
        _set_dotted(data, key, value)
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(data, key, value)
    config = build(Config, data, "")
    validate(config)
    return config


def read_toml(path: str | Path) -> dict[str, Any]:
    """The top-level table of a TOML file; ConfigError naming the file if it cannot be read."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(str(path), exc.strerror or str(exc)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from None


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        key = name[len(ENV_PREFIX) :].lower().replace("__", ".")
        found[key] = EnvValue(raw)
    return found


class EnvValue(str):
    """A value from the environment: taken as the string it is for string keys, and parsed as a
    TOML value (`9000`, `true`, `["a", "b"]`) for every other type."""

    def parsed(self) -> Any:
        try:
            return tomllib.loads(f"v = {self}")["v"]
        except tomllib.TOMLDecodeError:
            return str(self)


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(dotted, f"{part} is not a table")
    node[leaf] = value


def build(cls: type[T], data: object, path: str) -> T:
    """Construct dataclass `cls` from TOML data, naming the key path of anything wrong.

    Field types: bool, int, float, str, list[X], nested dataclasses, `X | None` (None is only
    ever a default: TOML has no null), and classes with a `from_toml(value)` classmethod, which
    parse their own values and raise ValueError for a bad one.
    """
    if not isinstance(data, dict):
        raise ConfigError(path or "config", "expected a table")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            where = f"{path}.{key}" if path else key
            raise ConfigError(where, f"unknown key (known: {', '.join(sorted(known))})")
    values = {
        key: _coerce(hints[key], value, f"{path}.{key}" if path else key)
        for key, value in data.items()
    }
    return cls(**values)


def _coerce(hint: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        present = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(present) != 1:
            raise AssertionError(f"only `X | None` unions are supported: {path}")
        hint, origin = present[0], typing.get_origin(present[0])
    if isinstance(value, EnvValue):
        value = str(value) if hint is str else value.parsed()
    from_toml = getattr(hint, "from_toml", None)
    if from_toml is not None:
        try:
            return from_toml(value)
        except ValueError as exc:
            raise ConfigError(path, str(exc)) from None
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return build(hint, value, path)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(path, "expected a list")
        return [_coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, "expected true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, "expected an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(path, "expected a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(path, "expected a string")
        return value
    raise AssertionError(f"unsupported config type {hint!r} at {path}")


def validate(config: Config) -> None:
    """Checks that span more than a type: ranges, URL schemes, files that must exist."""
    broker = config.broker
    parts = urlsplit(broker.url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ConfigError("broker.url", "expected mqtt://host[:port] or mqtts://host[:port]")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise ConfigError("broker.url", "port out of range") from None
    if broker.qos not in (0, 1, 2):
        raise ConfigError("broker.qos", "expected 0, 1 or 2")
    if broker.persistent_session and not broker.client_id:
        raise ConfigError("broker.client_id", "a persistent session needs a fixed client_id")
    if broker.persistent_session and broker.qos == 0:
        raise ConfigError("broker.qos", "a persistent session queues QoS 1 or 2 only")
    files = {
        f"broker.{k}": getattr(broker, k) for k in ("tls_ca_file", "tls_cert_file", "tls_key_file")
    }
    files |= {f"http.{k}": getattr(config.http, k) for k in ("tls_cert_file", "tls_key_file")}
    for key, file in files.items():
        if file and not Path(file).is_file():
            raise ConfigError(key, f"no such file: {file}")
    if bool(config.http.tls_cert_file) != bool(config.http.tls_key_file):
        raise ConfigError(
            "http.tls_key_file", "set both tls_cert_file and tls_key_file, or neither"
        )
    if broker.reconnect_min_s <= 0 or broker.reconnect_max_s < broker.reconnect_min_s:
        raise ConfigError("broker.reconnect_max_s", "need 0 < reconnect_min_s <= reconnect_max_s")
    positive = {
        "broker.keepalive_s": broker.keepalive_s,
        "broker.max_payload_bytes": broker.max_payload_bytes,
        "broker.sync_timeout_s": broker.sync_timeout_s,
        "http.port": config.http.port,
        "ws.batch_interval_ms": config.ws.batch_interval_ms,
        "ws.batch_interval_max_ms": config.ws.batch_interval_max_ms,
        "ws.batch_max_readings": config.ws.batch_max_readings,
        "ws.outbox_max_bytes": config.ws.outbox_max_bytes,
        "ws.max_message_bytes": config.ws.max_message_bytes,
        "ws.max_subscriptions": config.ws.max_subscriptions,
        "ws.max_connections": config.ws.max_connections,
        "ws.max_connections_per_token": config.ws.max_connections_per_token,
        "ws.max_unauthenticated_per_address": config.ws.max_unauthenticated_per_address,
        "auth.auth_timeout_s": config.auth.auth_timeout_s,
        "ws.subscribe_rate": config.ws.subscribe_rate,
        "ws.subscribe_burst": config.ws.subscribe_burst,
        "ws.history_rate": config.ws.history_rate,
        "ws.history_burst": config.ws.history_burst,
        "registry.max_devices": config.registry.max_devices,
        "registry.max_metrics_per_device": config.registry.max_metrics_per_device,
        "registry.history_length": config.registry.history_length,
        "commands.default_timeout_ms": config.commands.default_timeout_ms,
        "commands.max_in_flight_per_client": config.commands.max_in_flight_per_client,
        "commands.rate_per_principal": config.commands.rate_per_principal,
        "commands.burst_per_principal": config.commands.burst_per_principal,
        "commands.rate_per_address": config.commands.rate_per_address,
        "commands.burst_per_address": config.commands.burst_per_address,
        "commands.max_pending": config.commands.max_pending,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(key, "must be greater than 0")
    if config.registry.forget_after_s < 0:
        raise ConfigError("registry.forget_after_s", "must be 0 (never) or more")
    if config.ws.send_buffer_bytes < 0:
        raise ConfigError("ws.send_buffer_bytes", "must be 0 (the OS default) or more")
    if config.http.port > 65535:
        raise ConfigError("http.port", "must be at most 65535")
    if config.log.format not in ("text", "json"):
        raise ConfigError("log.format", "expected text or json")
    if config.log.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("log.level", "expected debug, info, warning or error")
    for i, name in enumerate(config.http.allowed_hosts):
        if name != "*" and not _HOST_ENTRY.fullmatch(name):
            raise ConfigError(
                f"http.allowed_hosts[{i}]",
                "expected a host name without scheme or port (gw.example, .example.org or *)",
            )
    if config.http.metrics_token_env and not config.http.metrics_secret():
        raise ConfigError(
            "http.metrics_token_env",
            f"environment variable {config.http.metrics_token_env} is empty",
        )
    for i, token in enumerate(config.auth.tokens):
        if not token.secret():
            source = f"environment variable {token.token_env}" if token.token_env else "token"
            raise ConfigError(f"auth.tokens[{i}]", f"{source} is empty")
    _validate_history(config.history)
    if config.conventions.homeassistant.duplicates not in ("suppress", "show"):
        raise ConfigError("conventions.homeassistant.duplicates", "expected suppress or show")
    _validate_dashboard(config.dashboard)
    _validate_cluster(config.cluster, config.history)
    prefix = config.conventions.native.prefix
    if not prefix or any(c in prefix for c in "+#\x00") or prefix.startswith("/"):
        raise ConfigError("conventions.native.prefix", "must be a topic without wildcards")


HISTORY_BACKENDS = ("sqlite", "postgres", "memory")
#: The host[:port] of a map tile URL: it goes into a Content-Security-Policy header verbatim.
_TILE_NETLOC = re.compile(
    r"([A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?"  # a name or [IPv6]
)


def _validate_dashboard(dashboard: DashboardConfig) -> None:
    if dashboard.map_tiles:
        parts = urlsplit(dashboard.map_tiles)
        if parts.scheme not in ("http", "https") or not _TILE_NETLOC.fullmatch(parts.netloc):
            raise ConfigError(
                "dashboard.map_tiles", "expected http(s)://host[:port]/…{z}/{x}/{y}… (no user)"
            )
        placeholders = re.findall(r"\{[^}]*\}", dashboard.map_tiles)
        if sorted(placeholders) != ["{x}", "{y}", "{z}"]:
            raise ConfigError(
                "dashboard.map_tiles", "needs {z}, {x} and {y} once each, and no other {…}"
            )
    if len(dashboard.map_attribution) > 300:
        raise ConfigError("dashboard.map_attribution", "at most 300 characters")
    if not dashboard.map_tiles and dashboard.map_attribution:
        raise ConfigError("dashboard.map_attribution", "set with dashboard.map_tiles only")


#: An instance id: it becomes part of command ids (at most 64 characters on the wire), MQTT
#: client ids and log lines, so it is short and plain.
INSTANCE_ID_MAX = 40
INSTANCE_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{INSTANCE_ID_MAX - 1}}}")
_GROUP = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _validate_cluster(cluster: ClusterConfig, history: HistoryConfig) -> None:
    if cluster.instance_id and not INSTANCE_ID.fullmatch(cluster.instance_id):
        raise ConfigError(
            "cluster.instance_id",
            "1 to 40 of A-Z a-z 0-9 _ . -, starting with a letter or digit (or empty)",
        )
    if not _GROUP.fullmatch(cluster.writer_group):
        raise ConfigError("cluster.writer_group", "1 to 64 of A-Z a-z 0-9 _ . -")
    for key in ("claim_window_s", "heartbeat_s", "broker_inflight"):
        if getattr(cluster, key) <= 0:
            raise ConfigError(f"cluster.{key}", "must be greater than 0")
    if cluster.drain_s < 0:
        raise ConfigError("cluster.drain_s", "must be 0 (close at once) or more")
    if cluster.enabled and history.backend == "sqlite":
        raise ConfigError(
            "history.backend",
            "a cluster shares one history: postgres (or memory: no durable history)",
        )


def _validate_history(history: HistoryConfig) -> None:
    if history.backend not in HISTORY_BACKENDS:
        raise ConfigError("history.backend", f"expected one of {', '.join(HISTORY_BACKENDS)}")
    if history.backend == "sqlite" and not (history.path or history.data_dir):
        raise ConfigError("history.data_dir", "set data_dir or path for the sqlite backend")
    if history.backend == "postgres":
        if history.dsn and history.dsn_env:
            raise ConfigError("history.dsn_env", "set dsn or dsn_env, not both")
        if not history.postgres_dsn():
            source = f"environment variable {history.dsn_env}" if history.dsn_env else "history.dsn"
            raise ConfigError(
                "history.dsn", f"the postgres backend needs a DSN ({source} is empty)"
            )
        if urlsplit(history.postgres_dsn()).scheme not in ("postgres", "postgresql"):
            raise ConfigError("history.dsn", "expected postgresql://[user@]host[:port]/database")
    positive = {
        "commit_interval_s": history.commit_interval_s,
        "batch_points": history.batch_points,
        "queue_points": history.queue_points,
        "raw_retention_days": history.raw_retention_days,
        "minute_rollup_retention_days": history.minute_rollup_retention_days,
        "rollup_retention_days": history.rollup_retention_days,
        "audit_retention_days": history.audit_retention_days,
        "purge_interval_s": history.purge_interval_s,
        "purge_batch": history.purge_batch,
        "audit_queue": history.audit_queue,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"history.{key}", "must be greater than 0")
    if history.restore_points < 0:
        raise ConfigError("history.restore_points", "must be 0 (restore nothing) or more")
    if history.batch_points > history.queue_points:
        raise ConfigError("history.batch_points", "must be at most history.queue_points")

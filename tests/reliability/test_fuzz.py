"""Hypothesis against the edges where untrusted text enters: client frames, device payloads and
topics, device ids. Only the gateway's own refusals (ProtocolError, DecodeError, CommandError)
may come out, and whatever is accepted must already satisfy the allow-lists.
"""

from __future__ import annotations

import asyncio
import contextlib
import string
from typing import Any
from urllib.parse import quote

import aiomqtt
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import ConventionsConfig, load_config
from gateway.conventions import build_conventions
from gateway.conventions.common import MAX_DEPTH, is_publish_topic, is_value, scoped_id
from gateway.errors import CommandError, DecodeError, ProtocolError
from gateway.meta import validate_params
from gateway.models import (
    CommandResult,
    MetaChange,
    Rejected,
    Removed,
    StatusChange,
    Subscribe,
    Telemetry,
    Unsubscribe,
)
from gateway.names import (
    DEVICE_ID_MAX,
    is_command_name,
    is_device_id,
    is_metric_name,
    slugify,
)
from gateway.protocol import Command, History, parse_request
from tests.support.devices import tolerant_client
from tests.support.gateway import announced, wait_for_device
from tests.support.params import fitting_params

FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,  # nothing written to .hypothesis/ from CI runs
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- strategies ---------------------------------------------------------------------------------

HOSTILE_TEXT = st.sampled_from(
    [
        "",
        "+",
        "#",
        "/",
        "a/b",
        "a+b",
        "a#",
        "a\x00b",
        "\x00",
        "a\nb",
        "a\x1bb",
        "a\x7fb",
        " a",
        "-a",
        ".a",
        "..",
        "../cmd",
        "a" * 65,
        "a" * 10_000,
        "é",
        "ａ",  # fullwidth a
        "\u202e",
        "\ud7ff",
        "$SYS",
        "thermo-1/cmd/toggle",
        "thermo-1\x00",
        "NaN",
        "null",
    ]
)
TEXT = st.one_of(st.text(max_size=80), HOSTILE_TEXT)
SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
)
JSON = st.recursive(
    SCALAR,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=20,
)
RAW_JSON = st.sampled_from(
    [
        b"",
        b"{",
        b"NaN",
        b'{"t": NaN}',
        b'{"t": Infinity}',
        b'{"t": -Infinity}',
        b'{"t": 1e400}',
        b'{"t": 9007199254740993}',
        b'{"t": 18446744073709551616}',
        b'{"t": 1}' + b"\xff",
        b'{"\xff": 1}',
        b"[" * 1025 + b"]" * 1025,
        b'{"a":' * 1025 + b"1" + b"}" * 1025,
        b'{"t":' + b"[" * 1025 + b"]" * 1025 + b"}",
        b'{"a": {"b":' + b"[" * 1025 + b"]" * 1025 + b"}}",
        b'{"a":' * (MAX_DEPTH + 2) + b"1" + b"}" * (MAX_DEPTH + 2),
        b'{"t": "\\ud800"}',
        b'{"t": 1, "t": 2}',
        b"\x00\x00\x00",
        b"online",
        b"offline",
        b"true",
        b"1",
    ]
)


@st.composite
def requests(draw: st.DrawFn) -> Any:
    """Frames that look like requests, with every field possibly of the wrong type."""
    kind = draw(st.sampled_from(["subscribe", "unsubscribe", "history", "command", "auth", "ping"]))
    fields = draw(
        st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "devices",
                    "metrics",
                    "resume",
                    "subscription",
                    "device",
                    "metric",
                    "since",
                    "limit",
                    "command",
                    "params",
                    "timeout_ms",
                    "token",
                ]
            ),
            JSON,
            max_size=6,
        )
    )
    return {"type": draw(st.one_of(st.just(kind), JSON)), **fields}


# --- the client protocol parser -----------------------------------------------------------------


@FUZZ
@given(
    st.one_of(
        st.text(), st.binary(), RAW_JSON, JSON.map(orjson.dumps), requests().map(orjson.dumps)
    )
)
def test_parse_request_raises_only_protocol_errors(frame: str | bytes) -> None:
    """Any frame at all parses into a request or raises ProtocolError, nothing else."""
    try:
        request = parse_request(frame)
    except ProtocolError as exc:
        refused: str | None = exc.code
    else:
        refused = None
    assert refused in (None, "bad_request", "unknown_type")
    if refused is not None:
        return
    if isinstance(request, Command):
        assert isinstance(request.device, str)
        assert isinstance(request.params, dict)
    if isinstance(request, History):
        assert request.limit is None or request.limit > 0


# --- device conventions ---------------------------------------------------------------------------


def all_conventions() -> list[Any]:
    enabled = {
        f"conventions.{name}.enabled": True
        for name in ("native", "zigbee2mqtt", "tasmota", "homie", "homeassistant")
    }
    config = load_config(env={}, overrides=enabled)
    assert isinstance(config.conventions, ConventionsConfig)
    return build_conventions(config.conventions)


def topic_levels(draw: st.DrawFn, filt: str) -> str:
    """A topic matching the subscription filter, its wildcards filled with hostile levels."""
    level = st.one_of(
        st.sampled_from(["thermo-1", "bridge", "devices", "config", "$state", "sensor", "x"]),
        st.text(alphabet=string.printable + "é\x00\x01", min_size=1, max_size=20).filter(
            lambda s: "/" not in s
        ),
        HOSTILE_TEXT.filter(lambda s: "/" not in s and s != ""),
    )
    parts = []
    for part in filt.split("/"):
        if part == "+":
            parts.append(draw(level))
        elif part == "#":
            parts.extend(draw(st.lists(level, min_size=1, max_size=4)))
        else:
            parts.append(part)
    return "/".join(parts)


@st.composite
def device_messages(draw: st.DrawFn, filters: list[str]) -> tuple[str, bytes]:
    topic = topic_levels(draw, draw(st.sampled_from(filters)))
    payload = draw(st.one_of(JSON.map(orjson.dumps), RAW_JSON, st.binary(max_size=200)))
    return topic, payload


@pytest.mark.parametrize("index", range(5), ids=["native", "z2m", "tasmota", "homie", "ha"])
def test_convention_decoders_raise_only_decode_errors(index: int) -> None:
    """Each convention decodes hostile topics and payloads into events or DecodeError only; every
    event names a device id, metric and value that pass the allow-lists, and every command it
    would publish goes to a topic without wildcards or NUL."""
    conventions = all_conventions()
    convention = conventions[index]
    filters = convention.subscriptions()

    @FUZZ
    @given(st.lists(device_messages(filters), min_size=1, max_size=8))
    def run(messages: list[tuple[str, bytes]]) -> None:
        for topic, payload in messages:
            if not convention.owns(topic):
                continue
            try:
                events = convention.decode(topic, payload, 1764090000.0)
            except DecodeError as exc:
                reason: str | None = exc.reason
                events = []
            else:
                reason = None
            assert reason is None or reason.isidentifier(), reason
            for event in events:
                check_event(convention, event)

    run()


DEEP = [
    b'{"t":' + b"[" * 1025 + b"]" * 1025 + b"}",
    b'{"ts":' + b"[" * 1025 + b"]" * 1025 + b"}",
    b'{"t": 1, "ts":' + b"[" * 1025 + b"]" * 1025 + b"}",
    b'{"a": {"b":' + b"[" * 1025 + b"]" * 1025 + b"}}",
    b"[" * 1025 + b"]" * 1025,
    b'{"a":' * 1025 + b"1" + b"}" * 1025,
]
LEVELS = ["thermo-1", "bridge", "devices", "state", "sensor", "light", "$state", "config"]


@pytest.mark.parametrize("index", range(5), ids=["native", "z2m", "tasmota", "homie", "ha"])
def test_convention_decoders_survive_deep_nesting(index: int) -> None:
    """Arrays and objects nested 1025 deep (orjson parses any depth of arrays) in every position
    a convention reads, on every topic shape it subscribes to: DecodeError or events, nothing
    else (a RecursionError here escapes paho's callback and wedges ingest for every device)."""
    convention = all_conventions()[index]
    for filt in convention.subscriptions():
        for level in LEVELS:
            topic = "/".join(
                level if part == "+" else (f"{level}/set" if part == "#" else part)
                for part in filt.split("/")
            )
            variants = {topic, topic.removesuffix("/set")}
            for candidate in variants:
                if not convention.owns(candidate):
                    continue
                for payload in DEEP:
                    try:
                        events = convention.decode(candidate, payload, 1764090000.0)
                    except DecodeError:
                        continue
                    for event in events:
                        check_event(convention, event)


def check_event(convention: Any, event: Any) -> None:
    match event:
        case Telemetry(device=device, samples=samples):
            assert is_device_id(device), device
            for metric, ts, value in samples:
                assert is_metric_name(metric), metric
                assert isinstance(ts, float)
                assert is_value(value), value
        case StatusChange(device=device) | CommandResult(device=device) | Removed(device=device):
            assert is_device_id(device), device
        case MetaChange(device=device, meta=meta):
            assert is_device_id(device), device
            if meta is None:
                return
            for name, spec in meta.commands.items():
                try:
                    checked = validate_params(name, spec, fitting_params(spec))
                    topic, payload = convention.encode_command(device, meta, name, "c-1", checked)
                except CommandError:
                    continue
                assert is_publish_topic(topic), topic
                assert isinstance(payload, bytes)
        case Rejected(reason=reason):
            assert reason.isidentifier()
        case Subscribe(topics=topics) | Unsubscribe(topics=topics):
            for topic in topics:
                assert "\x00" not in topic
        case _:
            raise AssertionError(f"unexpected event {event!r}")


@FUZZ
@given(st.dictionaries(TEXT, JSON, max_size=5), JSON)
def test_command_params_validation_raises_only_command_errors(spec_raw: Any, params: Any) -> None:
    """Param validation against any declared meta and any params: a CommandError or the params."""
    from gateway.meta import parse_meta

    try:
        meta = parse_meta({"commands": {"go": {"params": spec_raw}}})
    except DecodeError:
        return
    spec = meta.commands.get("go")
    if spec is None:
        return
    try:
        validate_params("go", spec, params)
    except CommandError as exc:
        code: str | None = exc.code
    else:
        code = None
    assert code in (None, "bad_params")


# --- device ids -----------------------------------------------------------------------------------


@FUZZ
@given(st.one_of(TEXT, st.text(), st.binary().map(lambda b: b.decode("latin-1"))))
def test_device_id_allow_list(value: str) -> None:
    """Whatever passes is_device_id is short, ASCII, and free of topic and control characters;
    slugify and every convention's scoped ids always produce an id that passes."""
    if is_device_id(value):
        assert 0 < len(value) <= DEVICE_ID_MAX
        assert value.isascii()
        assert not any(c in value for c in "+#/\x00 ")
        assert all(c.isprintable() for c in value)
    if is_command_name(value):
        assert not any(c in value for c in "+#/\x00 ")
    assert is_device_id(slugify(value))
    for tag in ("z2m", "tasmota", "homie", "ha"):
        assert is_device_id(scoped_id(tag, value)), (tag, value)


# --- a live gateway: hostile ids never reach a topic -------------------------------------------


def hostile_ids(count: int) -> list[str]:
    """`count` distinct hypothesis-generated strings that the allow-list refuses."""
    found: list[str] = []

    @settings(max_examples=count * 5, deadline=None, database=None)
    @given(st.one_of(HOSTILE_TEXT, st.text(min_size=1, max_size=200)))
    def collect(value: str) -> None:
        if not is_device_id(value) and value not in found and len(found) < count:
            found.append(value)

    collect()
    return found


async def test_hostile_ids_publish_nothing(start_gateway, own_broker, add_device, prefix, figures):
    """Commands (WebSocket and REST) naming hostile device ids or command names are refused with
    an error and nothing reaches the broker from the gateway (every live message on # watched
    over a bounded window); a valid command afterwards is published once, on the link that never
    dropped."""
    gateway = await start_gateway(on=own_broker)
    await add_device("thermo-1", on=own_broker)
    await wait_for_device(gateway, "thermo-1", announced)
    client = await gateway.connected_client()
    seen: asyncio.Queue[str] = asyncio.Queue()

    async def watch(mqtt: aiomqtt.Client) -> None:
        async for message in mqtt.messages:
            if not message.retain:  # retained meta/status from before the window
                seen.put_nowait(message.topic.value)

    ids = hostile_ids(40)
    connects = gateway.runtime.link.stats.connects
    async with tolerant_client(own_broker.host, own_broker.port) as mqtt:
        await mqtt.subscribe("#", qos=1)
        watcher = asyncio.create_task(watch(mqtt), name="test-hash-watch")
        try:
            for device in ids:
                reply = await client.request(
                    {"type": "command", "device": device, "command": "toggle"}
                )
                assert reply["type"] == "error", reply
                assert reply["code"] in ("not_found", "bad_request")
                reply = await client.request(
                    {"type": "command", "device": "thermo-1", "command": device}
                )
                assert reply["type"] == "error", reply
                # A good request between refusals: 20 errors in a row would close with 4501.
                assert (await client.request({"type": "ping"}))["type"] == "pong"
                status, _ = await gateway.post(
                    f"/api/devices/{quote(device, safe='')}/commands/toggle", json={}
                )
                assert 400 <= status < 500, (device, status)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):  # bounded window: anything published shows up
                    leaked = await seen.get()
                    raise AssertionError(f"published to {leaked!r}")
            ok = await client.request(
                {"type": "command", "device": "thermo-1", "command": "toggle"}, "command_result"
            )
            assert ok["status"] == "ok"
            async with asyncio.timeout(5):
                assert await seen.get() == f"{prefix}/thermo-1/cmd/toggle"
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    assert gateway.runtime.link.stats.connects == connects, "the broker dropped the gateway's link"
    figures(f"{len(ids)} hostile ids x (WS device, WS command name, REST): 0 publishes")

"""The machine-readable protocol: JSON Schemas in docs/schemas and docs/asyncapi.yaml.

Every frame a test client receives is validated in tests.support.gateway (WsClient.recv); the
tests here check the documents themselves, drive the gateway through every server frame type, and
prove that a frame the schemas do not describe does fail a test.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag

import aiohttp
import pytest
import yaml
from aiohttp import web
from jsonschema import Draft202012Validator

from gateway import protocol
from gateway.errors import ProtocolError
from tests.integration.conftest import AddDevice, StartGateway
from tests.support.gateway import WsClient, bound_socket
from tests.support.mosquitto import Mosquitto
from tests.support.schemas import (
    SCHEMAS,
    SchemaViolation,
    registry,
    strict_loads,
    validator,
    violations,
)

DOCS = SCHEMAS.parent
SERVER_TYPES = sorted(p.stem for p in (SCHEMAS / "server").glob("*.json"))
CLIENT_TYPES = sorted(p.stem for p in (SCHEMAS / "client").glob("*.json"))
ALL_SCHEMAS = sorted(SCHEMAS.rglob("*.json"))


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _pointer(document: Any, fragment: str) -> Any:
    """Follow a JSON pointer ("/a/b") into `document`; KeyError/IndexError if it leads nowhere."""
    node = document
    for part in fragment.lstrip("/").split("/") if fragment else []:
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


# --- the documents ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ALL_SCHEMAS, ids=lambda p: str(p.relative_to(SCHEMAS)))
def test_schema_is_valid_draft_2020_12_and_its_refs_resolve(path: Path) -> None:
    """Each schema is a valid draft 2020-12 schema and every $ref in it resolves."""
    schema = json.loads(path.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    resolver = registry().resolver(base_uri=path.as_uri())
    refs = list(_refs(schema))
    for ref in refs:
        resolver.lookup(ref)  # raises Unresolvable for a ref that leads nowhere
    if path.parent.name in ("server", "client"):
        assert refs or path.stem in ("ping", "pong", "authenticated") or "properties" in schema


@pytest.mark.parametrize("path", ALL_SCHEMAS, ids=lambda p: str(p.relative_to(SCHEMAS)))
def test_schema_examples_are_valid(path: Path) -> None:
    """The examples a schema carries are valid under it (and under the frame union)."""
    name = str(path.relative_to(SCHEMAS))
    examples = json.loads(path.read_text()).get("examples", [])
    if name == "common.json" or name.endswith("-frame.json"):
        assert not examples
        return
    assert examples, f"{name} has no examples"
    for example in examples:
        validator(name).validate(example)
        side = path.parent.name
        if side in ("server", "client"):
            assert violations(example, side) is None


def test_frame_unions_list_every_message_type() -> None:
    """server-frame.json and client-frame.json offer exactly the per-type schemas on disk."""
    for side, types in (("server", SERVER_TYPES), ("client", CLIENT_TYPES)):
        union = json.loads((SCHEMAS / f"{side}-frame.json").read_text())
        assert sorted(union["properties"]["type"]["enum"]) == types
        assert sorted(ref["$ref"] for ref in union["oneOf"]) == [f"{side}/{t}.json" for t in types]
        for name in types:
            schema = json.loads((SCHEMAS / side / f"{name}.json").read_text())
            assert schema["properties"]["type"] == {"const": name}


def test_every_frame_type_the_gateway_builds_has_a_schema() -> None:
    """Each `"type": "…"` frame literal in the gateway's WebSocket code is a server schema."""
    sources = ["ws.py", "hub.py", "session.py", "stream.py", "status.py", "protocol.py"]
    sources.append("snapshots.py")
    text = "\n".join((Path(protocol.__file__).parent / name).read_text() for name in sources)
    # The sequenced frames' types are the protocol's READINGS and SNAPSHOT constants.
    built = set(re.findall(r'[{ ]"type": "([a-z_]+)"', text)) | {"readings", "snapshot"}
    assert built == set(SERVER_TYPES)


def test_client_schemas_agree_with_the_gateway_parser() -> None:
    """Schema-valid client examples parse; the parser knows exactly the schemas' types."""
    for name in CLIENT_TYPES:
        for example in json.loads((SCHEMAS / "client" / f"{name}.json").read_text())["examples"]:
            request = protocol.parse_object(example)
            assert type(request).__name__.lower() == name
    with pytest.raises(ProtocolError) as refused:
        protocol.parse_object({"type": "hello", "id": 1})
    assert refused.value.code == "unknown_type"


def _doc_examples() -> list[dict[str, Any]]:
    """Every complete JSON object in docs/protocol.md's ```json blocks (one per line or block)."""
    text = (DOCS / "protocol.md").read_text()
    found = []
    for block in re.findall(r"```json\n(.*?)```", text, flags=re.S):
        candidates = [block] + [p for line in block.splitlines() for p in line.split("→")]
        for candidate in candidates:
            try:
                value = strict_loads(candidate.strip())
            except ValueError:
                continue  # an illustration with … placeholders, or part of a multi-line object
            if isinstance(value, dict) and value not in found:
                found.append(value)
    return found


#: Where docs/protocol.md's examples and the gateway disagree, the schemas follow what the gateway
#: sends. Each entry is (frame type, the schema's complaint); remove it once the doc is fixed.
DOC_DISAGREEMENTS: set[tuple[str, str]] = set()


def test_protocol_md_examples_match_the_schemas() -> None:
    """The JSON examples in docs/protocol.md are valid frames of the side that sends them."""
    examples = _doc_examples()
    assert len(examples) >= 15
    device = validator("common.json#/$defs/deviceWithValues")
    disagreements = set()
    for example in examples:
        if "values" in example:  # DEVICE_WITH_VALUES, as in snapshots and GET /api/devices
            device.validate(example)
            continue
        server = example["type"] not in CLIENT_TYPES or "points" in example
        reason = violations(example, "server" if server else "client")
        known = {(t, why) for t, why in DOC_DISAGREEMENTS if t == example["type"]}
        if reason is not None and any(why in reason for _, why in known):
            disagreements |= known
            continue
        assert reason is None, f"docs/protocol.md example {example}: {reason}"
    assert disagreements == DOC_DISAGREEMENTS, "a listed disagreement is gone: drop it"


def test_asyncapi_document_parses_and_every_ref_resolves() -> None:
    """docs/asyncapi.yaml is AsyncAPI 3.0 YAML whose $refs (internal and schema files) resolve."""
    document = yaml.safe_load((DOCS / "asyncapi.yaml").read_text())
    assert document["asyncapi"] == "3.0.0"
    refs = list(_refs(document))
    assert len(refs) > 50
    for ref in refs:
        url, fragment = urldefrag(ref)
        if not url:
            _pointer(document, fragment)
            continue
        target = (DOCS / url).resolve()
        assert target.is_file(), ref
        _pointer(json.loads(target.read_text()), fragment)
    schema_refs = {(DOCS / r).resolve() for r in refs if r.startswith("./schemas/")}
    per_type = {p.resolve() for p in ALL_SCHEMAS if p.parent.name in ("server", "client", "mqtt")}
    assert schema_refs == per_type, "every message schema is used by exactly the AsyncAPI messages"


def test_asyncapi_operations_cover_each_ws_message_and_mqtt_topic() -> None:
    """Every WebSocket message has an operation, and the native topics are all channels."""
    document = yaml.safe_load((DOCS / "asyncapi.yaml").read_text())
    used = {
        message["$ref"].rsplit("/", 1)[1]
        for operation in document["operations"].values()
        for message in operation["messages"]
    }
    assert set(document["channels"]["ws"]["messages"]) <= used
    addresses = {c["address"] for c in document["channels"].values()}
    leaves = {"telemetry", "status", "meta", "cmd/{command}", "result"}
    assert addresses == {"/ws"} | {f"{{prefix}}/{{device}}/{leaf}" for leaf in leaves}


def test_native_payload_schemas_accept_what_devices_send_and_refuse_junk() -> None:
    """The MQTT payload schemas match docs/conventions.md's examples and refuse bad payloads."""
    good = {
        "mqtt/telemetry.json": {"temperature": 21.4, "battery": {"volt": 3.7}, "ts": 1.5},
        "mqtt/command.json": {"id": "c-0123456789abcdef", "params": {"target": 21.5}},
        "mqtt/result.json": {"id": "c-0123456789abcdef", "status": "error", "error": "no"},
        "mqtt/status.json": "offline",
    }
    bad = {
        "mqtt/telemetry.json": {"temperature": None},
        "mqtt/command.json": {"params": {}},
        "mqtt/result.json": {"id": "c-1", "status": "maybe"},
        "mqtt/status.json": "sleeping",
        "mqtt/meta.json": {"commands": {"set": {"params": {"x": {"type": "float"}}}}},
    }
    for name, payload in good.items():
        validator(name).validate(payload)
    for name, payload in bad.items():
        assert not validator(name).is_valid(payload), name


# --- the gateway, frame by frame ----------------------------------------------------------------

TOKEN = "schema-token"


async def test_every_server_frame_type_is_sent_and_matches_its_schema(
    start_gateway: StartGateway, add_device: AddDevice
) -> None:
    """A session that provokes every frame type but `gateway` sees each, all schema-valid,
    readings frames with events and coalesced ones included."""
    gw = await start_gateway(
        {
            "auth.tokens": [{"token": TOKEN, "name": "schemas", "read": ["*"], "command": ["*"]}],
            # Every readings batch overflows a one-byte outbox: the client gets coalesced frames.
            "ws.outbox_max_bytes": 1,
        }
    )
    client = await gw.connect()
    assert client.hello["auth"] == "required"
    await client.request({"type": "ping"}, "pong")
    await client.request({"type": "auth", "token": TOKEN}, "authenticated")
    resume = {"epoch": "gone", "session": "c-gone", "seq": 3}
    reply = await client.request(
        {"type": "subscribe", "devices": ["sch-*"], "resume": resume}, "subscribed"
    )
    assert reply["recovered"] is False
    await client.expect(lambda f: f["type"] == "snapshot")
    answers = {"set_target": ("ok", {"target": 21.5}, None), "set_mode": ("error", None, "busy")}
    device = await add_device("sch-1", answer=lambda command, _: answers.get(command))
    await device.telemetry({"temperature": 21.0, "mode": "heat"}, ts=1000.0)
    await client.readings(2)
    await client.request({"type": "history", "device": "sch-1", "metric": "temperature"}, "history")
    commands = [
        ("set_target", {"target": 21.5}, "ok"),
        ("set_mode", {"mode": "cool"}, "error"),
        ("toggle", {}, "timeout"),  # the stand-in does not answer toggle
    ]
    for command, params, status in commands:
        frame = {"type": "command", "device": "sch-1", "command": command, "params": params}
        result = await client.request({**frame, "timeout_ms": 300}, "command_result")
        assert result["status"] == status
    await client.request({"type": "history", "device": "sch-1", "metric": "nope"}, "error")
    await client.request({"type": "unsubscribe", "subscription": reply["subscription"]})
    seen = {frame["type"] for frame in client.seen}
    assert seen == set(SERVER_TYPES) - {"gateway"}
    readings = [frame for frame in client.seen if frame["type"] == "readings"]
    assert any(frame.get("coalesced") for frame in readings)
    assert any(frame.get("events") for frame in readings)


async def test_gateway_frames_on_broker_loss_match_the_schema(
    start_gateway: StartGateway, own_broker: Mosquitto
) -> None:
    """The `gateway` frames sent when the broker goes away and returns are schema-valid."""
    gw = await start_gateway(on=own_broker)
    client = await gw.connected_client()
    own_broker.kill()
    down = await client.expect(lambda f: f["type"] == "gateway")
    own_broker.start()
    up = await client.expect(lambda f: f["type"] == "gateway")
    assert (down["broker"], up["broker"]) == ("disconnected", "connected")
    assert up["since"] >= down["since"]


# --- the check itself can fail ------------------------------------------------------------------

BAD_FRAMES = [
    ('{"type":"readings","seq":0,"data":[["d-1","t",1.0,2]]}', "readings.json: at $.seq"),
    ('{"type":"readings","seq":1,"data":[["d-1","t",1.0,null]]}', "at $.data[0][3]"),
    ('{"type":"readings","seq":1,"data":[]}', "readings.json"),
    ('{"type":"readings","seq":1,"coalesced":true,"data":[["d-1","t",1.0,2]]}', "readings.json"),
    ('{"type":"snapshot","subscription":"s1","devices":[]}', "snapshot.json"),
    ('{"type":"device","event":"status","device":{}}', "unknown server frame type 'device'"),
    ('{"type":"pong","id":NaN}', "not strict JSON"),
    ('{"type":"pong","id":1,"id":2}', "duplicate keys"),
    ('{"type":"hello","protocol":2}', "hello.json"),
    ('{"type":"surprise"}', "unknown server frame type 'surprise'"),
    ('{"type":"error","id":1,"code":"oops","message":"m"}', "error.json: at $.code"),
]


@pytest.mark.parametrize(("text", "reason"), BAD_FRAMES)
async def test_a_frame_outside_the_schemas_fails_with_a_clear_message(
    text: str, reason: str
) -> None:
    """WsClient refuses a frame the schemas do not describe, naming the schema and the spot."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(text)
        await ws.receive()  # until the client goes away
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = bound_socket()
    try:
        await web.SockSite(runner, sock).start()
        url = f"ws://127.0.0.1:{sock.getsockname()[1]}/ws"
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
            client = WsClient(ws)
            with pytest.raises(SchemaViolation) as refused:
                await client.recv()
            assert reason in str(refused.value)
            assert client.violations
            assert not client.seen
    finally:
        await runner.cleanup()

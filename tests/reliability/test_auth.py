"""Who may connect, read and command: the Origin allow-list, tokens (first frame or query
string), per-device read and command grants through every door (subscribe, snapshot, readings,
history, commands, REST, resume), and tokens kept out of logs and frames."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gateway.app import serve
from tests.integration.conftest import gateway_config
from tests.reliability.helpers import eventually, stop_within
from tests.support.gateway import WsClient, announced
from tests.support.mosquitto import free_port

SECRET = "s3cret-7f1d-ZZ"
READER_A = "reader-a-9e2c-YY"
READER_B = "reader-b-41aa-XX"
ALLOWED = "https://plant.example"


async def ready(http: aiohttp.ClientSession, base: str) -> bool:
    async with http.get(base + "/readyz") as response:
        return response.status == 200


class Served:
    """`gateway.app.serve`, the daemon's own entry point (with its redacting access log)."""

    def __init__(self, config, http: aiohttp.ClientSession) -> None:
        self.config = config
        self.http = http
        self.base_url = f"http://127.0.0.1:{config.http.port}"
        self.ws_url = self.base_url.replace("http", "ws") + "/ws"

    async def connect(self, params: dict | None = None, origin: str | None = None) -> WsClient:
        headers = {"Origin": origin} if origin else {}
        client = WsClient(await self.http.ws_connect(self.ws_url, params=params, headers=headers))
        client.hello = await client.expect(lambda f: f["type"] == "hello")
        return client


@pytest.fixture
async def served(broker, prefix) -> AsyncIterator[Served]:
    """The daemon's serve() on a free port, one full-access token, one allowed cross-site origin."""
    config = gateway_config(
        broker,
        prefix,
        {
            "http.port": free_port(),
            "auth.tokens": [{"token": SECRET, "name": "ops", "command": ["*"]}],
            "auth.allowed_origins": [ALLOWED],
            "auth.auth_timeout_s": 0.5,
        },
    )
    stop, started = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve(config, stop, started), name="test-serve")
    await asyncio.wait(
        {task, asyncio.ensure_future(started.wait())},
        timeout=10,
        return_when=asyncio.FIRST_COMPLETED,
    )
    assert started.is_set(), "serve() did not start"
    async with aiohttp.ClientSession() as http:
        served = Served(config, http)
        # The link up before the test: the stop below is not a stop-while-connecting (that race
        # has its own test in test_shutdown.py).
        await eventually(lambda: ready(http, served.base_url), 10, "broker link up")
        yield served
    stop.set()
    hung = await stop_within(task, 20)
    assert hung is None, f"serve() did not stop within 20 s: {hung}"


ORIGINS = {"allowed": ALLOWED, "none": None, "same-host": "SAME", "denied": "https://evil.example"}
TOKENS = ["query-good", "query-bad", "frame-good", "frame-bad", "missing"]


@pytest.mark.parametrize("origin", list(ORIGINS))
@pytest.mark.parametrize("token", TOKENS)
async def test_origin_and_token_matrix(served, caplog, origin, token):
    """A foreign Origin gets 403 before any upgrade whatever the token; otherwise a good token
    (query string or first frame) reaches subscribe, a bad query token gets 401, a bad frame token
    or none at all is closed with 4500; the secret appears in no log record and no frame."""
    caplog.set_level(logging.DEBUG)
    header = ORIGINS[origin]
    if header == "SAME":
        header = served.base_url
    params = {"token": SECRET if token == "query-good" else "nope"} if "query" in token else None
    try:
        client = await served.connect(params, header)
    except aiohttp.WSServerHandshakeError as exc:
        refused = exc.status
        client = None
    else:
        refused = None
    if origin == "denied":
        assert refused == 403
    elif token == "query-bad":
        assert refused == 401
    else:
        assert client is not None
        if token == "query-good":
            assert client.hello["auth"] == "none"
        else:
            assert client.hello["auth"] == "required"
            if token.startswith("frame"):
                secret = SECRET if token == "frame-good" else "wrong-" + SECRET[::-1]
                await client.send({"type": "auth", "id": 1, "token": secret})
        if token in ("query-good", "frame-good"):
            reply = await client.request({"type": "subscribe", "devices": ["*"]}, "subscribed")
            assert reply["subscription"] == "s1"
            await client.close()
        else:
            assert await client.closed(within=5) == 4500
        frames = str(client.seen)
        assert SECRET not in frames
    logged = "\n".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records)
    assert SECRET not in logged
    assert SECRET[::-1] not in logged


async def test_access_log_redacts_query_token(served, caplog):
    """The daemon's access log names the /ws request but shows token=REDACTED."""
    caplog.set_level(logging.INFO)
    client = await served.connect({"token": SECRET})
    await client.close()
    await eventually(
        lambda: any("/ws" in r.getMessage() for r in caplog.records), 5, "access log line"
    )
    lines = [r.getMessage() for r in caplog.records if "/ws" in r.getMessage()]
    assert any("token=REDACTED" in line for line in lines), lines
    assert not any(SECRET in line for line in lines)


# --- per-device grants ----------------------------------------------------------------------------

GRANTS = {
    "auth.tokens": [
        {"token": READER_A, "name": "a", "read": ["a-*"], "command": ["a-1"]},
        {"token": READER_B, "name": "b", "read": ["b-*"], "command": []},
    ]
}


@pytest.fixture
async def granted(start_gateway, add_device):
    """Devices a-1, a-2, b-1 (announced, with a reading each) behind two scoped tokens."""
    gateway = await start_gateway(GRANTS, wait_connected=False)
    devices = {d: await add_device(d) for d in ("a-1", "a-2", "b-1")}
    a = await gateway.connect(params={"token": READER_A})
    b = await gateway.connect(params={"token": READER_B})
    for client, device_id in ((a, "a-1"), (a, "a-2"), (b, "b-1")):
        await wait_for_device_as(client, device_id)
    for i, device in enumerate(devices.values()):
        await device.telemetry({"t": i}, ts=float(i + 1))
    await a.readings(2)
    await b.readings(1)
    await a.close()
    await b.close()
    return gateway, devices


async def wait_for_device_as(client: WsClient, device_id: str) -> None:
    """Subscribe `client` to one device and wait until it is announced (snapshot or event)."""
    reply = await client.request({"type": "subscribe", "devices": [device_id]}, "subscribed")
    snapshot = await client.expect(
        lambda f: f["type"] == "snapshot" and f["subscription"] == reply["subscription"]
    )
    if not any(announced(d) for d in snapshot["devices"]):
        await client.event(lambda e: e["device"]["id"] == device_id and announced(e["device"]))


async def no_commands(device, window: float = 0.3) -> bool:
    """True if the device stand-in received no command over a bounded window."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(window):
            await device.commands.get()
            return False
    return True


async def test_ws_reads_are_scoped(granted):
    """Token a subscribed to *: snapshot, readings and device events carry only a-* devices;
    history of b-1 is not_found (no probing), of a-1 it answers."""
    gateway, devices = granted
    client = await gateway.connect(params={"token": READER_A})
    await client.request({"type": "subscribe", "devices": ["*"]}, "subscribed")
    snapshot = await client.expect(lambda f: f["type"] == "snapshot")
    assert sorted(d["id"] for d in snapshot["devices"]) == ["a-1", "a-2"]
    await devices["b-1"].telemetry({"t": 99}, ts=99.0)
    await devices["a-2"].telemetry({"t": 98}, ts=98.0)
    assert await client.readings(1, where=lambda r: r[3] == 98) == [["a-2", "t", 98.0, 98]]
    seen = {r[0] for f in client.seen if f["type"] == "readings" for r in f["data"]}
    seen |= {e["device"]["id"] for e in client.seen_events()}
    assert seen <= {"a-1", "a-2"}
    reply = await client.request({"type": "history", "device": "b-1", "metric": "t"})
    assert (reply["type"], reply["code"]) == ("error", "not_found")
    reply = await client.request({"type": "history", "device": "a-1", "metric": "t"})
    assert reply["type"] == "history"


async def test_ws_commands_are_scoped(granted):
    """Token a may command a-1 only: a-2 is forbidden, b-1 unknown, and neither gets anything
    published; token b may command nothing."""
    gateway, devices = granted
    client = await gateway.connect(params={"token": READER_A})
    ok = await client.request(
        {"type": "command", "device": "a-1", "command": "toggle"}, "command_result"
    )
    assert ok["status"] == "ok"
    assert (await devices["a-1"].commands.get()).id == ok["command_id"]
    reply = await client.request({"type": "command", "device": "a-2", "command": "toggle"})
    assert (reply["type"], reply["code"]) == ("error", "forbidden")
    reply = await client.request({"type": "command", "device": "b-1", "command": "toggle"})
    assert (reply["type"], reply["code"]) == ("error", "not_found")
    other = await gateway.connect(params={"token": READER_B})
    reply = await other.request({"type": "command", "device": "b-1", "command": "toggle"})
    assert (reply["type"], reply["code"]) == ("error", "forbidden")
    assert await no_commands(devices["a-2"])  # bounded window
    assert await no_commands(devices["b-1"])


async def test_rest_is_scoped(granted):
    """REST with Bearer tokens: the list and the device resource show only readable devices,
    commands follow the command grant (403 readable, 404 unreadable), no or bad token is 401."""
    gateway, devices = granted
    a = {"Authorization": f"Bearer {READER_A}"}
    status, body = await gateway.get("/api/devices", headers=a)
    assert status == 200
    assert sorted(d["id"] for d in body["devices"]) == ["a-1", "a-2"]
    assert (await gateway.get("/api/devices/b-1", headers=a))[0] == 404
    assert (await gateway.get("/api/devices/a-2", headers=a))[0] == 200
    assert (await gateway.post("/api/devices/a-2/commands/toggle", json={}, headers=a))[0] == 403
    assert (await gateway.post("/api/devices/b-1/commands/toggle", json={}, headers=a))[0] == 404
    status, body = await gateway.post("/api/devices/a-1/commands/toggle", json={}, headers=a)
    assert (status, body["status"]) == (200, "ok")
    await devices["a-1"].commands.get()
    assert (await gateway.get("/api/devices"))[0] == 401
    bad = {"Authorization": "Bearer nope"}
    assert (await gateway.get("/api/devices", headers=bad))[0] == 401
    assert (await gateway.post("/api/devices/a-1/commands/toggle", json={}, headers=bad))[0] == 401
    assert await no_commands(devices["a-2"])
    assert await no_commands(devices["b-1"])


async def park_a_stream(gateway, devices) -> dict:
    """Token a subscribes to *, sees one reading, goes away; returns its resume point. Then b-1
    and a-2 publish while it is parked."""
    a = await gateway.connect(params={"token": READER_A})
    await a.request({"type": "subscribe", "devices": ["*"]}, "subscribed")
    await a.expect(lambda f: f["type"] == "snapshot")
    await devices["a-1"].telemetry({"t": 10}, ts=10.0)
    frame = await a.expect(lambda f: f["type"] == "readings")
    resume = {"epoch": a.hello["epoch"], "session": a.hello["session"], "seq": frame["seq"]}
    parked = gateway.runtime.hub.parked
    await a.close()
    await eventually(lambda: gateway.runtime.hub.parked == parked + 1, 5, "a's stream parked")
    await devices["b-1"].telemetry({"t": 11}, ts=11.0)
    await devices["a-2"].telemetry({"t": 12}, ts=12.0)
    return resume


async def resume_as(gateway, token: str, resume: dict) -> tuple[WsClient, dict]:
    client = await gateway.connect(params={"token": token})
    reply = await client.request(
        {"type": "subscribe", "devices": ["*"], "resume": resume}, "subscribed"
    )
    return client, reply


async def test_resume_replays_only_readable_devices(granted):
    """Token a resumes its own parked stream: recovered true, and the replay holds only the a-*
    readings published meanwhile (b-1's never enter it)."""
    gateway, devices = granted
    resume = await park_a_stream(gateway, devices)
    await devices["a-1"].telemetry({"t": 13}, ts=13.0)  # after b-1's: a marker to wait for
    again, reply = await resume_as(gateway, READER_A, resume)
    assert reply["recovered"] is True
    rows = await again.readings(2)
    assert rows == [["a-2", "t", 12.0, 12], ["a-1", "t", 13.0, 13]]


async def test_resume_by_another_token_is_refused(granted):
    """Token b presenting token a's resume point gets recovered false and its own snapshot (b-1
    only), and none of a's readings."""
    gateway, devices = granted
    resume = await park_a_stream(gateway, devices)
    thief, reply = await resume_as(gateway, READER_B, resume)
    assert reply["recovered"] is False
    snapshot = await thief.expect(lambda f: f["type"] == "snapshot")
    assert [d["id"] for d in snapshot["devices"]] == ["b-1"]
    assert not [f for f in thief.seen if f["type"] == "readings"]


async def test_refused_resume_leaves_the_owners_stream(granted):
    """A resume attempt by another token is refused without consuming the parked stream: its
    owner can still resume it afterwards (recovered true, nothing missed)."""
    gateway, devices = granted
    resume = await park_a_stream(gateway, devices)
    _, reply = await resume_as(gateway, READER_B, resume)
    assert reply["recovered"] is False
    again, reply = await resume_as(gateway, READER_A, resume)
    assert reply["recovered"] is True, "the other token's failed attempt discarded a's stream"
    assert await again.readings(1) == [["a-2", "t", 12.0, 12]]


async def raw_request(port: int, head: bytes) -> tuple[int, bytes]:
    """Send one HTTP/1.1 request of raw bytes (headers no client library would send); return the
    status and the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + b"Connection: close\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(10):
            response = await reader.read()
    finally:
        writer.close()
    status_line, _, rest = response.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize(
    "request_line", [b"GET /api/devices", b"POST /api/devices/thermo-1/commands/toggle"]
)
async def test_authorization_header_that_is_not_utf8_is_401(served, caplog, request_line):
    """A Bearer token of bytes that are not UTF-8 is a bad token: 401, no traceback logged."""
    caplog.set_level(logging.DEBUG)
    port = served.config.http.port
    head = request_line + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \xff\xfe\x80\r\n"
    status, body = await raw_request(port, head)
    assert status == 401
    assert b"unauthorized" in body
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


# --- connections that have not authenticated -----------------------------------------------------

IDLE_CAPS = {
    "auth.tokens": [{"token": SECRET, "name": "ops", "command": ["*"]}],
    "ws.max_connections_per_token": 5,
    "ws.max_unauthenticated_per_address": 3,
    "auth.auth_timeout_s": 60.0,  # the idle sockets stay for the whole test
}


async def upgrade(gateway, **kwargs) -> WsClient | int:
    """A connected client (hello read), or the HTTP status that refused the upgrade."""
    try:
        return await gateway.connect(**kwargs)
    except aiohttp.WSServerHandshakeError as refused:
        return refused.status


async def test_idle_sockets_are_capped_per_address_and_lock_out_no_one(start_gateway):
    """Connections that have not sent `auth` count against their own address's cap (429 past it,
    counted as unauthenticated_cap), not a cap shared by everyone: a dashboard user from another
    address still connects and authenticates, a token on the URL still connects from the same
    one, and an idle socket that authenticates frees its address's slot."""
    gateway = await start_gateway(IDLE_CAPS, wait_connected=False)
    idle = [await upgrade(gateway) for _ in range(5)]
    assert [c if isinstance(c, int) else "open" for c in idle] == ["open"] * 3 + [429, 429]
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=connector) as elsewhere:
        ws = await elsewhere.ws_connect(gateway.ws_url)
        user = WsClient(ws)
        assert (await user.recv())["auth"] == "required"
        assert (await user.request({"type": "auth", "token": SECRET}))["type"] == "authenticated"
        await user.close()
    with_token = await upgrade(gateway, params={"token": SECRET})
    assert not isinstance(with_token, int)
    assert await upgrade(gateway) == 429
    first = idle[0]
    assert not isinstance(first, int)
    assert (await first.request({"type": "auth", "token": SECRET}))["type"] == "authenticated"
    assert not isinstance(await upgrade(gateway), int)  # the slot it held is free again
    _, text = await gateway.get("/metrics")
    assert 'iotgw_ws_refused_total{reason="unauthenticated_cap"} 3.0' in text.splitlines()


async def test_idle_socket_is_closed_at_the_auth_deadline_and_frees_its_slot(start_gateway):
    """A socket that never authenticates is closed with 4500 at auth.auth_timeout_s, counted as
    auth_timeout, and its address may open another in its place."""
    caps = {**IDLE_CAPS, "ws.max_unauthenticated_per_address": 1, "auth.auth_timeout_s": 0.5}
    gateway = await start_gateway(caps, wait_connected=False)
    idle = await upgrade(gateway)
    assert not isinstance(idle, int)
    assert await idle.closed() == 4500
    _, text = await gateway.get("/metrics")
    assert 'iotgw_ws_closed_by_gateway_total{reason="auth_timeout"} 1.0' in text.splitlines()
    await eventually(lambda: gateway.runtime.admission.open == 0, 5, "the slot released")
    assert not isinstance(await upgrade(gateway), int)

"""What a web page in the user's browser can make the gateway do (docs/security.md, rule 4):
DNS rebinding (a foreign name in Host, and an Origin on it) and cross-site requests, on the real
gateway with its default configuration (no tokens), through both front doors."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import StartGateway
from tests.support.gateway import GatewayUnderTest, announced, wait_for_device


def port_of(gateway: GatewayUnderTest) -> int:
    return int(gateway.base_url.rsplit(":", 1)[1])


async def upgrade_status(gateway: GatewayUnderTest, headers: dict[str, str]) -> int:
    """The HTTP status of a /ws upgrade with these headers: 101 when it opened."""
    try:
        ws = await gateway.http.ws_connect(gateway.ws_url, headers=headers)
    except aiohttp.WSServerHandshakeError as refused:
        return refused.status
    await ws.close()
    return 101


async def counter(gateway: GatewayUnderTest, name: str, **labels: str) -> float:
    """One sample of /metrics (0 when the labelled series does not exist yet)."""
    status, text = await gateway.get("/metrics")
    assert status == 200
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def rebinding(gateway: GatewayUnderTest) -> dict[str, str]:
    """The headers of a DNS-rebinding page's request: its own name, on the gateway's port."""
    host = f"evil.example:{port_of(gateway)}"
    return {"Host": host, "Origin": f"http://{host}"}


async def test_dns_rebinding_upgrade_is_refused(start_gateway: StartGateway) -> None:
    """A /ws upgrade whose Host is a foreign name (and its Origin on that name) gets 403, counted
    as iotgw_ws_refused_total{reason="host"}; by the gateway's own address it opens."""
    gw = await start_gateway()
    assert await upgrade_status(gw, rebinding(gw)) == 403
    assert await counter(gw, "iotgw_ws_refused_total", reason="host") == 1
    assert await upgrade_status(gw, {"Origin": gw.base_url}) == 101


@pytest.mark.parametrize(
    "name", ["localhost", "127.0.0.1", "[::1]", "192.0.2.7", socket.gethostname()]
)
async def test_default_hosts_open_the_websocket(start_gateway: StartGateway, name: str) -> None:
    """Without configuration, localhost, any IP address and the machine's host name are hosts
    the gateway answers to (a page served under them opens /ws)."""
    gw = await start_gateway()
    host = f"{name}:{port_of(gw)}"
    assert await upgrade_status(gw, {"Host": host, "Origin": f"http://{host}"}) == 101


async def test_allowed_hosts_admit_a_reverse_proxys_public_name(
    start_gateway: StartGateway,
) -> None:
    """A proxy's public name listed in http.allowed_hosts (as a name or a .suffix) is answered,
    with the page's Origin on it; other names still are not."""
    gw = await start_gateway({"http.allowed_hosts": ["gw.example", ".plant.example"]})
    for host in ("gw.example", "ops.plant.example"):
        assert await upgrade_status(gw, {"Host": host, "Origin": f"https://{host}"}) == 101
    assert await upgrade_status(gw, rebinding(gw)) == 403


async def test_malformed_origin_is_refused_not_an_error(start_gateway: StartGateway) -> None:
    """An Origin that is no URL is a foreign origin: 403, never a server error."""
    gw = await start_gateway()
    assert await upgrade_status(gw, {"Origin": "http://[oops"}) == 403
    assert await counter(gw, "iotgw_ws_refused_total", reason="origin") == 1


# --- REST ---------------------------------------------------------------------------------------

COMMAND = "/api/devices/br-1/commands/toggle"


async def post(gateway: GatewayUnderTest, path: str, **kwargs: Any) -> int:
    """The status of a POST sent exactly as given (no Content-Type added unless asked for)."""
    kwargs.setdefault("skip_auto_headers", ["Content-Type"])
    async with gateway.http.post(gateway.base_url + path, **kwargs) as response:
        return response.status


@pytest.fixture
async def commandable(start_gateway: StartGateway, add_device: Any) -> Any:
    """The default gateway (no tokens) and a device br-1 that answers commands."""
    gw = await start_gateway()
    device = await add_device("br-1")
    await wait_for_device(gw, "br-1", announced)
    return gw, device


CROSS_SITE = {
    "text/plain from a foreign page": (
        {"Origin": "http://evil.example", "Content-Type": "text/plain"},
        403,
        "origin",
    ),
    "JSON from a foreign page": (
        {"Origin": "http://evil.example", "Content-Type": "application/json"},
        403,
        "origin",
    ),
    "text/plain without Origin": ({"Content-Type": "text/plain"}, 415, "content_type"),
    "a same-site form": (
        {"Origin": "SAME", "Content-Type": "application/x-www-form-urlencoded"},
        415,
        "content_type",
    ),
    "multipart": ({"Content-Type": "multipart/form-data; boundary=x"}, 415, "content_type"),
    "a body without a type": ({}, 415, "content_type"),
}


@pytest.mark.parametrize("case", list(CROSS_SITE))
async def test_cross_site_command_posts_are_refused_and_publish_nothing(commandable, case):
    """A command POST from a foreign Origin, or with a body that is not declared JSON, is refused
    (403, 415) and counted in iotgw_http_refused_total; nothing is published: the device's first
    command is the well-formed one sent after it."""
    gw, device = commandable
    headers, status, reason = CROSS_SITE[case]
    headers = {k: gw.base_url if v == "SAME" else v for k, v in headers.items()}
    assert await post(gw, COMMAND, data=b"{}", headers=headers) == status
    assert await counter(gw, "iotgw_http_refused_total", reason=reason) == 1
    code, body = await gw.post(COMMAND, json={}, headers={"Origin": gw.base_url})
    assert (code, body["status"]) == (200, "ok")
    first = await asyncio.wait_for(device.commands.get(), 10)
    assert first.id == body["command_id"]


async def test_a_post_without_a_body_needs_no_content_type(commandable):
    """A body-less command POST may omit Content-Type (no browser sends one cross-site without an
    Origin); declaring another type is refused even with an empty body."""
    gw, device = commandable
    assert await post(gw, COMMAND) == 200
    assert await post(gw, COMMAND, headers={"Content-Type": "text/plain"}) == 415
    assert (await asyncio.wait_for(device.commands.get(), 10)).command == "toggle"


async def test_listed_origin_may_post_json(start_gateway: StartGateway, add_device: Any) -> None:
    """An origin in auth.allowed_origins may send a JSON command from its own site."""
    gw = await start_gateway({"auth.allowed_origins": ["https://plant.example"]})
    await add_device("br-1")
    await wait_for_device(gw, "br-1", announced)
    headers = {"Origin": "https://plant.example"}
    status, body = await gw.post(COMMAND, json={}, headers=headers)
    assert (status, body["status"]) == (200, "ok")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/devices"),
        ("GET", "/api/devices/br-1"),
        ("POST", COMMAND),
        ("DELETE", "/api/devices/br-1"),
        ("GET", "/"),
    ],
)
async def test_dns_rebinding_rest_calls_are_refused(commandable, method, path):
    """With a foreign Host, reads of device data, commands, deletes and the dashboard are 403
    (a rebinding page could read what it fetched), counted as iotgw_http_refused_total{host}."""
    gw, device = commandable
    kwargs = {"json": {}} if method == "POST" else {}
    async with gw.http.request(
        method, gw.base_url + path, headers=rebinding(gw), **kwargs
    ) as response:
        assert response.status == 403
        assert "br-1" not in await response.text()
    assert await counter(gw, "iotgw_http_refused_total", reason="host") == 1
    assert device.commands.empty()  # the POST case was answered: nothing was published


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
async def test_probes_and_metrics_answer_any_host(start_gateway: StartGateway, path: str) -> None:
    """Probes and the scraper reach the gateway by whatever name they have: any Host."""
    gw = await start_gateway()
    status, _ = await gw.get(path, headers=rebinding(gw))
    assert status == 200


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"Origin": "http://evil.example"}, "origin"),
        ({"Content-Type": "text/plain"}, "content_type"),
        ({"Host": "evil.example"}, "host"),
    ],
)
async def test_every_state_changing_method_is_guarded_before_routing(
    start_gateway: StartGateway, headers: dict[str, str], reason: str
) -> None:
    """A DELETE (or any method but GET, HEAD, OPTIONS) is refused for its Origin, Content-Type or
    Host before any route sees it, so routes added later are covered without asking; with
    acceptable headers it reaches the router."""
    gw = await start_gateway()
    url = gw.base_url + "/api/devices/br-1"
    async with gw.http.delete(url, headers=headers, data=b"x") as response:
        assert response.status == (415 if reason == "content_type" else 403)
    assert await counter(gw, "iotgw_http_refused_total", reason=reason) == 1
    async with gw.http.delete(url, headers={"Origin": gw.base_url}) as response:
        assert response.status not in (403, 415)

"""What a web page in the user's browser can make the gateway do (docs/security.md, rule 4):
DNS rebinding (a foreign name in Host, and an Origin on it) and cross-site requests, on the real
gateway with its default configuration (no tokens), through both front doors."""

from __future__ import annotations

import socket

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import StartGateway
from tests.support.gateway import GatewayUnderTest


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

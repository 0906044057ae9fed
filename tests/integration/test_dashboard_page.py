"""The dashboard's page as the gateway serves it: its Content-Security-Policy keeps it to the
gateway's own origin, plus the map tile server an operator configured; /dashboard.json tells
the page that server."""

from __future__ import annotations

from tests.integration.conftest import StartGateway

TILES = "https://tiles.example.net:8443/osm/{z}/{x}/{y}.png"


def directives(policy: str) -> dict[str, list[str]]:
    parts = (d.split() for d in policy.split(";") if d.strip())
    return {name: sources for name, *sources in parts}


async def test_page_loads_nothing_from_elsewhere_by_default(start_gateway: StartGateway) -> None:
    """Without map tiles the page's policy allows scripts, styles, images and connections from
    the gateway alone, on / and /index.html; /dashboard.json says there is no map."""
    gw = await start_gateway()
    for path in ("/", "/index.html"):
        async with gw.http.get(gw.base_url + path) as response:
            assert response.status == 200
            policy = directives(response.headers["Content-Security-Policy"])
        assert policy["default-src"] == ["'self'"]
        for kind in ("script-src", "style-src", "img-src", "connect-src"):
            assert policy[kind] == ["'self'"], kind
        assert policy["object-src"] == ["'none'"]
    status, settings = await gw.get("/dashboard.json")
    assert (status, settings) == (200, {"map": None})


async def test_configured_tile_server_is_the_one_other_image_origin(
    start_gateway: StartGateway,
) -> None:
    """With dashboard.map_tiles set, images may come from that origin too, and nothing else
    changes; the page learns the template and its attribution from /dashboard.json."""
    gw = await start_gateway(
        {"dashboard.map_tiles": TILES, "dashboard.map_attribution": "© Example contributors"}
    )
    async with gw.http.get(gw.base_url + "/") as response:
        policy = directives(response.headers["Content-Security-Policy"])
    assert policy["img-src"] == ["'self'", "https://tiles.example.net:8443"]
    for kind in ("script-src", "style-src", "connect-src"):
        assert policy[kind] == ["'self'"], kind
    status, settings = await gw.get("/dashboard.json")
    assert status == 200
    assert settings == {"map": {"tiles": TILES, "attribution": "© Example contributors"}}


async def test_api_answers_carry_no_page_policy(start_gateway: StartGateway) -> None:
    """The policy is the HTML document's: JSON answers go without it."""
    gw = await start_gateway()
    async with gw.http.get(gw.base_url + "/api/devices") as response:
        assert response.status == 200
        assert "Content-Security-Policy" not in response.headers

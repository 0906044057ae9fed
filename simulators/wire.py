"""The device side of the native convention: topics a device publishes on, and their payloads.

gateway.conventions.native decodes what is built here (tests/unit/test_sim_wire.py round-trips
every message through it), so the two sides cannot drift apart silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.conventions.native import load_json
from gateway.errors import DecodeError
from gateway.models import Value

ONLINE = b"online"
OFFLINE = b"offline"


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names under one prefix (`iotgw/<device>/<leaf>`)."""

    prefix: str = "iotgw"

    def telemetry(self, device: str) -> str:
        return f"{self.prefix}/{device}/telemetry"

    def status(self, device: str) -> str:
        return f"{self.prefix}/{device}/status"

    def meta(self, device: str) -> str:
        return f"{self.prefix}/{device}/meta"

    def result(self, device: str) -> str:
        return f"{self.prefix}/{device}/result"

    def commands(self, device: str) -> str:
        """The filter a device subscribes to for its commands."""
        return f"{self.prefix}/{device}/cmd/+"

    def parse_command(self, topic: str) -> tuple[str, str] | None:
        """(device, command) for `prefix/<device>/cmd/<command>`, else None."""
        if not topic.startswith(self.prefix + "/"):
            return None
        levels = topic[len(self.prefix) + 1 :].split("/")
        if len(levels) != 3 or levels[1] != "cmd":
            return None
        return levels[0], levels[2]


def telemetry_payload(values: Mapping[str, Value], ts: float | None) -> bytes:
    body: dict[str, Any] = dict(values)
    if ts is not None:
        body["ts"] = round(ts, 3)
    return orjson.dumps(body)


def meta_payload(meta: Mapping[str, Any]) -> bytes:
    return orjson.dumps(meta)


def result_payload(
    command_id: str,
    status: str,
    result: Mapping[str, Value] | None = None,
    error: str | None = None,
) -> bytes:
    body: dict[str, Any] = {"id": command_id, "status": status, "result": result or {}}
    if error is not None:
        body["error"] = error
    return orjson.dumps(body)


class BadCommand(Exception):
    """Raised for a command payload without a readable id: there is no one to answer."""


def parse_command_payload(payload: bytes) -> tuple[str, object]:
    """(command id, params) from `{"id": "...", "params": {...}}`; raise BadCommand otherwise."""
    try:
        body = load_json(payload)
    except DecodeError as exc:
        raise BadCommand(f"command is not JSON: {exc.detail}") from None
    if not isinstance(body, dict) or not isinstance(body.get("id"), str):
        raise BadCommand("command must be an object with a string id")
    # Params are checked by the device model against its meta; here only their presence.
    return body["id"], body.get("params", {})

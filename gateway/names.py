"""The allow-lists every name passes before it touches a topic, a registry key or a page.

A device id becomes part of MQTT topics the gateway publishes to; `+`, `#` and `/` would change
which devices a publish reaches, and a NUL makes Mosquitto drop the whole connection (MQTT 3.1.1
§1.5.3 forbids U+0000 in topic names), after which paho re-sends the same packet on reconnect.
"""

from __future__ import annotations

import re

DEVICE_ID_MAX = 64
METRIC_MAX = 128

_DEVICE_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.:-]{{0,{DEVICE_ID_MAX - 1}}}")
_COMMAND = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# Metrics never become topics, but they reach the page and log lines: printable, no control chars.
_METRIC = re.compile(rf"[^\x00-\x1f\x7f]{{1,{METRIC_MAX}}}")


def is_device_id(value: object) -> bool:
    """True for `A-Z a-z 0-9 _ . : -`, starting alphanumeric, at most 64 characters."""
    return isinstance(value, str) and _DEVICE_ID.fullmatch(value) is not None


def is_command_name(value: object) -> bool:
    return isinstance(value, str) and _COMMAND.fullmatch(value) is not None


def is_metric_name(value: object) -> bool:
    return isinstance(value, str) and _METRIC.fullmatch(value) is not None


def slugify(name: str, max_length: int = DEVICE_ID_MAX) -> str:
    """A stable device id for a free-form name (conventions whose names hold spaces or `/`)."""
    slug = re.sub(r"[^A-Za-z0-9_.:-]+", "-", name).strip("-_.:")
    return slug[:max_length] or "device"

"""The iotgw client: an asyncio client of the gateway's WebSocket protocol (docs/clients.md).

It depends on aiohttp and the protocol's frame shapes only, never on the gateway's server modules
(tests/unit/test_import_graph.py checks that it imports nothing else of `gateway`).

    async with Client("ws://127.0.0.1:8080/ws") as gw:
        async for event in gw.subscribe(["thermo-*"]):
            ...
"""

from gateway.client.client import Client, ClientStats
from gateway.client.errors import (
    ClientClosed,
    ClientError,
    CommandError,
    CommandNotSent,
    CommandRefused,
    CommandTimeout,
    CommandUnconfirmed,
    CommandUnknown,
    ConnectError,
    DeviceError,
    NotFound,
    ProtocolMismatch,
    RequestRefused,
    Unauthorized,
)
from gateway.client.frames import (
    Bucket,
    CommandResult,
    Device,
    DeviceEvent,
    DeviceInfo,
    History,
    Reading,
    Value,
)
from gateway.client.policy import Backoff
from gateway.client.subscription import Event, Lagging, Resync, Snapshot, Subscription

__all__ = [
    "Backoff",
    "Bucket",
    "Client",
    "ClientClosed",
    "ClientError",
    "ClientStats",
    "CommandError",
    "CommandNotSent",
    "CommandRefused",
    "CommandResult",
    "CommandTimeout",
    "CommandUnconfirmed",
    "CommandUnknown",
    "ConnectError",
    "Device",
    "DeviceError",
    "DeviceEvent",
    "DeviceInfo",
    "Event",
    "History",
    "Lagging",
    "NotFound",
    "ProtocolMismatch",
    "Reading",
    "RequestRefused",
    "Resync",
    "Snapshot",
    "Subscription",
    "Unauthorized",
    "Value",
]

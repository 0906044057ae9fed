"""The client's exceptions: one base, context as attributes, one class per command outcome."""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """Base of everything the iotgw client raises."""


class ConnectError(ClientError):
    """The first connection could not be made (wrong URL, nothing listening, not a gateway)."""


class Unauthorized(ConnectError):
    """The gateway refused the token (or asked for one and none was given). Terminal."""


class ProtocolMismatch(ConnectError):
    """The gateway speaks a protocol version this client does not. Terminal."""


class ClientClosed(ClientError):
    """The client was closed, or stopped for good after a terminal close by the gateway
    (`code`: the WebSocket close code, when there was one)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class RequestRefused(ClientError):
    """The gateway answered a request with an `error` frame (`code`: the protocol's code)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class NotFound(RequestRefused):
    """Unknown device (or one the token may not read), command, subscription or metric."""


def refusal(code: str, message: str) -> RequestRefused:
    """The RequestRefused subclass for an error frame's code."""
    return (NotFound if code == "not_found" else RequestRefused)(code, message)


class CommandError(ClientError):
    """A command did not end `ok`. `command_id` is the gateway's id once it accepted it."""

    def __init__(self, message: str, command_id: str | None = None) -> None:
        super().__init__(message)
        self.command_id = command_id


class CommandRefused(CommandError):
    """Refused before anything was published (`code`: bad_params, forbidden, not_found,
    rate_limited, too_many, unavailable, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class CommandNotSent(CommandError):
    """The client had no connection to send it on within the timeout: nothing was sent."""


class DeviceError(CommandError):
    """The device answered with an error (`error`: its message, `result`: what it sent)."""

    def __init__(self, error: str, command_id: str, result: Any = None) -> None:
        super().__init__(error, command_id)
        self.error = error
        self.result = result


class CommandTimeout(CommandError):
    """The device did not answer within the (effective) timeout."""


class CommandUnknown(CommandError):
    """Nobody can say whether the device got it: the gateway's broker link dropped, or this
    client's connection did after the command was sent. The device may still act on it."""


class CommandUnconfirmed(CommandError):
    """Published and acknowledged by the broker, but nothing the device reports could confirm
    it (it already showed that state, or reports none). It probably acted on it."""

"""The gateway's exceptions. Libraries raise these; only the CLI turns them into exit codes."""

from __future__ import annotations


class GatewayError(Exception):
    """Base class for every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """Raised when a configuration value is missing, unknown or invalid; `path` names the key."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class DecodeError(GatewayError):
    """Raised when an MQTT message cannot be decoded; `reason` is a stable label for metrics."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class ProtocolError(GatewayError):
    """Raised for a bad client frame; `code` is the stable error code sent back to the client."""

    def __init__(self, code: str, message: str, request_id: object = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


class CommandError(GatewayError):
    """Raised when a command cannot be sent; `code` is a protocol error code (not_found, ...),
    `reason` its metric label (the code unless something more precise), and `retry_after_s` how
    long to wait when a limit refused it."""

    def __init__(
        self,
        code: str,
        message: str,
        retry_after_s: float | None = None,
        *,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s
        self.reason = reason or code

    def describe(self) -> str:
        return f"{self.code}: {self.message}"


class BrokerUnavailable(GatewayError):
    """Raised by a publisher that is not connected: nothing was published."""


class PublishUnconfirmed(GatewayError):
    """Raised when a publish was handed over but not acknowledged: it may still be delivered."""


class UpgradeRefused(GatewayError):
    """Raised when a WebSocket upgrade may not open; `reason` is a stable label for metrics."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class RequestRefused(GatewayError):
    """Raised when an HTTP request breaks the browser rules (docs/security.md, rule 4); `reason`
    is a stable label for metrics: host, origin or content_type."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

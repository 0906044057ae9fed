"""iotgw: relay MQTT device telemetry to WebSocket clients and commands back to devices."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("iotgw")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"

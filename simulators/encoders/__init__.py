"""The conventions a simulated fleet can speak, by the name `--convention` takes.

Each module renders the same device models in one convention's own wire form (see its docstring
for a real topic/payload example); the agent and the link publish what they return, so nothing
else in the simulator knows which convention it speaks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from simulators.encoders import (
    homeassistant,
    homie,
    native,
    shelly,
    sparkplug,
    tasmota,
    zigbee2mqtt,
)
from simulators.encoders.base import Encoder, Message, Outcome, Request, Speaker

ENCODERS: dict[str, Encoder] = {
    module.ENCODER.name: module.ENCODER
    for module in (native, zigbee2mqtt, tasmota, homeassistant, homie, shelly, sparkplug)
}

#: `--convention all`: a mixed fleet, its devices taking the conventions in turn.
ALL = "all"


def gateway_settings(conventions: Sequence[str], base_for: Callable[[str], str]) -> dict[str, Any]:
    """The gateway config that decodes a fleet speaking `conventions`, each under its base."""
    settings: dict[str, Any] = {}
    for name in conventions:
        settings.update(ENCODERS[name].gateway_settings(base_for(name)))
    return settings


__all__ = ["ALL", "ENCODERS", "Encoder", "Message", "Outcome", "Request", "Speaker"]

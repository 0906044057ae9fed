"""The conventions a simulated fleet can speak, by the name `--convention` takes.

Each module renders the same device models in one convention's own wire form (see its docstring
for a real topic/payload example); the agent and the link publish what they return, so nothing
else in the simulator knows which convention it speaks.
"""

from __future__ import annotations

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

__all__ = ["ENCODERS", "Encoder", "Message", "Outcome", "Request", "Speaker"]

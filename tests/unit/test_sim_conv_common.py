"""Every convention the simulator speaks decodes with the gateway's own decoder for it.

`Loop` wires a small fleet's speakers to the gateway conventions that its encoder's settings
enable, in memory: what the simulator publishes is decoded as the gateway would, and a command the
gateway encodes is parsed, applied and answered by the simulated device. The per-convention files
(test_sim_conv_<name>.py) use it for their own wire details.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from gateway.config import load_config
from gateway.conventions import Convention, build_conventions
from gateway.meta import validate_params
from gateway.models import (
    CommandResult,
    DeviceEvent,
    DeviceMeta,
    MetaChange,
    Rejected,
    StatusChange,
    Telemetry,
    Value,
)
from simulators import FleetConfig, mixed_groups
from simulators.encoders import ENCODERS, Message, Speaker
from simulators.encoders.base import apply
from simulators.roster import build_roster

NOW = 1_764_000_000.0


class Loop:
    """A fleet's speakers and the gateway's decoder for their convention, back to back."""

    def __init__(self, convention: str, devices: int = 5, prefix: str | None = None) -> None:
        config = FleetConfig(convention=convention, prefix=prefix, groups=mixed_groups(devices))
        encoder = ENCODERS[convention]
        members = build_roster(config, seed=1)
        self.speakers: dict[str, Speaker] = {
            m.device_id: encoder.speaker(m, config.base) for m in members
        }
        speakers = list(self.speakers.values())
        self.bridge = encoder.bridge(speakers, config.base) if encoder.bridge else []
        settings = load_config(env={}, overrides=encoder.gateway_settings(config.base))
        self.decoders: list[Convention] = build_conventions(settings.conventions)
        self.convention = next(c for c in self.decoders if c.name == convention)
        self.metas: dict[str, DeviceMeta | None] = {}
        self.ids: dict[str, str] = {}  # simulator device id -> gateway device id
        # gateway device id -> metric -> (ts, value): what the registry would hold
        self.values: dict[str, dict[str, tuple[float, Value]]] = {}
        self.armed = False  # what the last command's arm said: can a report confirm it?

    def deliver(self, messages: list[Message]) -> list[DeviceEvent]:
        """Decode messages as the gateway's pipeline would: the first convention owning each."""
        events: list[DeviceEvent] = []
        for m in messages:
            owner = next(c for c in self.decoders if c.owns(m.topic))
            assert owner is self.convention, f"{m.topic} decoded by {owner.name}"
            found = owner.decode(m.topic, m.payload, NOW)
            events += found
            self.metas.update((e.device, e.meta) for e in found if isinstance(e, MetaChange))
            for e in found:
                if isinstance(e, Telemetry):
                    latest = self.values.setdefault(e.device, {})
                    latest.update((m, (t, v)) for m, t, v in e.samples)
        return events

    def boot(self) -> list[DeviceEvent]:
        """Every device's connect: announcements, the bridge, then online; learns gateway ids."""
        events = []
        for speaker in self.speakers.values():
            events += self.deliver(speaker.announce())
        events += self.deliver(self.bridge)
        for device, speaker in self.speakers.items():
            online = self.deliver(speaker.online())
            (self.ids[device],) = {e.device for e in online if isinstance(e, StatusChange)}
            events += online
        return events

    def reading(self, device: str) -> dict[str, Value]:
        """One reading of `device`, decoded: the gateway's metric -> value."""
        speaker = self.speakers[device]
        events = self.deliver(speaker.reading(speaker.model.step(time.time()), time.time()))
        samples = [s for e in events if isinstance(e, Telemetry) for s in e.samples]
        assert not [e for e in events if isinstance(e, Rejected)], events
        return {metric: value for metric, _, value in samples}

    def command(
        self, device: str, command: str, params: dict[str, Any]
    ) -> tuple[list[DeviceEvent], Any]:
        """Send a command as the gateway does (validated against the decoded meta, armed once
        "acknowledged"); return the events decoded from the device's answer, and the model's
        state after it."""
        gateway_id = self.ids[device]
        meta = self.metas[gateway_id]
        assert meta is not None
        checked = validate_params(command, meta.commands[command], params)
        topic, payload = self.convention.encode_command(gateway_id, meta, command, "c-1", checked)
        before = dict(self.values.get(gateway_id, {}))
        self.armed = self.convention.arm(gateway_id, "c-1", before)
        speaker = self.speakers[device]
        assert any(_matches(f, topic) for f in speaker.command_filters()), topic
        request = speaker.parse(topic, payload)
        assert request is not None, topic
        outcomes = [apply(speaker.model, action) for action in request.actions]
        values = speaker.model.step(time.time())
        return self.deliver(speaker.answer(request, outcomes, values)), values


def _matches(pattern: str, topic: str) -> bool:
    """MQTT filter matching (MQTT 3.1.1 §4.7), for checking a device's subscription."""
    levels, parts = pattern.split("/"), topic.split("/")
    for i, level in enumerate(levels):
        if level == "#":
            return True
        if i >= len(parts) or (level != "+" and level != parts[i]):
            return False
    return len(levels) == len(parts)


def results(events: list[DeviceEvent]) -> list[CommandResult]:
    return [e for e in events if isinstance(e, CommandResult)]


@pytest.mark.parametrize("convention", list(ENCODERS))
def test_every_device_comes_online_with_meta_and_full_readings(convention: str) -> None:
    """Each device of a mixed fleet goes online, has a meta by its first reading at the latest
    (Tasmota announces none: its meta is what its messages show), and every reading carries
    one decoded value per model metric."""
    loop = Loop(convention)
    events = loop.boot()
    assert sorted(loop.ids) == sorted(loop.speakers)
    assert all(e.online for e in events if isinstance(e, StatusChange))
    for device, speaker in loop.speakers.items():
        values = loop.reading(device)
        assert len(values) == len(speaker.model.metrics), (device, values)
        assert loop.metas.get(loop.ids[device]) is not None, device


@pytest.mark.parametrize("convention", list(ENCODERS))
def test_will_and_goodbye_say_offline(convention: str) -> None:
    """The last will and the clean-stop goodbye both decode as offline."""
    loop = Loop(convention, devices=1)
    loop.boot()
    (speaker,) = loop.speakers.values()
    will = speaker.will()
    assert will is not None
    # Sparkplug's NDEATH will is not retained (spec §4.2.1.3): a host learns it live.
    assert will.retain is (convention != "sparkplug")
    for messages in ([will], speaker.offline()):
        statuses = [e for e in loop.deliver(messages) if isinstance(e, StatusChange)]
        assert [s.online for s in statuses] == [False]


@pytest.mark.parametrize("convention", list(ENCODERS))
def test_custom_base_topic_is_honoured(convention: str) -> None:
    """Under a base topic of their own, devices decode with the matching gateway settings."""
    loop = Loop(convention, devices=2, prefix="site/b7")
    loop.boot()
    root = ENCODERS[convention].root
    start = root("site/b7") if root is not None else "site/b7/"  # Sparkplug: a group id
    assert all(t.startswith(start) for s in loop.speakers.values() for t in s.command_filters())
    for device in loop.speakers:
        assert loop.reading(device)

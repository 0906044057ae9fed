"""From one MQTT message to registry updates, hub batches and command results.

The broker link's reader (gateway/mqtt_reader.py) calls `handle` for every message, from the
socket's reader callback; it runs synchronously and never raises for bad input: oversize payloads
are refused before parsing, undecodable ones are counted by convention and reason and logged at a
limited rate, and everything else carries on.

The topics conventions ask for at run time are reference-counted here: the broker is asked to
subscribe when the first convention needs a topic and to unsubscribe when the last one lets go.
Devices are forgotten here too (`forget`): from the registry, from clients' view (a `removed`
event) and from their convention's state.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

from gateway.commands import CommandRouter
from gateway.conventions import Convention, Routes
from gateway.errors import DecodeError
from gateway.hub import Hub
from gateway.logs import RateLimitedLog
from gateway.models import (
    CommandResult,
    DeviceEvent,
    MetaChange,
    Publish,
    Reading,
    Rejected,
    Removed,
    StatusChange,
    Subscribe,
    Telemetry,
    Unsubscribe,
)
from gateway.registry import CREATED, Device, Registry
from gateway.stats import IngestStats

log = logging.getLogger(__name__)

#: Device timestamps further than this from the gateway's clock are counted as clock_skew.
MAX_CLOCK_SKEW_S = 86400.0


class Pipeline:
    def __init__(
        self,
        conventions: list[Convention],
        registry: Registry,
        hub: Hub,
        router: CommandRouter,
        max_payload_bytes: int,
        subscribe: Callable[[list[str]], None],
        unsubscribe: Callable[[list[str]], None],
        keep: Callable[[list[Reading], str], None] = lambda readings, convention: None,
        publish: Callable[[str, bytes], bool] | None = None,
    ) -> None:
        """`publish(topic, payload)` sends a convention's own message at QoS 0 without waiting
        (False: it could not be queued); None: such messages are dropped."""
        self._by_name = {c.name: c for c in conventions}
        self._routes = Routes(conventions)
        self._registry = registry
        self._hub = hub
        self._router = router
        self._max_payload = max_payload_bytes
        self._subscribe = subscribe
        self._unsubscribe = unsubscribe
        self._publish = publish
        # Topic -> how many conventions asked for it. The static subscriptions hold one each,
        # never given back: nothing a convention lets go of can take those off the broker.
        self._asked = Counter(t for c in conventions for t in c.subscriptions())
        self._keep = keep  # the history store's append: queues, never waits
        self._warn = RateLimitedLog(log)
        self.stats = IngestStats()

    def handle(self, topic: str, payload: bytes) -> None:
        convention = self._route(topic)
        if convention is None:
            self.stats.messages[("none", "unknown_topic")] += 1
            return
        name = convention.name
        if len(payload) > self._max_payload:
            self._reject(name, "oversize", topic, f"{len(payload)} bytes")
            return
        received_at = time.time()
        try:
            events = convention.decode(topic, payload, received_at)
        except DecodeError as exc:
            self._reject(name, exc.reason, topic, exc.detail)
            return
        except Exception:
            # A decoder bug tripped by some payload: counted and logged with its traceback, and
            # ingest goes on (this runs inside paho's callback, which would only log it).
            self.stats.decode_errors[(name, "decoder_error")] += 1
            log.exception("%s: decoder error on %.120r", name, topic)
            return
        self.stats.messages[(name, "ok")] += 1
        for event in events:
            if isinstance(event, Telemetry) and event.samples:
                self._check_clock(name, topic, event, received_at)
            self._apply(name, topic, event)

    def refuse_oversize(self, topic: str, size: int) -> None:
        """Count a message the read path dropped unread because its payload of `size` bytes is
        over the cap (the same count as an oversize payload refused here)."""
        convention = self._route(topic)
        self._reject(convention.name if convention else "none", "oversize", topic, f"{size} bytes")

    def _route(self, topic: str) -> Convention | None:
        return self._routes.owner(topic)

    def _apply(self, convention: str, topic: str, event: DeviceEvent) -> None:
        match event:
            case Telemetry(device=device_id, samples=samples):
                device = self._device(convention, device_id)
                if device is not None:
                    was_stale = device.stale
                    readings = self._registry.apply_samples(device, samples, time.time())
                    if was_stale:
                        self._hub.device_event(device, "status")
                    self._hub.add_readings(readings)
                    if readings:
                        self._keep(readings, convention)
            case StatusChange(device=device_id, online=online):
                # A cleared status (None) creates nothing: it withdraws what was there.
                device = self._device(convention, device_id, create=online is not None)
                if device is not None and self._registry.set_online(device, online):
                    self._hub.device_event(device, "status")
                if device is not None and online is None:
                    self._withdrawn(device)
            case MetaChange(device=device_id, meta=meta):
                device = self._device(convention, device_id, create=meta is not None)
                # A reconnect brings every retained meta again: only a change is news to clients.
                if device is not None and device.meta != meta:
                    device.meta = meta
                    self._hub.device_event(device, "meta")
                if device is not None and meta is None:
                    self._withdrawn(device)
            case Removed(device=device_id):
                device = self._registry.get(device_id)
                if device is not None and device.convention == convention:
                    self.forget(device_id)
            case CommandResult(device=device_id):
                # A device may only answer its own commands, and only its own convention speaks
                # for it (the router checks the first, this the second).
                owner = self._registry.get(device_id)
                mine = owner is not None and owner.convention == convention
                if mine and self._router.resolve(event):
                    return
                if mine and self._router.is_peers(event.command_id):
                    self.stats.peer_results += 1  # another instance's command: it answers
                    return
                self._reject(convention, "unmatched_result", topic, event.command_id)
            case Publish(topic=out, payload=payload):
                # Only on the convention's own topics: what a device sends cannot steer it.
                speaker = self._by_name.get(convention)
                if speaker is None or not speaker.namespace.allows(out):
                    self._reject(convention, "bad_topic", out, "a request outside its namespace")
                    return
                sent = self._publish is not None and self._publish(out, payload)
                self.stats.requests[(convention, "sent" if sent else "dropped")] += 1
            case Rejected(reason=reason, detail=detail):
                self._reject(convention, reason, topic, detail)
            case Subscribe(topics=topics):
                fresh = [t for t in topics if self._asked[t] == 0]
                self._asked.update(topics)
                if fresh:
                    self._subscribe(fresh)
            case Unsubscribe(topics=topics):
                held = [t for t in topics if self._asked[t] > 0]
                self._asked.subtract(held)
                gone = [t for t in held if self._asked[t] == 0]
                for topic in gone:
                    del self._asked[topic]
                if gone:
                    self._unsubscribe(gone)

    def forget(self, device_id: str) -> bool:
        """Forget a device: registry, clients (a `removed` event), its convention's state.
        False: no such device."""
        device = self._registry.forget(device_id)
        if device is None:
            return False
        self._hub.device_removed(device)
        convention = self._by_name.get(device.convention)
        if convention is not None:
            for event in convention.forget(device_id):
                self._apply(convention.name, "", event)
        return True

    def _withdrawn(self, device: Device) -> None:
        """A device whose retained status and meta were both cleared has withdrawn itself."""
        if device.online is None and device.meta is None:
            self.forget(device.id)

    def _check_clock(self, convention: str, topic: str, event: Telemetry, now: float) -> None:
        """Count device timestamps far from the gateway's clock (an unset RTC, a wrong epoch).

        They are kept as the device's claim: the gateway orders and expires nothing by device
        time, so a wrong clock can only mislabel that device's own points.
        """
        skew = event.samples[0][1] - now
        if abs(skew) > MAX_CLOCK_SKEW_S:
            self._reject(convention, "clock_skew", topic, f"{skew:+.0f}s from the gateway's clock")

    def _device(self, convention: str, device_id: str, create: bool = True) -> Device | None:
        if not create:
            known = self._registry.get(device_id)
            if known is None or known.convention == convention:
                return known
        device, outcome = self._registry.observe(device_id, convention)
        if device is None:
            self._reject(convention, outcome, device_id, "")  # registry_full, foreign_device
        elif outcome is CREATED:
            self._hub.device_event(device, "status")
        return device

    def _reject(self, convention: str, reason: str, topic: str, detail: str) -> None:
        self.stats.decode_errors[(convention, reason)] += 1
        self._warn.warning(
            f"{convention}:{reason}", "%s: %s on %.120r %.200s", convention, reason, topic, detail
        )

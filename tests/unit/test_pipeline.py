"""The pipeline's part in bounding growth (issue 12.11): subscriptions conventions ask for are
reference-counted and given back, discovery republished unchanged costs no meta rebuild, and
devices are forgotten (withdrawn, silent, by an administrator) everywhere at once."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.cluster import new_command_id
from gateway.commands import CommandRouter
from gateway.config import load_config
from gateway.conventions import build_conventions, id_tags
from gateway.conventions.homeassistant import HomeAssistantConvention
from gateway.conventions.tahu.sparkplug_b_pb2 import Payload
from gateway.errors import CommandError
from gateway.hub import Hub
from gateway.models import CommandResult, Publish, Removed, Subscribe, Unsubscribe
from gateway.pipeline import Pipeline
from gateway.registry import Registry
from tests.support.devices import THERMOSTAT_META

ALL = {
    "conventions.zigbee2mqtt.enabled": True,
    "conventions.homeassistant.enabled": True,
    "conventions.homeassistant.allowed_topics": ["ext/#"],
}


class Broker:
    """What the pipeline asked the broker link for, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        self.sent = []

    def subscribe(self, topics: list[str]) -> None:
        self.calls.append(("subscribe", topics))

    def unsubscribe(self, topics: list[str]) -> None:
        self.calls.append(("unsubscribe", topics))

    def publish(self, topic: str, payload: bytes) -> bool:
        self.sent.append((topic, payload))
        return self.up

    sent: list[tuple[str, bytes]]
    up = True


class NoPublisher:
    async def publish(self, topic: str, payload: bytes) -> None:
        raise AssertionError("nothing is published here")


def pipeline(**settings: Any) -> tuple[Pipeline, Registry, Broker, dict[str, Any]]:
    config = load_config(env={}, overrides={**ALL, **settings})
    registry = Registry(config.registry, id_tags())
    conventions = build_conventions(config.conventions, registry.shapes)
    by_name = {c.name: c for c in conventions}
    router = CommandRouter(by_name, NoPublisher(), config.commands, "gw-test")
    broker = Broker()
    hub = Hub(config.ws)
    built = Pipeline(
        conventions,
        registry,
        hub,
        router,
        65536,
        broker.subscribe,
        broker.unsubscribe,
        publish=broker.publish,
    )
    return built, registry, broker, by_name


SWITCH = {"~": "ext/pump", "stat_t": "~/state", "cmd_t": "~/set", "avty_t": "~/status"}


async def test_a_config_republished_500_times_asks_the_broker_once(monkeypatch) -> None:
    """The same config 500 times: one subscribe for its two topics, one meta build, nothing
    more; cleared, its topics are unsubscribed once and the device is forgotten."""
    built, registry, broker, _ = pipeline()
    builds: list[str] = []
    meta_events = HomeAssistantConvention._meta_events

    def counting(self: HomeAssistantConvention, device_id: str) -> Any:
        builds.append(device_id)
        return meta_events(self, device_id)

    monkeypatch.setattr(HomeAssistantConvention, "_meta_events", counting)
    for _ in range(500):
        built.handle("homeassistant/switch/pump/config", orjson.dumps(SWITCH))
    assert broker.calls == [("subscribe", ["ext/pump/state", "ext/pump/status"])]
    assert builds == ["ha.pump"]
    assert registry.get("ha.pump") is not None
    built.handle("homeassistant/switch/pump/config", b"")
    assert broker.calls[1:] == [("unsubscribe", ["ext/pump/state", "ext/pump/status"])]
    assert registry.get("ha.pump") is None


def test_topics_are_counted_across_askers_and_static_ones_are_never_given_back() -> None:
    """Two askers of a topic: unsubscribed when the second lets go. A static subscription asked
    for and let go of stays subscribed (no call at all)."""
    built, *_, broker, _ = pipeline()
    apply = built._apply
    apply("homeassistant", "t", Subscribe(("a/b",)))
    apply("zigbee2mqtt", "t", Subscribe(("a/b", "zigbee2mqtt/#")))
    apply("homeassistant", "t", Unsubscribe(("a/b",)))
    assert broker.calls == [("subscribe", ["a/b"])]
    apply("zigbee2mqtt", "t", Unsubscribe(("a/b", "zigbee2mqtt/#", "never/asked")))
    assert broker.calls == [("subscribe", ["a/b"]), ("unsubscribe", ["a/b"])]


async def test_a_native_device_clearing_its_status_and_meta_is_forgotten() -> None:
    """Retained status and meta both cleared: the device is gone; clearing the status of an
    unknown device creates nothing."""
    built, registry, *_ = pipeline()
    built.handle("iotgw/thermo-1/meta", orjson.dumps(THERMOSTAT_META))
    built.handle("iotgw/thermo-1/status", b"online")
    built.handle("iotgw/thermo-1/status", b"")
    assert registry.get("thermo-1") is not None  # its meta is still announced
    built.handle("iotgw/thermo-1/meta", b"")
    assert registry.get("thermo-1") is None
    built.handle("iotgw/ghost/status", b"")
    built.handle("iotgw/ghost/meta", b"")
    assert registry.get("ghost") is None
    assert registry.stats.devices_forgotten == 1


async def test_forgetting_a_device_drops_its_conventions_state() -> None:
    """forget: the registry no longer knows it, its convention no longer commands it, and a
    second forget is a no-op; a convention's Removed of another's device is refused."""
    built, registry, _, conventions = pipeline()
    lamp = {"friendly_name": "lamp", "definition": {"exposes": [
        {"type": "binary", "property": "state", "value_on": "ON", "value_off": "OFF",
         "access": 7}]}}  # fmt: skip
    built.handle("zigbee2mqtt/bridge/devices", orjson.dumps([lamp]))
    device = registry.get("z2m.lamp")
    assert device is not None
    assert device.meta is not None
    built._apply("homeassistant", "t", Removed("z2m.lamp"))
    assert registry.get("z2m.lamp") is not None
    assert built.forget("z2m.lamp")
    assert registry.get("z2m.lamp") is None
    with pytest.raises(CommandError):
        conventions["zigbee2mqtt"].encode_command(
            "z2m.lamp", device.meta, "set_state", "c-1", {"state": "ON"}
        )
    assert not built.forget("z2m.lamp")


async def test_a_result_from_another_conventions_message_is_not_an_answer() -> None:
    """A CommandResult for a device decoded by a convention it does not belong to is refused."""
    built, registry, *_ = pipeline()
    registry.observe("z2m.lamp", "zigbee2mqtt")
    built._apply("native", "t", CommandResult("z2m.lamp", "c-1", "ok"))
    assert built.stats.decode_errors[("native", "unmatched_result")] == 1


async def test_an_answer_to_a_peer_instances_command_is_counted_apart() -> None:
    """A device's answer to a command another instance sent is neither resolved here nor an
    unmatched result: it is counted as a peer's; an id of this instance nobody waits for, or a
    stray id, is still unmatched."""
    built, registry, *_ = pipeline()
    registry.observe("thermo-1", "native")
    peer = new_command_id("gw-other")
    built.handle("iotgw/thermo-1/result", orjson.dumps({"id": peer, "status": "ok"}))
    assert built.stats.peer_results == 1
    assert built.stats.decode_errors[("native", "unmatched_result")] == 0
    for stray in (new_command_id("gw-test"), "c-1"):
        built.handle("iotgw/thermo-1/result", orjson.dumps({"id": stray, "status": "ok"}))
    assert built.stats.peer_results == 1
    assert built.stats.decode_errors[("native", "unmatched_result")] == 2


def test_silent_devices_are_forgotten_past_the_configured_age() -> None:
    """registry.silent lists devices silent longer than forget_after_s; 0 lists none."""
    registry = Registry(load_config(env={}, overrides={"registry.forget_after_s": 60}).registry)
    device, _ = registry.observe("d", "native")
    assert registry.silent(device.last_seen_mono + 59) == []
    assert registry.silent(device.last_seen_mono + 61) == [device]
    never = Registry(load_config(env={}, overrides={}).registry)
    never.observe("d", "native")
    assert never.silent(1e12) == []


async def test_a_conventions_requests_go_out_on_its_own_topics_and_are_counted() -> None:
    """A Sparkplug seq gap makes the convention ask for a rebirth: the pipeline hands the NCMD to
    the broker link and counts it sent (or dropped, with the link down)."""
    built, _, broker, _ = pipeline(**{"conventions.sparkplug.enabled": True})
    birth = Payload(seq=0)
    birth.metrics.add(name="bdSeq", datatype=4, long_value=0)
    built.handle("spBv1.0/G/NBIRTH/E", birth.SerializeToString())
    built.handle("spBv1.0/G/NDATA/E", Payload(seq=5).SerializeToString())
    ((topic, body),) = broker.sent
    assert topic == "spBv1.0/G/NCMD/E"
    assert Payload.FromString(body).metrics[0].name == "Node Control/Rebirth"
    assert built.stats.requests[("sparkplug", "sent")] == 1
    assert built.stats.decode_errors[("sparkplug", "seq_gap")] == 1
    broker.up = False
    built.handle("spBv1.0/G2/NDATA/E", Payload(seq=1).SerializeToString())
    assert built.stats.requests[("sparkplug", "dropped")] == 1


def test_a_request_outside_the_conventions_namespace_is_refused() -> None:
    """A convention can only send on its own topics: anything else is refused as bad_topic."""
    built, _, broker, _ = pipeline(**{"conventions.sparkplug.enabled": True})
    built._apply("sparkplug", "", Publish("iotgw/thermo-1/cmd/set_target", b"{}"))
    assert broker.sent == []
    assert built.stats.decode_errors[("sparkplug", "bad_topic")] == 1

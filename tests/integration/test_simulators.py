"""A simulated fleet on a real Mosquitto, observed by a plain MQTT client."""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Callable

import aiomqtt
import orjson
import pytest

from gateway.conventions.native import NativeConvention
from gateway.meta import parse_meta
from gateway.models import Telemetry
from simulators import DeviceGroup, FaultConfig, Fleet, FleetConfig, Share, mixed_groups
from tests.support.mosquitto import Mosquitto

TIMEOUT = 10.0


class Watcher:
    """A plain aiomqtt subscriber that remembers everything and waits for what a test expects."""

    def __init__(self, client: aiomqtt.Client, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.seen: list[aiomqtt.Message] = []

    async def until(self, predicate: Callable[[aiomqtt.Message], bool]) -> aiomqtt.Message:
        """The first message, already seen or arriving in TIMEOUT, for which `predicate` holds."""
        for message in self.seen:
            if predicate(message):
                return message
        async with asyncio.timeout(TIMEOUT):
            async for message in self.client.messages:
                self.seen.append(message)
                if predicate(message):
                    return message
        raise AssertionError("unreachable: the message stream ended")

    async def collect(
        self, keys: set[str], key: Callable[[aiomqtt.Message], str | None]
    ) -> dict[str, aiomqtt.Message]:
        """Wait until a message has been seen for every key; the latest one per key."""
        found: dict[str, aiomqtt.Message] = {}

        def record(message: aiomqtt.Message) -> bool:
            k = key(message)
            if k in keys:
                found[k] = message
            return set(found) == keys

        await self.until(record)
        return found

    def forget(self) -> None:
        self.seen.clear()


def leaf(watcher: Watcher, name: str, payload: bytes | None = None) -> Callable[..., str | None]:
    """Key function: the device id of messages on `prefix/<device>/<name>` (with `payload`)."""

    def key(message: aiomqtt.Message) -> str | None:
        parts = message.topic.value.split("/")
        if parts[:-2] != watcher.prefix.split("/") or parts[-1] != name:
            return None
        return parts[-2] if payload is None or message.payload == payload else None

    return key


@pytest.fixture
def prefix() -> str:
    return f"test/{uuid.uuid4().hex[:10]}"


async def watch(broker: Mosquitto, prefix: str) -> AsyncIterator[Watcher]:
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe(f"{prefix}/#", qos=1)
        yield Watcher(client, prefix)


@pytest.fixture
async def watcher(broker: Mosquitto, prefix: str) -> AsyncIterator[Watcher]:
    async for w in watch(broker, prefix):
        yield w


def fleet_config(broker: Mosquitto, prefix: str, **kwargs: object) -> FleetConfig:
    settings: dict[str, object] = {
        "broker": broker.url,
        "prefix": prefix,
        "groups": mixed_groups(5),
        "rate": 20.0,
        "seed": 1,
        "result_delay_s": (0.0, 0.0),
    }
    settings.update(kwargs)
    return FleetConfig(**settings)  # type: ignore[arg-type]


async def command(
    watcher: Watcher, device: str, name: str, params: object, command_id: str
) -> dict[str, object]:
    """Publish a command like the gateway does and return the device's decoded answer."""
    body = orjson.dumps({"id": command_id, "params": params})
    await watcher.client.publish(f"{watcher.prefix}/{device}/cmd/{name}", body, qos=1)
    topic = f"{watcher.prefix}/{device}/result"

    def is_answer(m: aiomqtt.Message) -> bool:
        return m.topic.value == topic and orjson.loads(m.payload).get("id") == command_id  # type: ignore[arg-type]

    answer = orjson.loads((await watcher.until(is_answer)).payload)  # type: ignore[arg-type]
    assert isinstance(answer, dict)
    return answer


async def test_readings_meta_and_online_arrive(
    broker: Mosquitto, prefix: str, watcher: Watcher
) -> None:
    """Every device announces parseable meta and `online`, then sends decodable readings."""
    async with Fleet(fleet_config(broker, prefix)) as fleet:
        await fleet.wait_ready()
        devices = set(fleet.devices)
        metas = await watcher.collect(devices, leaf(watcher, "meta"))
        await watcher.collect(devices, leaf(watcher, "status", b"online"))
        readings = await watcher.collect(devices, leaf(watcher, "telemetry"))
    native = NativeConvention(prefix=prefix)
    for device, message in metas.items():
        assert parse_meta(orjson.loads(message.payload)).type == fleet.devices[device].kind  # type: ignore[arg-type]
    for device, message in readings.items():
        events = native.decode(message.topic.value, message.payload, 0.0)  # type: ignore[arg-type]
        assert [type(e) for e in events] == [Telemetry], events
        assert {m for m, _, _ in events[0].samples} == set(fleet.devices[device].metrics)  # type: ignore[union-attr]
    assert fleet.stats.messages >= 5


async def test_meta_and_online_are_retained(broker: Mosquitto, prefix: str) -> None:
    """A subscriber arriving after the fleet gets meta and `online` as retained messages."""
    async with Fleet(fleet_config(broker, prefix, rate=0.0)) as fleet:
        await fleet.wait_ready()
        async for late in watch(broker, prefix):
            metas = await late.collect(set(fleet.devices), leaf(late, "meta"))
            online = await late.collect(set(fleet.devices), leaf(late, "status", b"online"))
            assert all(m.retain for m in [*metas.values(), *online.values()])


async def test_abrupt_drop_fires_the_will_then_device_returns(
    broker: Mosquitto, prefix: str, watcher: Watcher
) -> None:
    """A device whose connection is cut goes `offline` by its last will and comes back `online`."""
    async with Fleet(fleet_config(broker, prefix)) as fleet:
        await fleet.wait_ready()
        await watcher.collect({"thermo-1"}, leaf(watcher, "status", b"online"))
        watcher.forget()
        fleet.drop("thermo-1", offline_for=0.2)
        await watcher.collect({"thermo-1"}, leaf(watcher, "status", b"offline"))
        watcher.forget()
        await watcher.collect({"thermo-1"}, leaf(watcher, "status", b"online"))
        await watcher.collect({"thermo-1"}, leaf(watcher, "telemetry"))
        assert fleet.stats.drops == 1


async def test_will_fires_for_a_killed_process(
    broker: Mosquitto, prefix: str, watcher: Watcher
) -> None:
    """SIGKILL of a simulator process leaves the broker to publish every device's will."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulators", "--broker", broker.url, "--prefix", prefix,
        "--devices", "3", "--rate", "5", "--quiet",
    )  # fmt: skip
    try:
        devices = {"env-1", "thermo-1", "switch-1"}
        await watcher.collect(devices, leaf(watcher, "status", b"online"))
        watcher.forget()
        proc.kill()
        await watcher.collect(devices, leaf(watcher, "status", b"offline"))
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_command_answered_ok_and_applied(
    broker: Mosquitto, prefix: str, watcher: Watcher
) -> None:
    """set_target 22 is answered ok with the new target, which the next readings report."""
    async with Fleet(fleet_config(broker, prefix, result_delay_s=(0.02, 0.05))) as fleet:
        await fleet.wait_ready()
        answer = await command(watcher, "thermo-1", "set_target", {"target": 22}, "x")
        assert answer == {"id": "x", "status": "ok", "result": {"target": 22}}
        watcher.forget()
        reading = await watcher.until(
            lambda m: (
                m.topic.value == f"{prefix}/thermo-1/telemetry"
                and orjson.loads(m.payload)["target"] == 22
            )  # type: ignore[arg-type]
        )
        assert orjson.loads(reading.payload)["mode"] in ("heat", "auto")  # type: ignore[arg-type]
        assert fleet.stats.commands_ok == 1


@pytest.mark.parametrize(
    ("device", "name", "params", "error"),
    [
        ("thermo-1", "set_target", {"target": 40}, "set_target: target must be ≤ 30"),
        (
            "thermo-1",
            "set_mode",
            {"mode": "turbo"},
            "set_mode: mode must be one of off, heat, cool, auto",
        ),
        ("switch-1", "explode", {}, "unknown command 'explode'"),
        ("switch-1", "toggle", "now", "params must be an object"),
    ],
)
async def test_bad_commands_answered_with_error(
    broker: Mosquitto,
    prefix: str,
    watcher: Watcher,
    device: str,
    name: str,
    params: object,
    error: str,
) -> None:
    """An invalid command is answered `error` with a message saying what is wrong."""
    async with Fleet(fleet_config(broker, prefix, rate=0.0)) as fleet:
        await fleet.wait_ready()
        answer = await command(watcher, device, name, params, "bad-1")
    assert answer == {"id": "bad-1", "status": "error", "result": {}, "error": error}
    assert fleet.stats.commands_error == 1


async def test_device_ignoring_commands_never_answers(
    broker: Mosquitto, prefix: str, watcher: Watcher
) -> None:
    """With the ignore-commands fault a device stays silent while its neighbour answers."""
    config = fleet_config(
        broker,
        prefix,
        rate=0.0,
        groups=(DeviceGroup("switch", 2),),
        connections=1,  # one connection: commands and answers keep their order on it
        faults=FaultConfig(ignore_commands=Share(1)),
    )
    async with Fleet(config) as fleet:
        await fleet.wait_ready()
        (deaf,) = [d for d, faults in fleet.faults.items() if faults.ignore_commands]
        (other,) = set(fleet.devices) - {deaf}
        body = orjson.dumps({"id": "ignored", "params": {}})
        await watcher.client.publish(f"{prefix}/{deaf}/cmd/toggle", body, qos=1)
        answer = await command(watcher, other, "toggle", {}, "answered")
        assert answer["status"] == "ok"
    assert not [m for m in watcher.seen if m.topic.value == f"{prefix}/{deaf}/result"]
    assert fleet.stats.commands_ignored == 1


async def test_clean_stop_publishes_offline(
    broker: Mosquitto, prefix: str, watcher: Watcher
) -> None:
    """Leaving the fleet's context publishes a retained `offline` for every device."""
    async with Fleet(fleet_config(broker, prefix)) as fleet:
        await fleet.wait_ready()
    offline = await watcher.collect(set(fleet.devices), leaf(watcher, "status", b"offline"))
    assert len(offline) == 5
    assert fleet.stats.links_up == 0


async def test_multiplexed_fleet_shares_connections(
    broker: Mosquitto, prefix: str, watcher: Watcher
) -> None:
    """Twelve devices on three connections all publish, answer and say goodbye."""
    async with Fleet(fleet_config(broker, prefix, groups=mixed_groups(12), connections=3)) as fleet:
        await fleet.wait_ready()
        assert fleet.stats.links == 3
        await watcher.collect(set(fleet.devices), leaf(watcher, "telemetry"))
        answer = await command(watcher, "thermo-2", "set_mode", {"mode": "cool"}, "m")
        assert answer["result"] == {"mode": "cool"}
    await watcher.collect(set(fleet.devices), leaf(watcher, "status", b"offline"))


async def test_sigint_stops_the_cli_cleanly(
    broker: Mosquitto, prefix: str, watcher: Watcher
) -> None:
    """`python -m simulators` exits 0 on SIGINT after publishing `offline` for its devices."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulators", "--broker", broker.url, "--prefix", prefix,
        "--devices", "2", "--rate", "5", "--quiet",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await watcher.collect({"env-1", "thermo-1"}, leaf(watcher, "telemetry"))
        watcher.forget()
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(TIMEOUT):
            _, stderr = await proc.communicate()
        assert proc.returncode == 0, stderr.decode()
        assert stderr == b""
        await watcher.collect({"env-1", "thermo-1"}, leaf(watcher, "status", b"offline"))
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_fleet_reconnects_after_broker_restart(own_broker: Mosquitto, prefix: str) -> None:
    """When the broker restarts, devices reconnect and re-announce meta and `online`."""
    async with Fleet(fleet_config(own_broker, prefix, groups=mixed_groups(3))) as fleet:
        await fleet.wait_ready()
        own_broker.restart()  # persistence is off: retained state is gone with the old broker
        async for w in watch(own_broker, prefix):
            await w.collect(set(fleet.devices), leaf(w, "meta"))
            await w.collect(set(fleet.devices), leaf(w, "status", b"online"))
            await w.collect(set(fleet.devices), leaf(w, "telemetry"))
    assert fleet.stats.connects >= 6

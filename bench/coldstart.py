"""S6 cold start: the broker already holds every device's retained meta and status when the
target starts. How long until it is ready, holds every device, and serves a complete snapshot;
what the devices cost in memory.

One run, in order:
1. `load_retained`: one raw MQTT connection publishes a retained meta and status for each device,
   then a QoS 1 message whose PUBACK says the broker has processed (stored) all of them; a second
   connection subscribes and counts the retained messages the broker actually hands out.
2. Idle phase: the target on a prefix with no devices; its RSS once ready is the baseline.
3. Cold start: a snapshot client (bench/snapshot_client.py) is already waiting; the target
   starts; the orchestrator polls readiness and the device count every 50 ms while the client
   connects as early as it can and asks for snapshots of `*` until one is complete.
4. Telemetry step: one message per device (three metrics), so the record also tells what the
   latest values and the first history points cost per device.
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import TYPE_CHECKING, Any

from bench import procs, publisher
from bench.mqtt_wire import RawPublisher, publish_packet, topic_header
from bench.snapshot_client import run as snapshot_client
from bench.workers import Worker, Workers

if TYPE_CHECKING:
    from bench.runner import Run


def finish_profile(profiler: procs.Child) -> None:
    from bench.runner import _finish

    _finish(profiler)


#: A meta like a real device's (name, three metrics with units, one command); ~200 bytes.
META = (
    b'{"type":"bench","name":"Bench device %s","metrics":{"sent":{"unit":"s"},"n":{},'
    b'"v":{"unit":"\xc2\xb0C"}},"commands":{"echo":{"params":{"x":{"type":"number"}}}}}'
)
CHUNK = 1000  # packets per sendall while loading
POLL_S = 0.05
COUNT_QUIET_S = 5.0  # the counting subscriber gives up after this long without a message
SNAPSHOT_TIMEOUT_S = 180.0
SETTLE_S = 1.0  # before reading RSS; shorter for small fleets (the smoke test), see _settle
TELEMETRY_QUIET_S = 3.0
TELEMETRY_MAX_S = 60.0


def load_retained(port: int, prefix: str, devices: list[str]) -> dict[str, Any]:
    """Publish every device's retained meta and status; make sure the broker holds them all."""
    started = time.monotonic()
    loader = RawPublisher(port, f"{prefix}-loader", timeout=60)
    try:
        for first in range(0, len(devices), CHUNK):
            packets = []
            for device in devices[first : first + CHUNK]:
                meta = topic_header(f"{prefix}/{device}/meta")
                status = topic_header(f"{prefix}/{device}/status")
                packets.append(publish_packet(meta, META % device.encode(), retain=True))
                packets.append(publish_packet(status, b"online", retain=True))
            loader.send(packets)
        loader.confirm(topic_header(f"{prefix}-loader/done"))
    finally:
        loader.close()
    loaded = time.monotonic()
    counter = RawPublisher(port, f"{prefix}-counter", timeout=60)
    try:
        filters = [f"{prefix}/+/meta", f"{prefix}/+/status"]
        counted = counter.count_retained(filters, 2 * len(devices), COUNT_QUIET_S)
    finally:
        counter.close()
    return {
        "retained_published": 2 * len(devices),
        "load_s": round(loaded - started, 3),
        # What one QoS 0 subscriber got: fewer means the broker's limits drop retained messages.
        "retained_counted": counted,
        "count_s": round(time.monotonic() - loaded, 3),
    }


class ColdStart:
    def __init__(self, run: Run) -> None:
        self.run = run
        self.scenario = run.scenario
        self.target_kind = run.target
        devices = self.scenario.devices
        # The registry must have room for the fleet; an explicit --set still wins.
        self.settings = {"registry.max_devices": str(max(devices, 10000)), **self.scenario.settings}

    def execute(self) -> list[dict[str, Any]]:
        devices = [f"d{i:05d}" for i in range(self.scenario.devices)]
        broker, broker_port = procs.broker(self.run.options.broker_conf)
        with broker:
            procs.wait_until(lambda: procs.port_open(broker_port), 15, "mosquitto")
            loaded = load_retained(broker_port, self.run.prefix, devices)
            idle = self._idle_phase(broker_port)
            with Workers() as workers:
                record = self._cold_phase(workers, broker, broker_port, devices)
        record.update(loaded, **idle)
        record.update(_per_device(record, len(devices)))
        return [record]

    def _settle(self) -> None:
        time.sleep(min(SETTLE_S, max(0.1, self.scenario.devices / 10000)))

    def _target(self, broker_port: int, prefix: str) -> tuple[procs.Child, int]:
        options = self.run.options
        return procs.target(
            self.target_kind,
            broker_port,
            prefix,
            self.settings,
            options.gateway_python if self.target_kind == "gateway" else None,
            options.gateway_tree,
            retained=True,
        )

    def _idle_phase(self, broker_port: int) -> dict[str, Any]:
        """The target's RSS with no devices at all (a prefix nothing was published under)."""
        target, http_port = self._target(broker_port, self.run.prefix + "idle")
        with target:
            procs.wait_until(lambda: _ready(self.target_kind, http_port), 30, "idle target")
            self._settle()  # let start-up garbage settle before reading RSS
            return {"rss_idle_kib": procs.memory_kib(target.pid)["rss"]}

    def _cold_phase(
        self, workers: Workers, broker: procs.Child, broker_port: int, devices: list[str]
    ) -> dict[str, Any]:
        client = workers.add(Worker("snapshot-client", snapshot_client, None))
        client.expect("ready", 60)  # its imports are done before the clock starts
        target, http_port = self._target(broker_port, self.run.prefix)
        url = f"http://127.0.0.1:{http_port}/ws"
        marks: dict[str, float | None] = {"http_s": None, "ready_s": None, "devices_s": None}
        profiler = None
        with target:
            started = time.time()
            cpu_broker0 = procs.cpu_seconds(broker.pid)
            machine0, window0 = procs.system_cpu()[0], time.monotonic()
            client.send("go", (url, started, len(devices), SNAPSHOT_TIMEOUT_S))
            if self.run.options.profile_dir:
                profiler = self.run._profiler(target, time.time())
            snapshot = self._watch(client, target, http_port, started, len(devices), marks)
            cpu_synced = procs.cpu_seconds(target.pid)
            window = time.monotonic() - window0
            # CPU used by processes this run did not start (the snapshot client's is left in:
            # it only waits and decodes one frame).
            others = procs.system_cpu()[0] - machine0 - cpu_synced
            others -= procs.cpu_seconds(broker.pid) - cpu_broker0
            self._settle()
            rss_synced = procs.memory_kib(target.pid)["rss"]
            telemetry = self._telemetry(client, broker_port, devices)
            self._settle()
            memory = procs.memory_kib(target.pid)
            cpu_end = procs.cpu_seconds(target.pid)
            if profiler is not None:
                finish_profile(profiler)
            log_tail = "" if target.alive() else target.log_tail()
        return {
            **self.run._header(0.0),
            "settings": self.settings,
            **marks,
            "snapshot": snapshot,
            "target_cpu_to_snapshot_s": round(cpu_synced, 3),
            "target_cpu_s": round(cpu_end, 3),
            "broker_cpu_s": round(procs.cpu_seconds(broker.pid) - cpu_broker0, 3),
            "others_cpu_pct": round(100 * max(0.0, others) / window, 1),
            "rss_synced_kib": rss_synced,
            "target_rss_kib": memory,
            "telemetry": telemetry,
            "target_log_tail": log_tail,
        }

    def _watch(
        self,
        client: Worker,
        target: procs.Child,
        http_port: int,
        started: float,
        expected: int,
        marks: dict[str, float | None],
    ) -> dict[str, Any]:
        """Poll the target until the snapshot client reports; fill in `marks` (seconds)."""
        deadline = time.monotonic() + SNAPSHOT_TIMEOUT_S + 10
        while time.monotonic() < deadline and target.alive():
            if client.conn.poll(POLL_S):  # also the 50 ms polling interval
                result: dict[str, Any] = client.expect("snapshot", 1)
                if marks["devices_s"] is None and result.get("complete"):
                    marks["devices_s"] = result["at_s"]  # it held them all to serve them
                if marks["ready_s"] is None:
                    # A small fleet can be served between two polls; at most 50 ms late.
                    procs.wait_until(lambda: _ready(self.target_kind, http_port), 30, "ready")
                    marks["ready_s"] = round(time.time() - started, 3)
                return result
            now = round(time.time() - started, 3)
            if marks["http_s"] is None and procs.port_open(http_port):
                marks["http_s"] = now
            if marks["ready_s"] is None and _ready(self.target_kind, http_port):
                marks["ready_s"] = now
            counting = marks["devices_s"] is None and self.target_kind == "gateway"
            if counting and (_device_count(http_port) or 0) >= expected:
                marks["devices_s"] = now
        return {"complete": False, "error": "no snapshot result (target died or timed out)"}

    def _telemetry(self, client: Worker, broker_port: int, devices: list[str]) -> dict[str, Any]:
        """One message per device; wait until the client has every row (or it stops growing)."""
        sender = RawPublisher(broker_port, f"{self.run.prefix}-telemetry")
        started = time.monotonic()
        try:
            for first in range(0, len(devices), CHUNK):
                chunk = devices[first : first + CHUNK]
                headers = [topic_header(f"{self.run.prefix}/{d}/telemetry") for d in chunk]
                sender.send([publish_packet(h, publisher.payload(0)) for h in headers])
        finally:
            sender.close()
        expected = 3 * len(devices)
        rows, last, last_change = 0, -1, time.monotonic()
        while time.monotonic() - started < TELEMETRY_MAX_S:
            client.send("poll")
            rows = client.expect("counts", 30)["rows"]
            if rows >= expected:
                break
            if rows != last:
                last, last_change = rows, time.monotonic()
            elif time.monotonic() - last_change > TELEMETRY_QUIET_S:
                break
            time.sleep(POLL_S)  # polling another process's counter
        return {"rows_expected": expected, "rows": rows, "s": round(time.monotonic() - started, 3)}


def _ready(kind: str, http_port: int) -> bool:
    return procs.target_ready(kind, http_port)


def _device_count(http_port: int) -> int | None:
    """Devices the gateway holds: from /readyz when it says, else summed from /metrics."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=2) as r:
            body = json.load(r)
    except urllib.error.HTTPError as exc:
        body = json.load(exc)
    except OSError:
        return None
    if "devices" in body:
        return int(body["devices"])
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    return int(
        sum(
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith("iotgw_devices{")
        )
    )


def _per_device(record: dict[str, Any], devices: int) -> dict[str, Any]:
    idle, synced = record["rss_idle_kib"], record["rss_synced_kib"]
    after = record["target_rss_kib"]["rss"]
    if not devices:
        return {"bytes_per_device": None, "bytes_per_device_with_telemetry": None}
    return {
        "bytes_per_device": round(1024 * (synced - idle) / devices),
        "bytes_per_device_with_telemetry": round(1024 * (after - idle) / devices),
    }


def one_line(record: dict[str, Any]) -> str:
    snap = record["snapshot"]
    size = f"{snap['bytes'] / 1e6:.1f} MB" if "bytes" in snap else "-"
    at = snap.get("at_s") if snap["complete"] else "never"
    retries = len(snap.get("incomplete", []))
    return (
        f"{record['scenario']:>5} {record['target']:<8} retained {record['retained_counted']:,}/"
        f"{record['retained_published']:,} | ready {record['ready_s']} s, all devices "
        f"{record['devices_s']} s, complete snapshot "
        f"{at} s ({size}, {retries} incomplete before) | cpu "
        f"{record['target_cpu_to_snapshot_s']} s | rss idle {record['rss_idle_kib'] // 1024} MiB, "
        f"{record['bytes_per_device']} B/device, {record['bytes_per_device_with_telemetry']} "
        f"B/device with telemetry | load {record['loadavg'][0]}"
    )

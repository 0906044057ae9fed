"""One scenario against one target: start everything, drive the load, measure, stop everything.

The orchestrator is synchronous; the broker and the target are subprocesses, the load generators
are `spawn`ed worker processes steered over pipes. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import commander, machine, procs, publisher, storm, subscriber
from bench.scenarios import STORM_STEPS, Scenario
from bench.stats import Histogram
from bench.workers import Worker, Workers, broadcast, gather

READY_TIMEOUT_S = 60.0
DRAIN_MAX_S = 15.0
DRAIN_QUIET_S = 1.5
SETTLE_S = 0.5
#: The slow clients' socket receive buffer. Loopback buffers otherwise grow to several MB on each
#: side, which a client reading at 10% takes minutes to fill: the gateway's outbox, coalescing and
#: eviction would never be reached within a run.
SLOW_RECEIVE_BUFFER = 16 * 1024


@dataclass(frozen=True, slots=True)
class Options:
    publisher_mode: str = "raw"
    gateway_python: str | None = None  # another interpreter, e.g. a venv with uvloop
    gateway_tree: Path | None = None  # another checkout's gateway package
    gc_probe: bool = False  # record the gateway's garbage-collector pauses
    profile_dir: Path | None = None  # attach py-spy to the target and write speedscope here
    invocation: str = ""
    broker_conf: tuple[str, ...] = ()  # extra mosquitto.conf lines (e.g. its queue limits)
    nice_load: int = 0  # run the load generators at this niceness (the target keeps 0)


def split(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total)) if total else 1
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def device_ids(count: int, letter: str = "d") -> list[str]:
    return [f"{letter}{i:05d}" for i in range(count)]


class Run:
    """One target under one scenario; `execute()` returns one record per step."""

    def __init__(self, scenario: Scenario, target: str, options: Options) -> None:
        self.scenario = scenario
        self.target = target
        self.options = options
        self.prefix = f"bench{os.getpid()}x{int(time.time() * 1000) % 100000}"
        self._gc_file = Path(f"/tmp/iotgw-bench-gc-{self.prefix}.json")
        self._target_pid = 0
        self.rss_subscribed = 0
        self._http_port = 0
        self._storm: list[Worker] = []

    def execute(self) -> list[dict[str, Any]]:
        if self.scenario.cold_start:
            from bench.coldstart import ColdStart

            return ColdStart(self).execute()
        broker, broker_port = procs.broker(self.options.broker_conf)
        target, http_port = procs.target(
            self.target,
            broker_port,
            self.prefix,
            self.scenario.settings,
            self.options.gateway_python if self.target == "gateway" else None,
            self.options.gateway_tree,
            self._gc_file if self.options.gc_probe else None,
        )
        # Exit order: load generators, then the target, then the broker.
        with broker:
            procs.wait_until(lambda: procs.port_open(broker_port), 15, "mosquitto")
            with target, Workers(self.options.nice_load) as workers:
                try:
                    procs.wait_until(
                        lambda: procs.target_ready(self.target, http_port), 30, self.target
                    )
                except TimeoutError:
                    raise RuntimeError(f"{self.target}: {target.log_tail()}") from None
                records = self._steps(workers, broker, target, broker_port, http_port)
            if self.options.gc_probe and self._gc_file.exists():
                # The probe writes at exit and covers the whole life of the gateway.
                records[-1]["gateway_gc"] = json.loads(self._gc_file.read_text())
                self._gc_file.unlink()
            return records

    # --- set-up ----------------------------------------------------------------------------------

    def _start_load(
        self, workers: Workers, broker_port: int, http_port: int
    ) -> tuple[list[Worker], list[Worker], list[Worker]]:
        """Subscribers first (ready = subscribed), then publishers or the commander, and the
        storm fleet's workers (idle until their step)."""
        s = self.scenario
        url = f"http://127.0.0.1:{http_port}/ws"
        subs: list[Worker] = []
        first = 0
        for i, count in enumerate(split(s.clients, s.subscriber_procs) if s.clients else []):
            config = subscriber.SubscriberConfig(
                url,
                count,
                first,
                s.full_every,
                narrow=s.narrow,
                device_count=s.devices,
                compress=s.compress,
            )
            subs.append(workers.add(Worker(f"subscriber-{i}", subscriber.run, config)))
            first += count
        slow: list[Worker] = []
        if s.slow_clients:
            config = subscriber.SubscriberConfig(
                url,
                s.slow_clients,
                first,
                1,
                "slow",
                s.slow_fraction * max(s.rates),
                receive_buffer=SLOW_RECEIVE_BUFFER,
            )
            slow.append(workers.add(Worker("slow-subscribers", subscriber.run, config)))
        gather(subs + slow, "ready", READY_TIMEOUT_S + s.clients / 20)
        # Memory per connection (S4) before any telemetry: sessions and subscriptions only.
        self.rss_subscribed = procs.memory_kib(self._target_pid)["rss"]
        drivers: list[Worker] = []
        devices = device_ids(s.devices)
        if s.commands_per_s:
            config_c = commander.CommanderConfig(
                url, broker_port, self.prefix, devices, s.command_clients
            )
            drivers.append(workers.add(Worker("commander", commander.run, config_c)))
        else:
            for i in range(s.publishers):
                config_p = publisher.PublisherConfig(
                    broker_port,
                    self.prefix,
                    devices[i :: s.publishers],
                    f"{self.prefix}-pub{i}",
                    self.options.publisher_mode,
                    s.warmup,
                )
                drivers.append(workers.add(Worker(f"publisher-{i}", publisher.run, config_p)))
        fleet = device_ids(s.storm_devices, "s")
        for i in range(s.storm_procs if s.storm_devices else 0):
            config_s = storm.StormConfig(broker_port, self.prefix, fleet[i :: s.storm_procs])
            self._storm.append(workers.add(Worker(f"storm-{i}", storm.run, config_s)))
        gather(drivers + self._storm, "ready", READY_TIMEOUT_S)
        if s.commands_per_s and self.target == "gateway":
            procs.wait_until(lambda: _metas_known(http_port, len(devices)), 30, "device metas")
        return subs, slow, drivers

    # --- measurement -----------------------------------------------------------------------------

    def _steps(
        self,
        workers: Workers,
        broker: procs.Child,
        target: procs.Child,
        broker_port: int,
        http_port: int,
    ) -> list[dict[str, Any]]:
        s = self.scenario
        rss_idle = procs.memory_kib(target.pid)["rss"]
        self._target_pid = target.pid
        self._http_port = http_port if self.target == "gateway" else 0
        subs, slow, drivers = self._start_load(workers, broker_port, http_port)
        if s.warmup:
            # Counting starts once every client has its warm-up readings (n = 0, 3 rows per
            # device).
            per_client = s.narrow or s.devices
            self._drain(subs, per_client * 3 * s.clients, "rows")
        time.sleep(SETTLE_S)
        rss_connected = procs.memory_kib(target.pid)["rss"]
        broadcast(subs + slow, "collect")
        gather(subs + slow, "result", 30)
        records: list[dict[str, Any]] = []
        for step, rate in enumerate(s.rates):
            record = self._step(subs, slow, drivers, broker, target, rate, step)
            record.update(
                step=step,
                gateway_counters=(
                    procs.gateway_counters(http_port) if self.target == "gateway" else None
                ),
                rss_idle_kib=rss_idle,
                rss_subscribed_kib=self.rss_subscribed,
                rss_connected_kib=rss_connected,
            )
            records.append(record)
            if self._saturated(record):
                break
        return records

    def _step(
        self,
        subs: list[Worker],
        slow: list[Worker],
        drivers: list[Worker],
        broker: procs.Child,
        target: procs.Child,
        rate: float,
        step: int,
    ) -> dict[str, Any]:
        s = self.scenario
        rate_each = (s.commands_per_s if s.commands_per_s else rate) / len(drivers)
        start_at = time.time() + 0.3
        profiler = self._profiler(target, start_at) if self.options.profile_dir else None
        gateway0 = procs.gateway_samples(self._http_port) if self._http_port else {}
        cpu0 = procs.cpu_seconds(target.pid), procs.cpu_seconds(broker.pid), time.monotonic()
        machine0 = procs.system_cpu()
        broadcast(drivers, "go", (start_at, rate_each, s.duration))
        storm_step = STORM_STEPS[step] if self._storm and step < len(STORM_STEPS) else None
        if storm_step == "appear":
            broadcast(self._storm, "appear", (start_at, s.appear_s))
        elif storm_step == "wills":
            broadcast(self._storm, "wills", (start_at, s.wills_s))
        sent = gather(drivers, "done", s.duration + 60)
        storm_done = (
            gather(self._storm, "appeared" if storm_step == "appear" else "cut", 120)
            if storm_step
            else None
        )
        published = sum(d["sent"] for d in sent)
        expected = self._expected([d["sent"] for d in sent])
        drain = self._drain(subs, expected)
        cpu1 = procs.cpu_seconds(target.pid), procs.cpu_seconds(broker.pid), time.monotonic()
        machine1 = procs.system_cpu()
        gateway1 = procs.gateway_samples(self._http_port) if self._http_port else {}
        broadcast(subs + slow, "collect")
        healthy = merge_groups(gather(subs, "result", 60))
        slow_group = merge_groups(gather(slow, "result", 60)) if slow else None
        if profiler is not None:
            _finish(profiler)
        window = cpu1[2] - cpu0[2]
        elapsed = max(d["elapsed_s"] for d in sent) or s.duration
        ours = (
            cpu1[0]
            - cpu0[0]
            + cpu1[1]
            - cpu0[1]
            + healthy["cpu_s"]
            + sum(d["cpu_s"] for d in sent)
            + (slow_group["cpu_s"] if slow_group else 0)
            + sum(d.get("cpu_s", 0.0) for d in storm_done or ())
        )
        machine_busy = machine1[0] - machine0[0]
        return {
            **self._header(rate),
            "published": published,
            "publisher_achieved_rate": round(published / elapsed, 1),
            "publisher_cpu_s": round(sum(d["cpu_s"] for d in sent), 3),
            "publisher_max_behind_s": max(d.get("max_behind_s", 0.0) for d in sent),
            "commands": _command_summary(sent) if s.commands_per_s else None,
            "expected": expected,
            "delivered": healthy["delivered"],
            "delivery_ratio": round(healthy["delivered"] / expected, 5) if expected else None,
            "deliveries_per_s": round(healthy["delivered"] / elapsed, 1),
            "latency_ms": healthy.pop("latency_ms"),
            "ingest_latency_ms": healthy.pop("ingest_latency_ms"),
            "clients": healthy,
            "slow_clients": slow_group,
            "drain_s": round(drain, 2),
            "window_s": round(window, 2),
            "storm": (
                {"step": storm_step, "devices": s.storm_devices, "workers": storm_done}
                if storm_step
                else None
            ),
            # The gateway's event loop and fan-out, as it saw them (empty for the naive bridge).
            "gateway": procs.step_view(gateway0, gateway1, window),
            "frames_per_client_per_s": round(healthy["frames"] / max(s.clients, 1) / window, 1),
            "target_cpu_s": round(cpu1[0] - cpu0[0], 3),
            "target_cpu_pct": round(100 * (cpu1[0] - cpu0[0]) / window, 1),
            "target_rss_kib": procs.memory_kib(target.pid),
            "broker_cpu_pct": round(100 * (cpu1[1] - cpu0[1]) / window, 1),
            "client_cpu_pct": round(100 * healthy["cpu_s"] / window, 1),
            "machine_busy_pct": round(100 * machine_busy / window, 1),
            # CPU used by processes this run did not start (other people's work on the box).
            "others_cpu_pct": round(100 * max(0.0, machine_busy - ours) / window, 1),
        }

    def _expected(self, sent: list[int]) -> int:
        """Messages the healthy clients should receive, given what each publisher sent."""
        s = self.scenario
        if not s.narrow:
            return sum(sent) * s.clients
        # Each publisher goes round robin over its own slice of the devices.
        devices = device_ids(s.devices)
        per_device: dict[str, int] = {}
        for i, count in enumerate(sent):
            mine = devices[i :: len(sent)]
            for k, device in enumerate(mine):
                per_device[device] = count // len(mine) + (1 if k < count % len(mine) else 0)
        total = 0
        for index in range(s.clients):
            config = subscriber.SubscriberConfig("", 0, narrow=s.narrow, device_count=s.devices)
            total += sum(per_device.get(d, 0) for d in subscriber.devices_for(config, index))
        return total

    def _header(self, rate: float) -> dict[str, Any]:
        s = self.scenario
        return {
            "invocation": self.options.invocation,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "git_commit": machine.git_commit(),
            "target": self.target,
            "scenario": s.name,
            "params": {
                "devices": s.devices,
                "rate": rate,
                "duration_s": s.duration,
                "clients": s.clients,
                "slow_clients": s.slow_clients,
                "commands_per_s": s.commands_per_s,
                "publishers": s.publishers,
                "subscriber_procs": s.subscriber_procs,
                "full_every": s.full_every,
                "narrow": s.narrow,
                "compress": s.compress,
                "settings": s.settings,
                "publisher_mode": self.options.publisher_mode,
                "gateway_python": self.options.gateway_python,
                "gateway_tree": str(self.options.gateway_tree or ""),
                "broker_conf": list(self.options.broker_conf),
                "nice_load": self.options.nice_load,
            },
            "machine": machine.describe(),
            "loadavg": [round(x, 2) for x in os.getloadavg()],
            "busy_at_start": machine.busy_processes(),
        }

    def _drain(self, subs: list[Worker], expected: int, key: str = "msgs") -> float:
        """Wait until the clients counted everything, or the count stopped moving."""
        started = last_change = time.monotonic()
        last = -1
        while subs and time.monotonic() - started < DRAIN_MAX_S:
            broadcast(subs, "poll")
            total = sum(c[key] for c in gather(subs, "counts", 30))
            now = time.monotonic()
            if total >= expected:
                break
            if total != last:
                last, last_change = total, now
            elif now - last_change > DRAIN_QUIET_S:
                break
            time.sleep(0.1)  # polling other processes' counters
        return time.monotonic() - started

    def _saturated(self, record: dict[str, Any]) -> bool:
        s = self.scenario
        p99 = record["latency_ms"]["p99"]
        ratio = record["delivery_ratio"]
        return bool(
            (s.stop_p99_ms is not None and (p99 is None or p99 > s.stop_p99_ms))
            or (s.stop_delivery is not None and (ratio is None or ratio < s.stop_delivery))
        )

    def _profiler(self, target: procs.Child, start_at: float) -> procs.Child | None:
        directory = self.options.profile_dir
        assert directory is not None
        directory.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = directory / f"{self.scenario.name}-{self.target}-{stamp}.speedscope.json"
        argv = ["py-spy", "record", "--pid", str(target.pid), "--format", "speedscope"]
        argv += ["--rate", "200", "--nonblocking", "--duration", str(int(self.scenario.duration))]
        argv += ["--output", str(out)]
        time.sleep(max(0.0, start_at - time.time()))
        return procs.Child("py-spy", argv).start()


def merge_groups(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the subscriber processes' counts; merge their latency histograms."""
    latency, ingest = Histogram(), Histogram()
    total: dict[str, Any] = {"clients": 0, "delivered": 0, "cpu_s": 0.0}
    for result in results:
        latency.merge(Histogram.from_json(result.pop("latency")))
        ingest.merge(Histogram.from_json(result.pop("ingest_latency")))
        for key, value in result.items():
            if key.endswith("_min_client"):
                total[key] = min(total.get(key, value), value)
            elif key == "loop_stall_max_ms":
                total[key] = max(total.get(key, value), value)
            elif isinstance(value, int | float):
                total[key] = total.get(key, 0) + value
            elif isinstance(value, list):
                total[key] = sorted(set(total.get(key, [])) | set(value))
    total["latency_ms"] = latency.summary_ms()
    total["ingest_latency_ms"] = ingest.summary_ms()
    return total


def _command_summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    result = dict(results[0])
    result["rtt_ms"] = Histogram.from_json(result.pop("rtt")).summary_ms()
    return result


def _finish(profiler: procs.Child) -> None:
    """py-spy stops by itself after --duration; wait for it to write its file."""
    if profiler.process is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            profiler.process.wait(timeout=60)
    profiler.stop()


def _metas_known(http_port: int, count: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/api/devices", timeout=2) as r:
            devices = json.load(r)["devices"]
    except OSError:
        return False
    return sum(d.get("meta") is not None for d in devices) >= count


def as_dict(options: Options) -> dict[str, Any]:
    return asdict(options)

"""Child processes the orchestrator owns (broker, target) and what /proc says about them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from gateway.brokers import find_mosquitto, free_port, mosquitto_config

REPO = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
START_TIMEOUT_S = 20.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def system_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / CLOCK_TICKS, sum(values) / CLOCK_TICKS


def idle_pct(seconds: float = 2.0) -> float:
    """How idle the machine is over the next `seconds`, as % of all cores."""
    busy0, total0 = system_cpu()
    time.sleep(seconds)
    busy1, total1 = system_cpu()
    return 100.0 * (1 - (busy1 - busy0) / max(total1 - total0, 1e-9))


def memory_kib(pid: int) -> dict[str, int]:
    """Current (VmRSS) and peak (VmHWM) resident set size, KiB."""
    found: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                found[key] = int(value.split()[0])
    return {"rss": found.get("VmRSS", 0), "peak": found.get("VmHWM", 0)}


def wait_until(check: object, timeout: float, what: str) -> None:
    """Poll `check()` every 50 ms until it is true; TimeoutError naming `what` otherwise."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f}s")
        time.sleep(0.05)  # a child process starting up: nothing to wait on but time


def port_open(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


class Child:
    """One subprocess with a log file; stopped (TERM, then KILL) on exit of the `with` block."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path = REPO
    ) -> None:
        self.name = name
        self.cwd = cwd
        self.argv = argv
        self.env = env
        self.dir = Path(tempfile.mkdtemp(prefix=f"iotgw-bench-{name}-"))
        self.log_path = self.dir / "output.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> Child:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd
            )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> Child:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        if os.environ.get("BENCH_KEEP_LOGS"):
            print(f"bench: {self.name} log kept in {self.log_path}", file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def broker(extra: tuple[str, ...] = ()) -> tuple[Child, int]:
    """A fresh mosquitto on a free loopback port (not yet started); `extra` lines are appended
    to the gateway's shipped config (a later line overrides an earlier one)."""
    binary = find_mosquitto()
    if binary is None:
        raise RuntimeError("mosquitto not found (apt-get install mosquitto)")
    port = free_port()
    child = Child("mosquitto", [binary, "-c", "CONFIG"])
    config = child.dir / "mosquitto.conf"
    config.write_text(mosquitto_config(port) + "".join(line + "\n" for line in extra))
    child.argv[-1] = str(config)
    return child, port


def target(
    kind: str,
    broker_port: int,
    prefix: str,
    settings: dict[str, str],
    python: str | None = None,
    tree: Path | None = None,
    gc_probe: Path | None = None,
    retained: bool = False,
) -> tuple[Child, int]:
    """The gateway or the naive bridge (not yet started), on a free HTTP port.

    `tree`: run the gateway package of another checkout (A/B tests of a patch). `retained`: the
    naive bridge also keeps meta and status and serves snapshots (S6; the gateway always does)."""
    port = free_port()
    exe = python or sys.executable
    env = dict(os.environ)
    # The checkout under test first (its gateway/), then this one (bench.gcprobe).
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (tree, REPO) if p is not None)
    if kind == "gateway":
        for key, value in settings.items():
            env["IOTGW_" + key.upper().replace(".", "__")] = value
        argv = [exe, "-m", "bench.gcprobe", str(gc_probe)] if gc_probe else [exe, "-m"]
        argv += ["gateway", "run", "--broker", f"mqtt://127.0.0.1:{broker_port}"]
        argv += ["--port", str(port), "--prefix", prefix]
        argv += ["--log-level", settings.get("log.level", "warning")]
    elif kind == "naive":
        argv = [exe, "-m", "bench.baselines.naive_bridge", "--broker-port", str(broker_port)]
        argv += ["--port", str(port), "--prefix", prefix]
        argv += ["--retained"] if retained else []
    else:
        raise ValueError(f"unknown target {kind!r}")
    child = Child(kind, argv, env, (tree or REPO) if kind == "gateway" else REPO)
    has_history = ((tree or REPO) / "gateway" / "store").is_dir()  # an older tree has none
    if (
        kind == "gateway"
        and has_history
        and not {"history.data_dir", "history.path"} & settings.keys()
    ):
        # History as shipped (SQLite unless --set history.backend=…), in this run's own
        # directory: never in the checkout, never shared between runs.
        env["IOTGW_HISTORY__DATA_DIR"] = str(child.dir / "history")
    return child, port


def target_ready(kind: str, port: int) -> bool:
    if kind == "naive":
        # The naive bridge subscribes before it listens: an open port means it is ready.
        return port_open(port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


#: What the gateway itself says about clients that fell behind (its /metrics).
_SLOW_CLIENT_COUNTERS = ("iotgw_readings_coalesced", "iotgw_ws_closed_by_gateway")
#: The gateway's own view of a step: its event loop's lateness (sampled every 10 ms inside the
#: gateway), batches flushed, frames sent and device events batched.
_STEP_METRICS = (
    "iotgw_event_loop_lateness_seconds",
    "iotgw_event_loop_lateness_max_seconds",
    "iotgw_batches",
    "iotgw_ws_frames_sent",
    "iotgw_device_events",
    "iotgw_history_points_written",
    "iotgw_history_points_dropped",
    "iotgw_history_queued_points",
)


def _scrape(port: int) -> str:
    # Generous: a target still busy with a storm answers late, and late is still an answer.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as response:
        return response.read().decode()


def gateway_counters(port: int) -> dict[str, float]:
    """The gateway's slow-client counters, e.g. {"iotgw_ws_closed_by_gateway{slow_consumer}": 5}.

    A client reading at 10% sees its lag or its close only after it has read everything queued
    before it (minutes, for S7's clients); the gateway counts them when they happen.
    """
    counters: dict[str, float] = {}
    for family in text_string_to_metric_families(_scrape(port)):
        if family.name not in _SLOW_CLIENT_COUNTERS:
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                labels = ",".join(sample.labels.values())
                counters[f"{family.name}{{{labels}}}" if labels else family.name] = sample.value
    return counters


def gateway_samples(port: int) -> dict[str, float]:
    """The step metrics' samples by name and labels, e.g. {"iotgw_batches_total": 812.0,
    "iotgw_event_loop_lateness_seconds_bucket{le=0.1}": 4093.0}; empty for a gateway that does
    not export them (an older checkout under --gateway-tree)."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(_scrape(port)):
        if family.name not in _STEP_METRICS:
            continue
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sample.labels.items())
            found[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return found


def step_view(before: dict[str, float], after: dict[str, float], window_s: float) -> dict[str, Any]:
    """What the gateway did during one step, from two `gateway_samples`: its event loop's
    lateness (the worst tick, the sum, ticks later than 100 ms), batches and frames per second,
    device events, and the history store's points written and dropped during the step and
    queued at its end (a writer that falls behind drops: history on is only on if it keeps up).
    The worst tick is exact when it happened during the step (the max only
    grows); otherwise it is bounded by the histogram's buckets."""

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    if "iotgw_event_loop_lateness_seconds_count" not in after:
        return {}
    ticks = delta("iotgw_event_loop_lateness_seconds_count")
    max_before = before.get("iotgw_event_loop_lateness_max_seconds", 0.0)
    max_after = after.get("iotgw_event_loop_lateness_max_seconds", 0.0)
    if max_after > max_before:
        worst_ms: float | str = round(1000 * max_after, 1)
    else:
        bounds = sorted(
            (float(key.split("le=")[1].rstrip("}")), key)
            for key in after
            if key.startswith("iotgw_event_loop_lateness_seconds_bucket{")
        )
        worst = next((b for b, key in bounds if delta(key) >= ticks), float("inf"))
        worst_ms = f"<= {1000 * worst:g}"
    over_100ms = ticks - delta("iotgw_event_loop_lateness_seconds_bucket{le=0.1}")
    return {
        "loop_ticks": int(ticks),
        "loop_late_max_ms": worst_ms,
        "loop_late_total_ms": round(1000 * delta("iotgw_event_loop_lateness_seconds_sum"), 1),
        "loop_ticks_over_100ms": int(over_100ms),
        "batches_per_s": round(delta("iotgw_batches_total") / window_s, 1),
        "frames_sent": int(delta("iotgw_ws_frames_sent_total")),
        "device_events": int(delta("iotgw_device_events_total")),
        "history_written_per_s": round(delta("iotgw_history_points_written_total") / window_s),
        "history_dropped": int(
            sum(delta(k) for k in after if k.startswith("iotgw_history_points_dropped_total"))
        ),
        "history_queued": int(after.get("iotgw_history_queued_points", 0.0)),
    }

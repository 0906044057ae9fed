"""Smoke test of the bench suite: one tiny scenario against both targets (never asserts speed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.brokers import find_mosquitto

REPO = Path(__file__).resolve().parents[2]
#: The bench starts a broker of its own, even when IOTGW_TEST_BROKER names another one.
needs_mosquitto = pytest.mark.skipif(
    find_mosquitto() is None,
    reason="the bench starts its own broker and no mosquitto binary was found: "
    "apt-get install mosquitto (scripts/test installs it)",
)
FIELDS = {
    "target",
    "scenario",
    "params",
    "published",
    "delivered",
    "delivery_ratio",
    "deliveries_per_s",
    "latency_ms",
    "target_cpu_s",
    "target_rss_kib",
    "client_cpu_pct",
    "publisher_achieved_rate",
    "git_commit",
    "timestamp",
    "machine",
}


@pytest.mark.timeout(20)
@needs_mosquitto
def test_smoke_scenario_writes_one_record_per_target(tmp_path: Path) -> None:
    """`bench run -s smoke` against both targets appends two complete records with deliveries."""
    results = tmp_path / "results.jsonl"
    argv = [sys.executable, "-m", "bench", "run", "-s", "smoke", "--runs", "1"]
    argv += ["--duration", "1", "--results", str(results)]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=19)
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert sorted(r["target"] for r in records) == ["gateway", "naive"]
    for record in records:
        assert record.keys() >= FIELDS
        assert record["delivered"] > 0
        assert {"p50", "p90", "p99", "max"} <= record["latency_ms"].keys()


@pytest.mark.timeout(40)
@needs_mosquitto
def test_cold_start_scenario_serves_a_complete_snapshot(tmp_path: Path) -> None:
    """`bench run -s S6 --devices 200 --target gateway`: the broker holds all 400 retained
    messages, the gateway says ready and serves a complete snapshot (no speed asserted)."""
    results = tmp_path / "results.jsonl"
    argv = [sys.executable, "-m", "bench", "run", "-s", "S6", "--runs", "1", "--devices", "200"]
    argv += ["--target", "gateway", "--results", str(results)]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=35)
    assert done.returncode == 0, done.stderr[-2000:]
    [record] = [json.loads(line) for line in results.read_text().splitlines()]
    assert record["retained_counted"] == record["retained_published"] == 400
    assert record["snapshot"]["complete"], record["snapshot"]
    assert record["snapshot"]["devices"] == 200
    assert record["telemetry"]["rows"] == 600
    assert record["ready_s"] is not None


@pytest.mark.timeout(60)
@pytest.mark.skipif(find_mosquitto() is None, reason="needs mosquitto")
def test_storm_scenario_records_the_gateways_loop_and_every_event(tmp_path: Path) -> None:
    """`bench run -s S8`, scaled down: 200 devices appear (step 0), then their wills (step 1);
    each step's record holds the gateway's own view (loop lateness, batches) and every client saw
    an event per storm device (no speed asserted)."""
    results = tmp_path / "results.jsonl"
    argv = [sys.executable, "-m", "bench", "run", "-s", "S8", "--runs", "1", "--target", "gateway"]
    argv += ["--storm-devices", "200", "--storm-procs", "1", "--clients", "4", "--devices", "5"]
    argv += ["--subscriber-procs", "1", "--duration", "2", "--rates", "100,100"]
    argv += ["--results", str(results)]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=55)
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert [(r["step"], r["storm"]["step"]) for r in records] == [(0, "appear"), (1, "wills")]
    for record in records:
        assert record["gateway"]["loop_ticks"] > 0
        assert record["gateway"]["batches_per_s"] > 0
        assert record["clients"]["events_min_client"] >= 200
        assert record["clients"]["seq_errors"] == 0
        assert record["delivered"] > 0

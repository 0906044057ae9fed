"""Fault shares, their deterministic assignment, and malformed payloads the gateway must refuse."""

from __future__ import annotations

import random

import pytest

from gateway.conventions.native import NativeConvention
from gateway.errors import ConfigError, DecodeError
from gateway.models import Rejected, Telemetry
from simulators.faults import (
    MALFORMED_KINDS,
    DeviceFaults,
    FaultConfig,
    Share,
    assign_faults,
    malformed_payload,
)

VALUES = {"temperature": 21.5, "humidity": 40.0}


@pytest.mark.parametrize(
    ("text", "size_of_40"),
    [("3", 3), ("0", 0), ("0.1", 4), ("25%", 10), ("1.0", 40), ("100", 40), (2, 2), (0.5, 20)],
)
def test_share_parses_counts_and_fractions(text: str | float, size_of_40: int) -> None:
    """A share is a count or a fraction (rounded up), capped at the fleet size."""
    assert Share.parse(text).size(40) == size_of_40


@pytest.mark.parametrize("text", ["-1", "abc", "150%", "1.5", "nan"])
def test_bad_shares_are_refused(text: str) -> None:
    """Negative, non-numeric and over-100% shares raise ValueError."""
    with pytest.raises(ValueError, match=r"count|fraction"):
        Share.parse(text)


def test_faults_pick_the_requested_devices_deterministically() -> None:
    """Each fault affects the requested number of devices, the same ones for the same seed."""
    config = FaultConfig(drop=Share(2), skew=Share(fraction=0.5), ignore_commands=Share(1))
    first = assign_faults(config, 10, random.Random(5))
    assert first == assign_faults(config, 10, random.Random(5))
    assert sum(f.drop for f in first) == 2
    assert sum(f.skew_s != 0 for f in first) == 5
    assert {abs(f.skew_s) for f in first if f.skew_s} == {300.0}
    assert sum(f.ignore_commands for f in first) == 1
    assert sum(f.malformed or f.burst for f in first) == 0


def test_no_faults_by_default() -> None:
    """Without fault settings every device is well behaved."""
    assert not any(f.any for f in assign_faults(FaultConfig(), 20, random.Random(1)))
    assert DeviceFaults(burst=True).any


@pytest.mark.parametrize("kind", MALFORMED_KINDS)
@pytest.mark.parametrize("seed", range(6))
def test_malformed_payloads_are_refused_by_the_gateway(kind: str, seed: int) -> None:
    """Every malformed payload makes the native convention raise or reject part of it."""
    payload = malformed_payload(kind, dict(VALUES), 1.0, random.Random(seed), 1000)
    native = NativeConvention()
    try:
        events = native.decode("iotgw/env-1/telemetry", payload, 0.0)
    except DecodeError:
        return
    if kind == "oversize":
        # Valid JSON: refusing it is the gateway's size limit's job; here only the size matters.
        assert len(payload) > 1000
        assert any(isinstance(e, Telemetry) for e in events)
    else:
        assert any(isinstance(e, Rejected) for e in events)


def test_fault_config_validates() -> None:
    """Nonsensical fault settings name the key."""
    with pytest.raises(ConfigError, match=r"faults\.burst_size"):
        FaultConfig(burst_size=0)
    with pytest.raises(ConfigError, match=r"faults\.malformed_ratio"):
        FaultConfig(malformed_ratio=2)

"""The plain counters of gateway.stats, and how metrics.py renders the bucket histogram."""

from __future__ import annotations

import pytest

from gateway.metrics import histogram_family
from gateway.stats import Buckets


def test_buckets_count_each_value_once_in_the_first_bound_that_holds_it():
    """A value equal to a bound counts in that bound's bucket; above every bound, in the last."""
    buckets = Buckets((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 1.0, 7.0):
        buckets.observe(value)
    assert buckets.counts == [2, 2, 1]
    assert buckets.total == pytest.approx(8.65)


def test_histogram_family_is_cumulative_with_count_and_sum():
    """Rendered for Prometheus, bucket counts are cumulative up to +Inf, with _count and _sum."""
    buckets = Buckets((0.1, 1.0))
    for value in (0.05, 0.5, 7.0):
        buckets.observe(value)
    samples = {
        (s.name, s.labels.get("le")): s.value
        for s in histogram_family("x_seconds", "help", buckets).samples
    }
    assert samples[("x_seconds_bucket", "0.1")] == 1
    assert samples[("x_seconds_bucket", "1.0")] == 2
    assert samples[("x_seconds_bucket", "+Inf")] == 3
    assert samples[("x_seconds_count", None)] == 3
    assert samples[("x_seconds_sum", None)] == pytest.approx(7.55)

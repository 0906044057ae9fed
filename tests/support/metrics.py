"""Reading the gateway's /metrics body (Prometheus text) in tests."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def metric(body: str, name: str, **labels: str) -> float:
    """The value of the first sample called `name` whose labels include `labels` (0 when there
    is none: a labelled counter has no sample until it first counts)."""
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return float(sample.value)
    return 0.0

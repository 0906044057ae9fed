"""The history store's queue: what the relay path leaves behind for the writer (issue 13's
cost on the hot path). Readings are queued as JSON bytes, which the garbage collector does not
traverse, and what JSON cannot carry is counted, not lost silently."""

from __future__ import annotations

import gc
import math

import orjson

from gateway.config import load_config
from gateway.store import HistoryStore, build_store
from gateway.store.base import WriteBatch, encode_readings


def sqlite_store(tmp_path) -> HistoryStore:
    config = load_config(
        env={}, overrides={"history.backend": "sqlite", "history.data_dir": str(tmp_path)}
    )
    return build_store(config, lambda device, metric: None, "test")


def test_queued_messages_leave_nothing_for_the_collector(tmp_path):
    """10,000 queued messages add (next to) no object the collector tracks. Fails before: a
    list per message (and its reading tuples until a pass untracked them) stayed tracked until
    the next commit, were promoted to the oldest generation, and full collections of 40 to
    200 ms stalled the event loop under load (bench S3i with history on)."""
    store = sqlite_store(tmp_path)
    gc.collect()
    tracked_before = len(gc.get_objects())
    for n in range(10_000):
        device = f"d-{n % 100}"
        store.append(
            [(device, "t", 1764000000.0 + n, 21.5), (device, "h", 1764000000.0 + n, 40)], "native"
        )
    gc.collect()
    assert store.queued == 20_000
    assert len(gc.get_objects()) - tracked_before < 100


def test_readings_json_carries_every_type_and_the_conventions():
    """The queued form reads back as the readings themselves (NaN as null: the backends refuse
    it as a bad value), and the batch says each device's convention."""
    first, _ = encode_readings([("a", "t", 1.5, 21.5), ("a", "on", 1.5, True)])
    second, _ = encode_readings([("b", "mode", 2.0, "heat"), ("b", "n", 2.0, -(2**53))])
    third, _ = encode_readings([("c", "bad", 3.0, math.nan)])
    batch = WriteBatch([(first, 2, "a", "native"), (second, 2, "b", "homie"), (third, 1, "c", "")])
    assert batch.count == 5
    assert orjson.loads(batch.readings_json()) == [
        ["a", "t", 1.5, 21.5],
        ["a", "on", 1.5, True],
        ["b", "mode", 2.0, "heat"],
        ["b", "n", 2.0, -(2**53)],
        ["c", "bad", 3.0, None],
    ]
    assert orjson.loads(batch.readings_json(1, 2)) == [
        ["b", "mode", 2.0, "heat"],
        ["b", "n", 2.0, -(2**53)],
    ]
    assert orjson.loads(batch.conventions_json()) == {"a": "native", "b": "homie", "c": ""}


def test_what_json_cannot_carry_is_counted_as_a_bad_value(tmp_path):
    """A string that is not valid Unicode (a lone surrogate) or an integer past 64 bits cannot
    be stored: it is left out and counted; the message's other readings are kept."""
    store = sqlite_store(tmp_path)
    store.append(
        [("d", "ok", 1.0, 1.0), ("d", "text", 1.0, "bad \ud800"), ("d", "big", 1.0, 2**70)],
        "native",
    )
    assert store.queued == 1
    assert store.stats.dropped["bad_value"] == 2
    encoded, refused = encode_readings([("d", "text", 1.0, "\udfff")])
    assert (encoded, refused) == (b"", 1)

"""gateway/cluster.py: instance ids, command ids that name their instance, the writer link's
shared filters, and the pairing of a message's two copies (Claims)."""

from __future__ import annotations

import pytest

from gateway.cluster import (
    Claims,
    command_owner,
    covers,
    default_instance_id,
    new_command_id,
    shared_filters,
    with_instance_id,
)
from gateway.config import INSTANCE_ID, Config, load_config
from gateway.errors import ConfigError
from gateway.models import Reading


def test_default_instance_id_is_the_host_name_plus_a_suffix_and_valid():
    """The default id is id-safe, at most 40 characters, and differs between processes."""
    first, second = default_instance_id(), default_instance_id()
    assert INSTANCE_ID.fullmatch(first)
    assert first != second
    assert first.rsplit("-", 1)[0] == second.rsplit("-", 1)[0]


def test_with_instance_id_fills_in_only_an_empty_id():
    """An empty cluster.instance_id is filled in once; a configured one stays."""
    filled = with_instance_id(Config())
    assert filled.cluster.instance_id
    assert with_instance_id(filled) is filled
    named = load_config(env={}, overrides={"cluster.instance_id": "gw-a"})
    assert with_instance_id(named).cluster.instance_id == "gw-a"


@pytest.mark.parametrize("instance", ["gw-a", "node.7_b-3f2a1c", "x" * 40])
def test_command_ids_name_their_instance(instance):
    """A command id carries its instance and fits the protocol's 64 characters."""
    command_id = new_command_id(instance)
    assert command_owner(command_id) == instance
    assert len(command_id) <= 64


@pytest.mark.parametrize(
    "command_id", ["c-nobody", "c-5f0a9e31c2d4b7a8", "c-gw-a-XYZ", "x-gw-a-0123456789abcdef", ""]
)
def test_ids_that_are_not_the_gateways_have_no_owner(command_id):
    """Old-style, foreign or forged ids name no instance."""
    assert command_owner(command_id) is None


@pytest.mark.parametrize(
    ("general", "specific", "expected"),
    [
        ("iotgw/+/telemetry", "iotgw/dev/telemetry", True),
        ("iotgw/#", "iotgw/dev/telemetry", True),
        ("iotgw/#", "iotgw", True),  # `#` matches its parent level too
        ("#", "iotgw/+/status", True),
        ("iotgw/+/telemetry", "iotgw/#", False),
        ("iotgw/+/telemetry", "iotgw/+/status", False),
        ("iotgw/dev/telemetry", "iotgw/+/telemetry", False),
        ("iotgw/+", "iotgw/a/b", False),
        ("#", "$SYS/broker", False),  # first-level wildcards never match $ topics
        ("+/x", "$share/x", False),
        ("a/b", "a/b", True),
    ],
)
def test_covers_follows_mqtt_matching(general, specific, expected):
    """`covers` is true exactly when every topic the specific filter matches, the general does."""
    assert covers(general, specific) is expected


def test_shared_filters_drop_covered_ones_and_keep_the_rest_in_the_group():
    """Overlapping shared subscriptions would hand one message to two members: a filter covered
    by another is left out; duplicates once."""
    filters = [
        "homeassistant/#",
        "homeassistant/sensor/x/state",  # covered: HA state under the discovery prefix
        "esphome/node/state",
        "iotgw/+/telemetry",
        "iotgw/+/telemetry",
        "iotgw/sync/abc",
    ]
    assert shared_filters(filters, "g") == [
        "$share/g/homeassistant/#",
        "$share/g/esphome/node/state",
        "$share/g/iotgw/+/telemetry",
        "$share/g/iotgw/sync/abc",
    ]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_claims(window_s: float = 2.0, max_waiting: int = 1000) -> tuple[Claims, list, Clock]:
    stored: list[tuple[list[Reading], str]] = []
    clock = Clock()
    claims = Claims(window_s, lambda r, c: stored.append((r, c)), clock, max_waiting)
    return claims, stored, clock


def reading(v: float) -> list[Reading]:
    return [("d", "t", 1.0 + v, v)]


def test_a_claim_stores_the_decoded_copy_whichever_arrives_first():
    """Main copy then claim, or claim then main copy: the readings are stored once."""
    claims, stored, _ = make_claims()
    claims.decoded("a/t", b"1", [(reading(1), "native")])
    assert stored == []
    claims.claim("a/t", b"1")
    claims.claim("a/t", b"2")
    claims.decoded("a/t", b"2", [(reading(2), "native")])
    assert stored == [(reading(1), "native"), (reading(2), "native")]
    assert claims.waiting == 0
    assert claims.stats.claimed_messages == 2
    assert claims.stats.claimed_points == 2


def test_copies_nobody_claims_here_expire_silently_and_lone_claims_count_as_unmatched():
    """A main copy unclaimed for the window was a peer's (not stored, counted as unclaimed); a
    claim whose main copy never came is counted as unmatched (its readings are lost)."""
    claims, stored, clock = make_claims(window_s=2.0)
    claims.decoded("a/t", b"peer", [(reading(1), "native")])
    claims.claim("a/t", b"lost")
    clock.now += 2.0
    claims.expire()
    assert (claims.stats.unclaimed, claims.stats.unmatched) == (1, 1)
    assert claims.waiting == 0
    claims.decoded("a/t", b"lost", [(reading(2), "native")])  # too late: not paired
    claims.claim("a/t", b"peer")
    assert stored == []


def test_identical_messages_pair_first_in_first_out_and_expire_one_by_one():
    """Two identical payloads on one topic are two messages: each claim takes one copy, and a
    copy that paired early leaves no expiry behind that could drop a newer one."""
    claims, stored, clock = make_claims(window_s=2.0)
    claims.decoded("a/t", b"same", [(reading(1), "native")])
    claims.claim("a/t", b"same")  # pairs the first
    clock.now += 1.5
    claims.decoded("a/t", b"same", [(reading(2), "native")])
    clock.now += 0.6  # the first copy's deadline passed; the second's has not
    claims.expire()
    assert claims.stats.unclaimed == 0
    claims.claim("a/t", b"same")
    assert stored == [(reading(1), "native"), (reading(2), "native")]


def test_waiting_copies_are_capped_and_the_oldest_given_up():
    """Past max_waiting on one side, the oldest waiting copy goes (counted)."""
    claims, stored, _ = make_claims(max_waiting=3)
    for i in range(5):
        claims.decoded("a/t", b"%d" % i, [(reading(i), "native")])
    assert claims.waiting == 3
    assert claims.stats.given_up == 2
    claims.claim("a/t", b"0")  # given up: it waits as a claim instead
    claims.claim("a/t", b"4")
    assert stored == [(reading(4), "native")]


def test_a_message_with_no_readings_pairs_and_stores_nothing():
    """A status or a refused payload decodes to nothing: its claim pairs and stores nothing."""
    claims, stored, _ = make_claims()
    claims.decoded("a/status", b"online", [])
    claims.claim("a/status", b"online")
    assert stored == []
    assert claims.waiting == 0
    assert claims.stats.unmatched == 0


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"cluster.instance_id": "-gw"}, "cluster.instance_id"),
        ({"cluster.instance_id": "gw a"}, "cluster.instance_id"),
        ({"cluster.instance_id": "g" * 41}, "cluster.instance_id"),
        ({"cluster.writer_group": "a/b"}, "cluster.writer_group"),
        ({"cluster.writer_group": "g+"}, "cluster.writer_group"),
        ({"cluster.claim_window_s": 0}, "cluster.claim_window_s"),
        ({"cluster.heartbeat_s": -1}, "cluster.heartbeat_s"),
        ({"cluster.drain_s": -1}, "cluster.drain_s"),
        ({"cluster.enabled": True}, "history.backend"),  # sqlite, the default: one file each
    ],
)
def test_bad_cluster_settings_are_refused_with_their_key(overrides, key):
    """Cluster settings are checked at load; the error names the key."""
    with pytest.raises(ConfigError) as refused:
        load_config(env={}, overrides=overrides)
    assert refused.value.path == key


def test_a_cluster_runs_on_postgres_or_without_durable_history():
    """cluster.enabled with history.backend postgres or memory loads."""
    for backend in ({"history.backend": "memory"}, {"history.backend": "postgres",
                    "history.dsn": "postgresql://u@db/iotgw"}):  # fmt: skip
        config = load_config(env={}, overrides={"cluster.enabled": True, **backend})
        assert config.cluster.enabled

"""Token buckets, alone and keyed by principal or address: bounded, and honest about the wait."""

from __future__ import annotations

from gateway.limits import ConnectionCaps, KeyedBuckets, TokenBucket


def test_bucket_delay_says_how_long_until_the_next_token():
    """An empty bucket's delay is about 1/rate; a bucket with a token has none."""
    bucket = TokenBucket(rate=0.5, burst=1)
    assert bucket.delay() == 0.0
    assert bucket.take()
    assert not bucket.take()
    assert 1.9 < bucket.delay() <= 2.0


def test_keyed_buckets_limit_each_key_on_its_own():
    """Each key has its own burst; a refused take answers with the wait, others are unaffected."""
    buckets = KeyedBuckets(rate=0.001, burst=2)
    assert [buckets.take("a") for _ in range(2)] == [0.0, 0.0]
    assert buckets.take("a") > 100
    assert buckets.take("b") == 0.0


def test_keyed_buckets_never_hold_more_than_max_keys():
    """At the cap the least recently used key is forgotten (only its debt is forgiven)."""
    buckets = KeyedBuckets(rate=0.001, burst=1, max_keys=3)
    for key in ("a", "b", "c"):
        buckets.take(key)
    buckets.take("a")  # refused, but now the most recently used
    buckets.take("d")
    assert len(buckets) == 3
    assert buckets.take("a") > 0  # still remembered: still limited
    assert buckets.take("b") == 0.0  # forgotten: a fresh bucket


def test_keyed_buckets_forget_refilled_keys_first():
    """Buckets that have refilled are dropped before any that still hold a debt."""
    buckets = KeyedBuckets(rate=1e9, burst=1, max_keys=2)
    buckets.take("a")
    buckets.take("b")
    buckets.take("c")  # both earlier buckets have refilled at once: both forgotten
    assert len(buckets) == 1


def test_connection_caps_limit_each_holder_and_the_total():
    """Each holder is held to the limit its admit names, all of them to the total; a release
    frees the slot for anyone."""
    caps = ConnectionCaps(total=3)
    assert [caps.admit("a", 2) for _ in range(3)] == [None, None, "holder"]
    assert caps.admit("b", 1) is None
    assert caps.admit("c", 5) == "total"
    caps.release("a")
    assert caps.open == 2
    assert caps.admit("c", 5) is None

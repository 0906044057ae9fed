"""Device and metric globs, token scopes, and the memoised Interest that unions selectors."""

from __future__ import annotations

import pytest

from gateway.matching import Interest, InterestIndex, Selector, compile_globs


def interest(*selectors: Selector) -> Interest:
    return Interest(frozenset(selectors))


@pytest.mark.parametrize(
    ("patterns", "name", "matches"),
    [
        (["thermo-*"], "thermo-1", True),
        (["thermo-*"], "thermo-", True),
        (["thermo-*"], "xthermo-1", False),
        (["thermo-*"], "Thermo-1", False),  # case-sensitive
        (["meter-?"], "meter-7", True),
        (["meter-?"], "meter-17", False),
        (["meter-[ab]"], "meter-b", True),
        (["meter-[ab]"], "meter-c", False),
        (["a", "b*"], "bee", True),
        (["a", "b*"], "ab", False),
        (["*"], "anything:at.all", True),
        (["dev.1"], "devx1", False),  # dots are literal
        (["["], "[", True),  # an unbalanced bracket is literal, not a regex error
    ],
)
def test_globs(patterns, name, matches):
    """`*`, `?` and `[ab]` work like shell globs over the whole name, case-sensitively."""
    assert (compile_globs(patterns).fullmatch(name) is not None) is matches


def test_equal_selectors_are_canonical():
    """Selectors built from the same globs in any order and with duplicates are equal."""
    a = Selector.of(["b", "a", "a"], ["y", "x"])
    b = Selector.of(["a", "b"], ["x", "y", "x"])
    assert a == b
    assert hash(a) == hash(b)
    assert Selector.of(["a"]) != Selector.of(["a"], ["x"])


def test_metric_filter_limits_metrics_of_matching_devices():
    """A selector with metric globs wants only those metrics of its devices."""
    it = interest(Selector.of(["thermo-*"], ["temp*"]))
    assert it.wants("thermo-1", "temperature")
    assert not it.wants("thermo-1", "humidity")
    assert not it.wants("meter-1", "temperature")
    assert it.wants_device("thermo-1")
    assert not it.wants_device("meter-1")


def test_union_of_selectors_takes_any_match():
    """An interest wants a reading when any of its selectors does."""
    it = interest(
        Selector.of(["thermo-*"], ["temperature"]),
        Selector.of(["thermo-2"]),
        Selector.of(["meter-*"], ["power"]),
    )
    assert it.wants("thermo-1", "temperature")
    assert not it.wants("thermo-1", "humidity")
    assert it.wants("thermo-2", "humidity")  # the second selector takes every metric
    assert it.wants("meter-1", "power")
    assert not it.wants("meter-1", "temperature")


@pytest.mark.parametrize(
    ("devices", "scope", "device", "wanted"),
    [
        (["*"], ["a-*"], "a-1", True),
        (["*"], ["a-*"], "b-1", False),
        (["b-*"], ["a-*"], "b-1", False),
        (["a-1", "b-1"], ["a-*", "b-1"], "b-1", True),
        (["*"], [], "a-1", False),  # an empty scope reads nothing
        (["*"], None, "z-9", True),
    ],
)
def test_scope_restricts_devices_to_the_token_read_globs(devices, scope, device, wanted):
    """A device must match both the subscription's globs and the token's read scope."""
    it = interest(Selector.of(devices, None, scope))
    assert it.wants_device(device) is wanted
    assert it.wants(device, "m") is wanted


def test_matches_all_only_for_an_unscoped_unfiltered_star():
    """matches_all is true only for devices ["*"] with no metric filter and no scope."""
    assert interest(Selector.of(["*"])).matches_all
    assert interest(Selector.of(["a"]), Selector.of(["*"])).matches_all
    assert not interest(Selector.of(["*"], ["m"])).matches_all
    assert not interest(Selector.of(["*"], None, ["a-*"])).matches_all
    assert not interest(Selector.of(["a*"])).matches_all


def test_cached_answers_match_fresh_answers():
    """Answers served from the memo equal a fresh Interest's, including after forget()."""
    selectors = (Selector.of(["t-*"], ["a*"]), Selector.of(["t-1"], ["b"]))
    cached = interest(*selectors)
    names = [(d, m) for d in ("t-1", "t-2", "u-1") for m in ("a1", "b", "c")]
    first = [cached.wants(d, m) for d, m in names]
    second = [cached.wants(d, m) for d, m in names]
    fresh = [interest(*selectors).wants(d, m) for d, m in names]
    assert first == second == fresh
    assert first == [True, True, False, True, False, False, False, False, False]
    cached.forget("t-1")
    assert [cached.wants(d, m) for d, m in names] == fresh


def test_forget_drops_cached_entries_of_the_device():
    """forget(device) removes that device's memoised answers (keeps caches bounded)."""
    it = interest(Selector.of(["*"], ["m"]))
    it.wants("d-1", "m")
    it.wants("d-2", "m")
    it.forget("d-1")
    assert all(key[0] != "d-1" for key in it._metrics)
    assert ("d-2", "m") in it._metrics


def test_index_lists_the_interests_that_want_each_device():
    """InterestIndex: exact and glob interests are found per device, match-all ones are kept
    apart, and interests added or removed later update devices already known."""
    exact = interest(Selector.of(["t-1", "t-2"]))
    glob = interest(Selector.of(["t-*"], ["temp"]))
    everything = interest(Selector.of(["*"]))
    index = InterestIndex()
    index.add(exact)
    index.add(everything)
    assert index.for_device("t-1") == [exact]
    assert index.for_device("u-1") == []
    index.add(glob)  # known devices learn about it
    assert set(index.for_device("t-1")) == {exact, glob}
    assert index.for_device("t-3") == [glob]
    assert index.everything == {everything}
    index.remove(exact)
    assert index.for_device("t-1") == [glob]
    assert index.for_device("t-2") == [glob]

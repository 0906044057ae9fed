"""Parsing client frames into typed requests, and the errors (with echoed ids) for bad ones."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import ProtocolError
from gateway.protocol import (
    READINGS,
    SNAPSHOT,
    Auth,
    Command,
    History,
    Ping,
    Subscribe,
    Unsubscribe,
    batch_body,
    coalesced_body,
    parse_request,
    sequenced_frame,
    snapshot_body,
)


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (
            {"type": "subscribe", "id": 1, "devices": ["thermo-*", "meter-7"]},
            Subscribe(1, ("thermo-*", "meter-7"), None),
        ),
        (
            {"type": "subscribe", "id": "a", "devices": ["*"], "metrics": ["temperature"]},
            Subscribe("a", ("*",), ("temperature",)),
        ),
        ({"type": "unsubscribe", "id": 2, "subscription": "s1"}, Unsubscribe(2, "s1")),
        (
            {"type": "history", "id": 3, "device": "t", "metric": "m", "since": 10, "limit": 5},
            History(3, "t", "m", 10.0, 5),
        ),
        (
            {"type": "history", "id": 3, "device": "t", "metric": "m"},
            History(3, "t", "m", None, None),
        ),
        (
            {
                "type": "command",
                "id": 4,
                "device": "t",
                "command": "set",
                "params": {"x": 1},
                "timeout_ms": 500,
            },
            Command(4, "t", "set", {"x": 1}, 500),
        ),
        (
            {"type": "command", "id": 4, "device": "t", "command": "go"},
            Command(4, "t", "go", {}, None),
        ),
        ({"type": "auth", "id": 5, "token": "s3cret"}, Auth(5, "s3cret")),
        ({"type": "ping", "id": 6.5}, Ping(6.5)),
        ({"type": "ping"}, Ping(None)),
    ],
)
def test_every_request_type_parses(frame, expected):
    """Each request type parses from text or bytes into its typed request, id included."""
    text = orjson.dumps(frame)
    assert parse_request(text) == expected
    assert parse_request(text.decode()) == expected


@pytest.mark.parametrize(
    ("frame", "code", "request_id"),
    [
        ("", "bad_request", None),
        ("{", "bad_request", None),
        ("[]", "bad_request", None),
        ("42", "bad_request", None),
        ('{"type": "ping", "id": true}', "bad_request", None),
        ('{"type": "ping", "id": {"a": 1}}', "bad_request", None),
        ('{"type": "ping", "id": "' + "x" * 65 + '"}', "bad_request", None),
        ('{"id": 1}', "unknown_type", 1),
        ('{"type": "shutdown", "id": 2}', "unknown_type", 2),
        ('{"type": 5, "id": 3}', "unknown_type", 3),
        ('{"type": "subscribe", "id": 4}', "bad_request", 4),
        ('{"type": "subscribe", "id": 4, "devices": "thermo-*"}', "bad_request", 4),
        ('{"type": "subscribe", "id": 4, "devices": [""]}', "bad_request", 4),
        ('{"type": "subscribe", "id": 4, "devices": [1]}', "bad_request", 4),
        ('{"type": "subscribe", "id": 4, "devices": ["*"], "metrics": []}', "bad_request", 4),
        ('{"type": "subscribe", "id": 4, "devices": ["' + "x" * 129 + '"]}', "bad_request", 4),
        ('{"type": "unsubscribe", "id": 5}', "bad_request", 5),
        ('{"type": "history", "id": 6, "device": "d"}', "bad_request", 6),
        (
            '{"type": "history", "id": 6, "device": "d", "metric": "m", "since": "x"}',
            "bad_request",
            6,
        ),
        (
            '{"type": "history", "id": 6, "device": "d", "metric": "m", "limit": 0}',
            "bad_request",
            6,
        ),
        (
            '{"type": "history", "id": 6, "device": "d", "metric": "m", "limit": 1.5}',
            "bad_request",
            6,
        ),
        ('{"type": "command", "id": 7, "device": "d"}', "bad_request", 7),
        (
            '{"type": "command", "id": 7, "device": "d", "command": "c", "params": []}',
            "bad_request",
            7,
        ),
        (
            '{"type": "command", "id": 7, "device": "d", "command": "c", "timeout_ms": true}',
            "bad_request",
            7,
        ),
        ('{"type": "auth", "id": 8}', "bad_request", 8),
    ],
)
def test_bad_frames_raise_protocol_error_with_code_and_id(frame, code, request_id):
    """Bad frames raise ProtocolError with a stable code and the request's id when readable."""
    with pytest.raises(ProtocolError) as refused:
        parse_request(frame)
    assert refused.value.code == code
    assert refused.value.request_id == request_id
    assert refused.value.message


def test_sequenced_frames_wrap_shared_bytes():
    """Sequenced frames embed an already-encoded body with the stream's seq."""
    data = b'[["d","m",1.0,2]]'
    assert orjson.loads(sequenced_frame(READINGS, 7, batch_body(data, None))) == {
        "type": "readings",
        "seq": 7,
        "data": [["d", "m", 1.0, 2]],
    }
    events = b'[{"event":"removed","device":{"id":"d"}}]'
    assert orjson.loads(sequenced_frame(READINGS, 8, coalesced_body(3, data, events))) == {
        "type": "readings",
        "seq": 8,
        "coalesced": True,
        "dropped": 3,
        "data": [["d", "m", 1.0, 2]],
        "events": [{"event": "removed", "device": {"id": "d"}}],
    }
    assert orjson.loads(sequenced_frame(SNAPSHOT, 1, snapshot_body('s"1', []))) == {
        "type": "snapshot",
        "seq": 1,
        "subscription": 's"1',
        "devices": [],
    }


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=6,
)
request_like = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            ["subscribe", "unsubscribe", "history", "command", "auth", "ping", "x"]
        )
    },
    optional={
        "id": json_values,
        "devices": json_values,
        "metrics": json_values,
        "subscription": json_values,
        "device": json_values,
        "metric": json_values,
        "since": json_values,
        "limit": json_values,
        "command": json_values,
        "params": json_values,
        "timeout_ms": json_values,
        "token": json_values,
        "resume": json_values,
    },
)


def parse_or_protocol_error(frame: str | bytes) -> None:
    """Parse `frame`; a ProtocolError must carry one of the parser's two codes."""
    code = "parsed"
    try:
        parse_request(frame)
    except ProtocolError as exc:
        code = exc.code
    assert code in ("parsed", "bad_request", "unknown_type")


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_raises_only_protocol_error(text):
    """No text frame makes the parser raise anything but ProtocolError."""
    parse_or_protocol_error(text)


@settings(max_examples=150, deadline=None)
@given(request_like)
def test_arbitrary_request_shaped_json_raises_only_protocol_error(body):
    """Request-shaped JSON with arbitrary field values parses or raises ProtocolError only."""
    try:
        frame = orjson.dumps(body)
    except (TypeError, orjson.JSONEncodeError):
        return  # not representable as JSON (e.g. an integer beyond 64 bits)
    parse_or_protocol_error(frame)


def test_history_ranged_form_is_parsed():
    """from/to/max_points make a ranged history request; to and max_points are optional."""
    request = parse_request(
        '{"type":"history","id":1,"device":"d","metric":"m","from":10,"to":20,"max_points":50}'
    )
    assert isinstance(request, History)
    assert (request.ranged, request.start, request.end, request.max_points) == (True, 10, 20, 50)
    recent = parse_request('{"type":"history","id":2,"device":"d","metric":"m","limit":5}')
    assert isinstance(recent, History)
    assert not recent.ranged


@pytest.mark.parametrize(
    "fields",
    [
        '"from":10,"limit":5',
        '"from":10,"since":5',
        '"to":20',
        '"max_points":5',
        '"from":20,"to":10',
        '"from":10,"max_points":5001',
        '"from":"yesterday"',
    ],
)
def test_bad_history_ranges_are_refused(fields):
    """Mixed forms, an end before the start and too many points are bad_request."""
    with pytest.raises(ProtocolError) as caught:
        parse_request('{"type":"history","id":1,"device":"d","metric":"m",' + fields + "}")
    assert caught.value.code == "bad_request"

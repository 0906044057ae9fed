"""Log lines cannot be forged: both formatters escape control characters in whatever reaches them
(messages, their arguments, the connection context, tracebacks) once, for every record."""

from __future__ import annotations

import logging
import sys

import orjson
import pytest

from gateway.logs import JsonFormatter, TextFormatter, escape_controls

FORGED = "x\n12:00:00 ERROR   gateway.app: forged"


def record(
    message: str, *args: object, exc: BaseException | None = None, **extra: object
) -> logging.LogRecord:
    """A record as logging.Logger.makeRecord builds it (with exc_info when `exc` is given)."""
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    made = logging.LogRecord("gateway.test", logging.WARNING, __file__, 1, message, args, exc_info)
    made.__dict__.update(extra)
    return made


def raised(message: str) -> BaseException:
    try:
        raise ValueError(message)
    except ValueError:
        return sys.exc_info()[1]  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("a\nb", "a\\nb"),
        ("a\r\nb", "a\\r\\nb"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("a\x00b\x7fc", "a\\x00b\\x7fc"),
        ("next\x85line", "next\\x85line"),
        ("a\u2028b\u2029c", "a\\u2028b\\u2029c"),
        ("plain text, tabs\tincluded", "plain text, tabs\\tincluded"),
        ("unicode stays: °C, µs, ü", "unicode stays: °C, µs, ü"),
    ],
)
def test_escape_controls_writes_every_control_character_as_an_escape(raw, escaped):
    """C0 and C1 controls, DEL and the Unicode line separators become escapes; the rest stays."""
    assert escape_controls(raw) == escaped
    assert len(escape_controls(raw).splitlines()) == 1


def test_text_line_cannot_be_forged_by_a_message_argument():
    """A device string with a newline in a message argument stays on the record's one line."""
    text = TextFormatter().format(record("bad metric name on %r: %s", "t/x", FORGED))
    assert text.splitlines() == [text]
    assert text.endswith("bad metric name on 't/x': x\\n12:00:00 ERROR   gateway.app: forged")


def test_text_context_is_escaped():
    """The connection context is escaped like the message."""
    text = TextFormatter().format(record("closing", conn="1a2b3c4d", remote="10.0.0.1\nforged"))
    assert text.splitlines() == [text]
    assert text.endswith("closing [conn=1a2b3c4d remote=10.0.0.1\\nforged]")


def test_text_traceback_lines_are_indented_and_escaped():
    """Only a record's first line starts at the margin: traceback lines are indented, and a
    newline inside the exception's message cannot start a line of its own."""
    text = TextFormatter().format(record("decoder error", exc=raised(FORGED)))
    first, *rest = text.split("\n")
    assert first.endswith("gateway.test: decoder error")
    assert rest
    assert all(line.startswith("  ") for line in rest), rest
    assert rest[0] == "  Traceback (most recent call last):"
    assert "  12:00:00 ERROR   gateway.app: forged" in rest


def test_json_line_is_one_line_with_the_same_escaped_message():
    """JSON lines carry the message escaped as the text format writes it, and stay one line
    for every line splitter (orjson alone writes U+2028 and NEL raw)."""
    line = JsonFormatter().format(record("metric %s", "a\u2028b\x85c\nd", remote="r\x1b"))
    assert len(line.splitlines()) == 1
    entry = orjson.loads(line)
    assert entry["message"] == "metric a\\u2028b\\x85c\\nd"
    assert entry["remote"] == "r\\x1b"


def test_json_traceback_keeps_its_lines_and_escapes_inside_them():
    """The exc field keeps the traceback's line breaks (inside the one JSON line) and escapes
    what is inside each line."""
    line = JsonFormatter().format(record("decoder error", exc=raised("a\u2028" + FORGED)))
    assert len(line.splitlines()) == 1
    exc = orjson.loads(line)["exc"]
    assert exc.startswith("Traceback (most recent call last):\n")
    assert exc.endswith("ValueError: a\\u2028x\n12:00:00 ERROR   gateway.app: forged")


def test_lines_name_their_instance_when_asked():
    """With an instance, text lines end with `[instance=…]` and JSON lines carry `instance`
    (lines of a cluster's instances read side by side); without one, neither does."""
    text = TextFormatter()
    text.instance = "gw-a"
    assert text.format(record("hello")).endswith("hello [instance=gw-a]")
    as_json = JsonFormatter()
    as_json.instance = "gw-a"
    assert orjson.loads(as_json.format(record("hello", conn="ab")))["instance"] == "gw-a"
    assert "instance" not in TextFormatter().format(record("hello"))
    assert "instance" not in orjson.loads(JsonFormatter().format(record("hello")))

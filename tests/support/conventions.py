"""Helpers for the device conventions' unit tests: refusals, and what an untrusted device sends."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import strategies as st

from gateway.conventions import Convention
from gateway.errors import DecodeError

#: Short text of any code point a payload can carry (lone surrogates do not encode).
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=8)
#: Any small JSON value, nested.
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=12,
)
#: What an untrusted device may publish: random bytes or any JSON document.
PAYLOADS = st.one_of(st.binary(max_size=64), JSON.map(orjson.dumps))


def refusal(convention: Convention, topic: str, payload: bytes, received_at: float) -> str:
    """The stable reason `convention` gives for refusing a message (its DecodeError's); the test
    fails if the message decodes."""
    with pytest.raises(DecodeError) as refused:
        convention.decode(topic, payload, received_at)
    return refused.value.reason

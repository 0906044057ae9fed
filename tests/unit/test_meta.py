"""Device meta parsing and command parameter validation against it."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gateway.errors import CommandError, DecodeError
from gateway.meta import ShapeCache, parse_meta, validate_params

META: dict[str, Any] = {
    "type": "thermostat",
    "name": "Living room",
    "metrics": {"temperature": {"unit": "°C"}, "humidity": {}},
    "commands": {
        "set_target": {"params": {"target": {"type": "number", "min": 5, "max": 30}}},
        "set_level": {"params": {"level": {"type": "integer", "min": 0, "max": 10}}},
        "set_mode": {"params": {"mode": {"type": "string", "enum": ["off", "heat"]}}},
        "power": {"params": {"on": {"type": "boolean"}}},
        "beep": {"params": {"times": {"type": "integer", "optional": True}}},
        "toggle": {},
    },
}
meta = parse_meta(META)


def test_parse_meta_reads_type_name_units_and_commands():
    """parse_meta keeps type, name, metric units, command specs and the raw JSON."""
    assert (meta.type, meta.name) == ("thermostat", "Living room")
    assert meta.units == {"temperature": "°C"}
    assert sorted(meta.commands) == sorted(META["commands"])
    target = meta.commands["set_target"].params["target"]
    assert (target.type, target.min, target.max, target.optional) == ("number", 5, 30, False)
    assert meta.commands["beep"].params["times"].optional is True
    assert meta.commands["set_mode"].params["mode"].enum == ("off", "heat")
    assert meta.raw == META


@pytest.mark.parametrize(
    ("command", "params"),
    [
        ("set_target", {"target": 21.5}),
        ("set_target", {"target": 5}),
        ("set_target", {"target": 30}),
        ("set_level", {"level": 3}),
        ("set_level", {"level": 3.0}),
        ("set_mode", {"mode": "heat"}),
        ("power", {"on": False}),
        ("beep", {}),
        ("beep", {"times": 2}),
        ("toggle", {}),
    ],
)
def test_params_that_fit_are_accepted(command, params):
    """Params of the declared type, in range and enum, with optional ones omitted, pass."""
    assert validate_params(command, meta.commands[command], params) == params


@pytest.mark.parametrize(
    ("command", "params", "why"),
    [
        ("set_target", {"target": 4.99}, "≥ 5"),
        ("set_target", {"target": 31}, "≤ 30"),
        ("set_target", {"target": "21"}, "must be a number"),
        ("set_target", {"target": True}, "must be a number"),
        ("set_target", {}, "missing param 'target'"),
        ("set_target", {"target": 20, "speed": 1}, "unknown param 'speed'"),
        ("set_level", {"level": 2.5}, "must be a integer"),
        ("set_level", {"level": 11}, "≤ 10"),
        ("set_mode", {"mode": "turbo"}, "one of off, heat"),
        ("set_mode", {"mode": 1}, "must be a string"),
        ("set_mode", {"mode": "x" * 300}, "must be a string"),
        ("power", {"on": 1}, "must be a boolean"),
        ("beep", {"times": "2"}, "must be a integer"),
        ("toggle", {"anything": 1}, "unknown param"),
        ("toggle", [], "params must be an object"),
    ],
)
def test_params_that_do_not_fit_are_refused_with_bad_params(command, params, why):
    """Wrong type, out of range, not in enum, missing or unknown params raise bad_params."""
    with pytest.raises(CommandError) as refused:
        validate_params(command, meta.commands[command], params)
    assert refused.value.code == "bad_params"
    assert why in refused.value.message


@pytest.mark.parametrize(
    "raw",
    [
        [],
        "meta",
        {"metrics": []},
        {"metrics": {"bad\x00name": {}}},
        {"commands": []},
        {"commands": {"a/b": {}}},
        {"commands": {"a+": {}}},
        {"commands": {"x": None}},
        {"commands": {"x": {"params": []}}},
        {"commands": {"x": {"params": {"p": {"type": "float"}}}}},
        {"commands": {"x": {"params": {"p": "number"}}}},
        {"commands": {"x": {"params": {"p": {"type": "number", "min": "1"}}}}},
        {"commands": {"x": {"params": {"p": {"type": "number", "max": True}}}}},
        {"commands": {"x": {"params": {"p": {"type": "string", "enum": []}}}}},
        {"commands": {"x": {"params": {"p": {"type": "string", "enum": "a"}}}}},
    ],
)
def test_bad_meta_is_refused_with_decode_error(raw):
    """Malformed meta (wrong shapes, bad names, unknown types, bad bounds/enum) is refused."""
    with pytest.raises(DecodeError) as refused:
        parse_meta(raw)
    assert refused.value.reason == "bad_meta"


def _outcome(raw: dict[str, Any], params: dict[str, Any]) -> object:
    """What parsing `raw` then validating `params` for command "say" ends in: params or a code."""
    try:
        return validate_params("say", parse_meta(raw).commands["say"], params)
    except (DecodeError, CommandError) as exc:
        return getattr(exc, "code", None) or getattr(exc, "reason", None)


def test_bounds_on_a_string_param_do_not_crash_validation():
    """min/max declared on a string param (a device's mistake) end in bad_meta, bad_params or
    acceptance, never in a TypeError escaping to the connection."""
    raw = {"commands": {"say": {"params": {"text": {"type": "string", "min": 1}}}}}
    assert _outcome(raw, {"text": "hi"}) in ({"text": "hi"}, "bad_meta", "bad_params")


def test_devices_declaring_the_same_metrics_and_commands_share_one_parsed_copy():
    """Two devices with the same declarations (in any key order) share units, commands and the
    declaration JSON itself; their own fields (name) stay their own, and the dicts passed in are
    left as they were."""
    first = {**META, "name": "one"}
    second = copy.deepcopy(
        {"name": "two", "commands": META["commands"], "metrics": META["metrics"]}
    )
    second["type"] = "thermostat"
    shapes = ShapeCache()
    a, b = parse_meta(first, shapes), parse_meta(second, shapes)
    assert a.units is b.units
    assert a.commands is b.commands
    assert a.raw["metrics"] is b.raw["metrics"]
    assert (a.name, b.name) == ("one", "two")
    assert a.raw == first
    assert b.raw == second
    assert first["metrics"] is META["metrics"]  # the caller's dict was not rewritten
    second["metrics"]["humidity"]["unit"] = "%"  # a caller changing its dict later...
    assert a.raw["metrics"]["humidity"] == {}  # ...does not reach the shared copy


def test_without_a_cache_nothing_is_shared():
    """parse_meta without a ShapeCache parses each declaration into a copy of its own."""
    a, b = parse_meta(META), parse_meta(META)
    assert a.units == b.units
    assert a.units is not b.units
    assert a.raw["metrics"] is not META["metrics"]


def test_shared_declarations_are_bounded_in_bytes():
    """The cache of declarations stays under its byte bound however many distinct ones come."""
    shapes = ShapeCache(max_bytes=2000)
    for i in range(200):
        parse_meta({"metrics": {f"m{i}": {"unit": "x"}}}, shapes)
    assert 0 < shapes.bytes <= 2000
    assert 0 < len(shapes) < 200


def test_declarations_that_are_not_json_are_parsed_without_sharing():
    """A dict JSON cannot encode (a non-string key) is still parsed, just not shared."""
    meta = parse_meta({"metrics": {"t": {"unit": "C", 1: "odd"}}})
    assert meta.units == {"t": "C"}

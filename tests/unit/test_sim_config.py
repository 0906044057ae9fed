"""Fleet configuration: broker URLs, device mixes, rosters, connection plans, profiles, flags."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.names import is_device_id
from simulators.cli import config_from_args, configure_parser, run
from simulators.config import Broker, DeviceGroup, FleetConfig, mixed_groups
from simulators.encoders import ENCODERS
from simulators.faults import FaultConfig, Share
from simulators.fleet import Fleet
from simulators.profile import load_profile, parse_profile
from simulators.roster import build_roster, plan_links

EXAMPLE = Path(__file__).parents[2] / "simulators" / "fleet.example.toml"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://10.0.0.5:1884", Broker("10.0.0.5", 1884)),
        ("localhost", Broker("localhost", 1883)),
        ("mqtts://u:p%40ss@broker.example", Broker("broker.example", 8883, True, "u", "p@ss")),
    ],
)
def test_broker_urls_parse(url: str, expected: Broker) -> None:
    """Host, port, TLS and credentials come from the URL, with per-scheme default ports."""
    assert Broker.parse(url) == expected


def test_bad_broker_url_names_the_key() -> None:
    """An unsupported scheme is a ConfigError on `broker`."""
    with pytest.raises(ConfigError, match=r"^broker: scheme"):
        FleetConfig(broker="http://x")


def test_mixed_groups_spread_devices_evenly() -> None:
    """N devices spread over the types, earlier types taking the remainder, none empty."""
    groups = mixed_groups(7, ["thermostat", "switch", "meter"])
    assert [(g.type, g.count) for g in groups] == [("thermostat", 3), ("switch", 2), ("meter", 2)]
    assert [g.type for g in mixed_groups(1)] == ["environment"]


def test_unknown_device_type_is_refused() -> None:
    """A typo in a device type lists the known ones."""
    with pytest.raises(ConfigError, match="known: environment, thermostat"):
        DeviceGroup("thermometer", 1)


def test_roster_is_deterministic_with_valid_unique_ids() -> None:
    """Ids are stem-N, valid for the gateway, unique; the same seed gives the same fleet."""
    config = FleetConfig(groups=(*mixed_groups(12), DeviceGroup("thermostat", 2, stem="hall")))
    first = build_roster(config, seed=11)
    ids = [m.device_id for m in first]
    assert len(set(ids)) == 14
    assert all(is_device_id(i) for i in ids)
    assert {"thermo-1", "thermo-3", "hall-1", "hall-2", "gps-2"} <= set(ids)
    again = build_roster(config, seed=11)
    assert [m.model.step(1e9) for m in first] == [m.model.step(1e9) for m in again]
    assert [m.model.name for m in first] == [m.model.name for m in again]


def test_groups_sharing_a_stem_continue_its_numbering() -> None:
    """Two groups with one stem never produce the same id: numbering is per stem."""
    config = FleetConfig(groups=(DeviceGroup("switch", 2), DeviceGroup("meter", 2, stem="switch")))
    assert [m.device_id for m in build_roster(config, 1)] == [f"switch-{i}" for i in (1, 2, 3, 4)]


def test_one_connection_per_device_by_default() -> None:
    """Without multiplexing every device has its own link (and so its own will)."""
    members = build_roster(FleetConfig(groups=mixed_groups(5)), 1)
    assert [len(group) for group in plan_links(members, 0)] == [1] * 5


def test_multiplexing_keeps_dropping_devices_alone() -> None:
    """N shared links round-robin; devices with the drop fault get their own link and will."""
    config = FleetConfig(groups=mixed_groups(10), faults=FaultConfig(drop=Share(2)))
    members = build_roster(config, 3)
    plan = plan_links(members, 3)
    assert sorted(len(g) for g in plan) == [1, 1, 2, 3, 3]
    alone = [g[0] for g in plan if len(g) == 1]
    assert all(m.faults.drop for m in alone)
    assert sum(len(g) for g in plan) == 10


def test_example_profile_loads() -> None:
    """The shipped example profile is valid and describes a mixed fleet with one dropping device."""
    config = FleetConfig(**load_profile(EXAMPLE))
    assert config.devices == 20
    assert {g.type for g in config.groups} == {
        "thermostat",
        "environment",
        "switch",
        "meter",
        "tracker",
    }
    assert config.faults.drop == Share(1)
    assert config.result_delay_s == (0.02, 0.08)


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ({"rates": 1}, "rates"),
        ({"devices": [{"type": "switch", "cnt": 1}]}, "devices[0].cnt"),
        ({"devices": [{"count": 1}]}, "devices[0].type"),
        ({"devices": [{"type": "toaster"}]}, "devices[0].type"),
        ({"faults": {"dorp": 1}}, "faults.dorp"),
        ({"faults": {"drop": "lots"}}, "faults.drop"),
        ({"rate": "fast"}, "rate"),
        ({"seed": "forty-two"}, "seed"),
        ({"devices": {"type": "switch"}}, "devices"),
        ({"devices": [{"type": "switch", "count": "many"}]}, "devices[0].count"),
        ({"devices": [{"type": "switch", "count": -1}]}, "devices[0].count"),
        ({"devices": [{"type": "switch", "names": "Hall"}]}, "devices[0].names"),
        ({"faults": {"drop_every_s": "often"}}, "faults.drop_every_s"),
        ({"result_delay_ms": [80, 20]}, "result_delay_ms"),
    ],
)
def test_profile_errors_name_the_key(raw: dict[str, object], path: str) -> None:
    """A bad profile key or value raises ConfigError whose path names it."""
    with pytest.raises(ConfigError) as info:
        FleetConfig(**parse_profile(raw))
    assert info.value.path == path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "rates = 1",
            "rates: unknown key (known: broker, connections, convention, devices, faults, jitter,"
            " prefix, qos, rate, result_delay_ms, seed, stop_mode)",
        ),
        ('rate = "fast"', "rate: expected a number"),
        (
            '[[devices]]\ntype = "switch"\ncnt = 2',
            "devices[0].cnt: unknown key (known: count, names, rate, stem, type)",
        ),
        ("[[devices]]\ncount = 2", "devices[0].type: is required"),
        ("[[devices]]\ntype = 'switch'\ncount = 2.5", "devices[0].count: expected an integer"),
        (
            "[faults]\ndrop = true",
            'faults.drop: expected a count (3) or a fraction (0.1, "10%"), not True',
        ),
        ("[faults]\nburst_size = 0", "faults.burst_size: must be ≥ 1"),
        (
            "result_delay_ms = 'soon'",
            "result_delay_ms: expected milliseconds: a number or [low, high]",
        ),
        ("result_delay_ms = [80, 20]", "result_delay_ms: expected 0 <= low <= high"),
        ("rate = [", "PROFILE: not valid TOML: "),
    ],
    ids=[
        "unknown-key",
        "wrong-type",
        "unknown-group-key",
        "group-type-missing",
        "fractional-count",
        "share-of-wrong-type",
        "fault-out-of-range",
        "delay-of-wrong-type",
        "delay-low-above-high",
        "not-toml",
    ],
)
def test_profile_file_errors_are_worded_like_the_gateway_config(
    tmp_path: Path, text: str, message: str
) -> None:
    """A bad profile file is refused in the words of the gateway's own config loader: the key's
    full path, then the reason (an unknown key lists the known ones; a bad file is named)."""
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        FleetConfig(**load_profile(path))
    assert str(info.value).startswith(message.replace("PROFILE", str(path)))


def test_simulate_with_a_bad_profile_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`iotgw simulate --profile FILE` with a value of the wrong type says which key, exit 2."""
    path = tmp_path / "fleet.toml"
    path.write_text('rate = "fast"\n')
    assert run(parse("--profile", str(path))) == 2
    assert capsys.readouterr().err == "iotgw simulate: rate: expected a number\n"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    return parser.parse_args(argv)


def test_flags_override_the_profile() -> None:
    """Flags given win over the profile; the profile wins over defaults."""
    config = config_from_args(parse("--profile", str(EXAMPLE), "--rate", "3", "--drop", "10%"))
    assert config.rate == 3.0
    assert config.seed == 42  # from the profile
    assert config.devices == 20  # the profile's groups, since --devices was not given
    assert config.faults.drop == Share(fraction=0.1)
    assert config.faults.drop_every_s == 60.0  # the profile's, kept alongside the flag


def test_devices_and_types_flags_build_the_mix() -> None:
    """--devices N --types a,b replaces the device mix."""
    config = config_from_args(
        parse("--devices", "4", "--types", "switch,meter", "--connections", "2")
    )
    assert [(g.type, g.count) for g in config.groups] == [("switch", 2), ("meter", 2)]
    assert config.connections == 2


def test_bad_flag_values_are_argparse_errors(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown type or a bad share is reported by argparse, which exits with status 2."""
    with pytest.raises(SystemExit) as info:
        parse("--types", "switch,toaster")
    assert info.value.code == 2
    assert "unknown type 'toaster'" in capsys.readouterr().err


def test_a_mixed_fleet_speaks_every_convention_each_under_its_own_base() -> None:
    """`convention = "all"`: every encoder in turn; with a prefix each convention gets
    `<prefix>-<name>` (the native prefix would otherwise own everyone's topics), without one
    each its own default."""
    config = FleetConfig(convention="all", prefix="site")
    assert config.conventions == tuple(ENCODERS)
    assert config.base_for("native") == "site-native"
    assert config.base_for("zigbee2mqtt") == "site-zigbee2mqtt"
    default = FleetConfig(convention="all")
    assert default.base_for("native") == "iotgw"
    assert default.base_for("tasmota") == ""
    assert FleetConfig(convention="homie", prefix="h").base_for("homie") == "h"


def test_a_mixed_fleet_assigns_conventions_in_turn() -> None:
    """Fourteen devices of a mixed fleet: two per convention."""
    fleet = Fleet(FleetConfig(convention="all", groups=mixed_groups(14), seed=3))
    spoken = Counter(type(a.speaker).__module__.rsplit(".", 1)[1] for a in fleet._agents)
    assert spoken == dict.fromkeys(ENCODERS, 2)

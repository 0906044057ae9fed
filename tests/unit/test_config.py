"""Configuration: TOML, environment and override layering, and errors that name the key."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import pytest

from gateway.cli import main
from gateway.config import ClusterConfig, Config, build, load_config, read_toml
from gateway.errors import ConfigError


def write(tmp_path, text: str):
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_defaults_load_without_a_file():
    """With no file, no environment and no overrides, the defaults are a valid config."""
    config = load_config(env={})
    assert config == Config()
    assert (config.broker.host, config.broker.port, config.broker.tls) == ("127.0.0.1", 1883, False)


def test_file_then_env_then_overrides_each_win():
    """Environment overrides the file, dotted overrides override the environment."""
    config = load_config(
        env={"IOTGW_HTTP__PORT": "9000", "IOTGW_WS__BATCH_INTERVAL_MS": "2"},
        overrides={"ws.batch_interval_ms": 7, "conventions.native.prefix": "home"},
    )
    assert config.http.port == 9000
    assert config.ws.batch_interval_ms == 7.0
    assert config.conventions.native.prefix == "home"


def test_toml_file_is_read(tmp_path):
    """Keys in the TOML file are applied; env vars are layered on top."""
    path = write(tmp_path, '[broker]\nurl = "mqtts://broker.example:8884"\n[http]\nport = 8081\n')
    config = load_config(path, env={"IOTGW_HTTP__PORT": "9001"})
    assert (config.broker.host, config.broker.port, config.broker.tls) == (
        "broker.example",
        8884,
        True,
    )
    assert config.http.port == 9001


@pytest.mark.parametrize(
    ("env", "check"),
    [
        ({"IOTGW_HTTP__PORT": "9000"}, lambda c: c.http.port == 9000),
        (
            {"IOTGW_BROKER__URL": "mqtt://h:1999"},
            lambda c: (c.broker.host, c.broker.port) == ("h", 1999),
        ),
        (
            {"IOTGW_CONVENTIONS__NATIVE__PREFIX": "site/a"},
            lambda c: c.conventions.native.prefix == "site/a",
        ),
        ({"IOTGW_WS__COMPRESS": "true"}, lambda c: c.ws.compress is True),
        ({"IOTGW_LOG__LEVEL": "debug"}, lambda c: c.log.level == "debug"),
        ({"IOTGW_BROKER__PASSWORD": "123456"}, lambda c: c.broker.password == "123456"),
        ({"IOTGW_BROKER__CLIENT_ID": "42"}, lambda c: c.broker.client_id == "42"),
        ({"OTHER_HTTP__PORT": "1", "IOTGW_NOSECTION": "x"}, lambda c: c.http.port == 8080),
    ],
)
def test_environment_overrides(env, check):
    """IOTGW_SECTION__KEY variables override the matching key, typed by the key's type."""
    assert check(load_config(env=env))


@pytest.mark.parametrize(
    ("overrides", "path", "reason"),
    [
        ({"ws.nope": 1}, "ws.nope", "unknown key"),
        ({"nope.x": 1}, "nope", "unknown key"),
        ({"ws.batch_interval_ms": "fast"}, "ws.batch_interval_ms", "expected a number"),
        ({"http.port": "80"}, "http.port", "expected an integer"),
        ({"http.port": True}, "http.port", "expected an integer"),
        ({"http.port": 8080.5}, "http.port", "expected an integer"),
        ({"ws.compress": "yes"}, "ws.compress", "expected true or false"),
        ({"broker.url": 5}, "broker.url", "expected a string"),
        ({"auth.tokens": "s3cret"}, "auth.tokens", "expected a list"),
        ({"auth.tokens": [{"token": "t", "nope": 1}]}, "auth.tokens[0].nope", "unknown key"),
        ({"auth.tokens": [{"token": ""}]}, "auth.tokens[0]", "empty"),
        ({"http.allowed_hosts": ["https://gw.example"]}, "http.allowed_hosts[0]", "host name"),
        ({"http.allowed_hosts": ["gw.example:8080"]}, "http.allowed_hosts[0]", "host name"),
        ({"http.allowed_hosts": ["ok.example", ""]}, "http.allowed_hosts[1]", "host name"),
        (
            {"http.metrics_token_env": "IOTGW_TEST_NO_SUCH_VARIABLE"},
            "http.metrics_token_env",
            "empty",
        ),
        ({"broker.url": "http://example.com"}, "broker.url", "mqtt://"),
        ({"broker.url": "mqtt://"}, "broker.url", "mqtt://"),
        ({"broker.url": "mqtt://h:70000"}, "broker.url", "port out of range"),
        ({"broker.qos": 3}, "broker.qos", "0, 1 or 2"),
        ({"http.port": 0}, "http.port", "greater than 0"),
        ({"http.port": 65536}, "http.port", "at most 65535"),
        ({"ws.outbox_max_bytes": -1}, "ws.outbox_max_bytes", "greater than 0"),
        ({"log.format": "xml"}, "log.format", "text or json"),
        ({"conventions.native.prefix": "a/+"}, "conventions.native.prefix", "wildcards"),
        ({"broker.tls_ca_file": "/no/such/ca.pem"}, "broker.tls_ca_file", "no such file"),
        ({"dashboard.map_tiles": "ftp://t.example/{z}/{x}/{y}"}, "dashboard.map_tiles", "http"),
        ({"dashboard.map_tiles": "https://t.example/{z}/{x}.png"}, "dashboard.map_tiles", "{y}"),
        ({"dashboard.map_tiles": "https://{s}.t.example/{z}/{x}/{y}"}, "dashboard.map_tiles", "{"),
        (
            {"dashboard.map_tiles": "https://u:p@t.example/{z}/{x}/{y}"},
            "dashboard.map_tiles",
            "user",
        ),
        (  # it goes into a header: nothing that could end the directive
            {"dashboard.map_tiles": "https://t.example;script-src *;/{z}/{x}/{y}"},
            "dashboard.map_tiles",
            "host",
        ),
        ({"dashboard.map_attribution": "© OSM"}, "dashboard.map_attribution", "map_tiles only"),
    ],
)
def test_bad_values_raise_config_error_naming_the_key(overrides, path, reason):
    """Unknown keys, wrong types and invalid values raise ConfigError with the key's path."""
    with pytest.raises(ConfigError) as refused:
        load_config(env={}, overrides=overrides)
    assert refused.value.path == path
    assert reason in refused.value.reason
    assert str(refused.value).startswith(f"{path}: ")


def test_bad_toml_and_missing_file_are_config_errors(tmp_path):
    """A file that is not TOML, or does not exist, is a ConfigError naming the file."""
    bad = write(tmp_path, "[broker\nurl=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, env={})
    with pytest.raises(ConfigError) as missing:
        load_config(tmp_path / "absent.toml", env={})
    assert missing.value.path.endswith("absent.toml")


@dataclass(frozen=True)
class Level:
    """A value type that parses itself: a fraction (0.5) or a percentage ("50%")."""

    fraction: float

    @classmethod
    def from_toml(cls, value: object) -> Level:
        if isinstance(value, str) and value.endswith("%"):
            return cls(float(value[:-1]) / 100)  # "lots%": float's own ValueError
        if isinstance(value, float):
            return cls(value)
        raise ValueError("expected a fraction or a percentage")


@dataclass(frozen=True)
class Section:
    level: Level = Level(1.0)
    limit: int | None = None


def test_build_takes_optional_fields_and_types_that_parse_themselves():
    """An `X | None` field stays None unless given; a class with from_toml parses its value."""
    assert build(Section, {}, "s") == Section()
    assert build(Section, {"level": "50%", "limit": 3}, "s") == Section(Level(0.5), 3)
    assert build(Section, {"level": 0.25}, "s").level == Level(0.25)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"limit": "3"}, "s.limit: expected an integer"),
        ({"level": 3}, "s.level: expected a fraction or a percentage"),
        ({"level": "lots%"}, "s.level: could not convert string to float: 'lots'"),
    ],
)
def test_build_names_the_key_of_a_bad_optional_or_self_parsed_value(data, message):
    """A wrong value for an optional field, or one its type's from_toml refuses, is a
    ConfigError naming the key, with the type's own reason."""
    with pytest.raises(ConfigError) as refused:
        build(Section, data, "s")
    assert str(refused.value) == message


def test_check_config_on_a_bad_file_exits_non_zero_naming_the_key(tmp_path, capsys, monkeypatch):
    """`iotgw check-config FILE` with an unknown key exits 2 with one stderr line naming it."""
    for name in [n for n in os.environ if n.startswith("IOTGW_")]:
        monkeypatch.delenv(name)
    path = write(tmp_path, "[ws]\nnope = 1\n")
    assert main(["check-config", str(path)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert "ws.nope" in lines[0]
    assert captured.out == ""


def test_check_config_on_a_good_file_exits_zero(tmp_path, capsys, monkeypatch):
    """`iotgw check-config FILE` on a valid file prints ok and exits 0."""
    for name in [n for n in os.environ if n.startswith("IOTGW_")]:
        monkeypatch.delenv(name)
    path = write(tmp_path, '[broker]\nurl = "mqtt://127.0.0.1:1883"\n')
    assert main(["check-config", str(path)]) == 0
    assert "ok" in capsys.readouterr().out


def test_history_defaults_to_sqlite_under_the_working_directory():
    """With no settings, history is an SQLite file in ./iotgw-data."""
    history = load_config(env={}).history
    assert history.backend == "sqlite"
    assert str(history.sqlite_path()) == "iotgw-data/history.sqlite3"


@pytest.mark.parametrize(
    ("settings", "path"),
    [
        ({"history.backend": "mysql"}, "history.backend"),
        ({"history.backend": "postgres"}, "history.dsn"),
        ({"history.backend": "postgres", "history.dsn": "mysql://h/db"}, "history.dsn"),
        ({"history.commit_interval_s": 0}, "history.commit_interval_s"),
        ({"history.queue_points": 10, "history.batch_points": 100}, "history.batch_points"),
        ({"history.restore_points": -1}, "history.restore_points"),
    ],
)
def test_bad_history_settings_name_their_key(settings, path):
    """Invalid [history] settings are refused with the key's path."""
    with pytest.raises(ConfigError) as caught:
        load_config(env={}, overrides=settings)
    assert caught.value.path == path


def test_history_dsn_from_the_environment(monkeypatch):
    """dsn_env names a variable holding the DSN; IOTGW_HISTORY__* overrides work as for any key."""
    monkeypatch.setenv("PG_URL", "postgresql://iotgw@db/iotgw")
    config = load_config(
        env={
            "IOTGW_HISTORY__BACKEND": "postgres",
            "IOTGW_HISTORY__DSN_ENV": "PG_URL",
            "IOTGW_HISTORY__RAW_RETENTION_DAYS": "3",
        }
    )
    assert config.history.raw_retention_days == 3.0
    assert config.history.postgres_dsn() == "postgresql://iotgw@db/iotgw"


def test_shipped_config_documents_every_history_key():
    """config.toml lists every [history] key with its default value."""
    shipped = load_config("config.toml", env={})
    assert shipped.history == load_config(env={}).history


def test_map_tiles_origin_and_the_shipped_default():
    """The tile URL's origin is scheme://host[:port], lower-cased; config.toml ships none."""
    tiles = "HTTPS://Tiles.Example:8443/{z}/{x}/{y}.png?key=1"
    dashboard = load_config(env={}, overrides={"dashboard.map_tiles": tiles}).dashboard
    assert dashboard.map_tiles_origin() == "https://tiles.example:8443"
    assert load_config(env={}).dashboard.map_tiles_origin() == ""
    assert load_config("config.toml", env={}).dashboard == load_config(env={}).dashboard


def test_shipped_config_documents_every_cluster_key():
    """config.toml lists every [cluster] key, each with its default value."""
    section = read_toml("config.toml")["cluster"]
    assert set(section) == {f.name for f in dataclasses.fields(ClusterConfig)}
    assert load_config("config.toml", env={}).cluster == ClusterConfig()

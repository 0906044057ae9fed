"""What an operator relies on: /metrics content, log formats and secrets, CLI manners, and the
choice of broker for the test suite itself. Processes are real (`python -m gateway`), and so are
the broker, the sockets and the signals."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway import __version__
from gateway.cli import build_parser, main
from gateway.logs import (
    ConnectionLog,
    JsonFormatter,
    TextFormatter,
    connection_label,
    redact_url,
)
from tests.integration.conftest import AddDevice, StartGateway
from tests.support import broker_choice
from tests.support.gateway import WsClient
from tests.support.mosquitto import Mosquitto, free_port
from tests.support.process import CliProcess, running

ROOT = Path(__file__).resolve().parents[2]

# --- /metrics -----------------------------------------------------------------------------------

#: The only label names /metrics may carry: nothing per device, per client or per topic.
ALLOWED_LABELS = {"convention", "outcome", "reason", "status", "le"}
#: Labels of the one info family: constant for the process, never per device or client.
INFO_LABELS = {"instance_id", "version"}


async def test_metrics_after_a_short_real_run(
    start_gateway: StartGateway, add_device: AddDevice, publisher: Any, prefix: str
) -> None:
    """After readings, a subscriber, a command and a malformed payload, /metrics parses and
    holds every family operators alert on, with no per-device labels."""
    gw = await start_gateway()
    client = await gw.connected_client()
    await client.request({"type": "subscribe", "devices": ["*"]}, "subscribed")
    device = await add_device("mx-thermo-1")
    await device.telemetry({"temperature": 21.0})
    await client.readings(1)
    command = {"type": "command", "device": "mx-thermo-1", "command": "set_target"}
    result = await client.request({**command, "params": {"target": 20}}, "command_result")
    assert result["status"] == "ok"
    await publisher.publish(f"{prefix}/mx-meter-2/telemetry", b"{not json", qos=1)
    await publisher.publish(f"{prefix}/mx-meter-2/telemetry", b'{"power": 5}', qos=1)
    await client.readings(1, where=lambda r: r[0] == "mx-meter-2")  # so the bad one was handled

    status, text = await gw.get("/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in families.values()
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("iotgw_mqtt_messages_total", convention="native", outcome="ok") >= 4
    assert value("iotgw_decode_errors_total", convention="native", reason="invalid_json") == 1
    assert "iotgw_broker_connected 1.0" in text.splitlines()
    assert value("iotgw_devices", status="online") == 1
    assert value("iotgw_devices", status="unknown") == 1  # mx-meter-2 never said online
    assert value("iotgw_ws_clients") >= 1
    frames = value("iotgw_ws_frames_sent_total")
    assert frames >= 5
    assert value("iotgw_ws_bytes_sent_total") > frames * 10
    assert value("iotgw_readings_coalesced_total") == 0
    assert value("iotgw_commands_total", status="ok") == 1
    assert value("iotgw_command_rtt_seconds_bucket", le="+Inf") == 1
    assert value("iotgw_command_rtt_seconds_count") == 1
    assert 0 <= value("iotgw_event_loop_lag_seconds") < 5

    for family in families.values():
        assert family.name.startswith("iotgw_")
        assert family.documentation, f"{family.name} has no HELP text"
        for sample in family.samples:
            allowed = INFO_LABELS if family.name == "iotgw_instance_info" else ALLOWED_LABELS
            assert set(sample.labels) <= allowed, sample
    for private in ("mx-thermo-1", "mx-meter-2", prefix, client.hello["session"]):
        assert private not in text

    # The shipped Grafana dashboard queries only metrics that exist.
    dashboard = (ROOT / "deploy" / "grafana-dashboard.json").read_text()
    queried = set(re.findall(r"\b(iotgw_[a-z_]+)", dashboard))
    assert len(queried) >= 15
    names = {s for (s, _) in samples} | {f.name for f in families.values()}
    for name in queried:
        assert name in names or re.sub(r"_(total|bucket|count|sum)$", "", name) in names, name


METRICS_TOKEN = "mt-5c0ffee1d2"


@pytest.mark.parametrize("source", ["file", "env"])
async def test_metrics_token_protects_metrics(
    start_gateway: StartGateway, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    """With http.metrics_token (or metrics_token_env) set, /metrics answers 401 (with
    WWW-Authenticate: Bearer) without the token or with another one, and the metrics with it."""
    if source == "env":
        monkeypatch.setenv("IOTGW_TEST_METRICS_TOKEN", METRICS_TOKEN)
        gw = await start_gateway({"http.metrics_token_env": "IOTGW_TEST_METRICS_TOKEN"})
    else:
        gw = await start_gateway({"http.metrics_token": METRICS_TOKEN})
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": METRICS_TOKEN}):
        async with gw.http.get(gw.base_url + "/metrics", headers=headers) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert "iotgw_" not in await response.text()
    status, text = await gw.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert status == 200
    assert "iotgw_broker_connected 1.0" in text.splitlines()


async def test_metrics_are_open_without_a_metrics_token(start_gateway: StartGateway) -> None:
    """Without http.metrics_token, /metrics needs no token, even when auth tokens are set."""
    gw = await start_gateway({"auth.tokens": [{"token": "t-1", "name": "ops"}]})
    status, text = await gw.get("/metrics")
    assert status == 200
    assert "iotgw_ws_clients" in text


# --- a real `iotgw run` process -----------------------------------------------------------------


def gateway_process(*args: str) -> contextlib.AbstractAsyncContextManager[CliProcess]:
    """`python -m gateway ARGS` from the source tree, without the caller's IOTGW_* variables
    (and with in-memory history: no file left in the source tree)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOTGW_")}
    env["IOTGW_HISTORY__BACKEND"] = "memory"
    return running(CliProcess([sys.executable, "-m", "gateway", *args], cwd=ROOT, env=env))


def _json_lines(lines: list[str]) -> list[dict[str, Any]]:
    records = []
    for line in lines:
        record = orjson.loads(line)  # raises on anything that is not one JSON value per line
        assert isinstance(record, dict), line
        records.append(record)
    return records


async def test_run_logs_the_url_it_serves_and_the_broker_it_joined(broker: Mosquitto) -> None:
    """`iotgw run` says where it serves and which broker it joined, and exits 0 on SIGTERM."""
    port = free_port()
    async with gateway_process("run", "--port", str(port), "--broker", broker.url) as gw:
        await gw.line(lambda line: f"serving http://127.0.0.1:{port}/" in line)
        await gw.line(lambda line: f"connected to broker {broker.host}:{broker.port}" in line)
        assert await gw.stop() == 0
    assert not [line for line in gw.lines if "Traceback" in line]


async def test_json_log_format_is_one_object_per_line(broker: Mosquitto) -> None:
    """--log-format json: every stderr line is a JSON object with ts, level, logger, message."""
    port = free_port()
    args = ["run", "--port", str(port), "--broker", broker.url]
    async with gateway_process(*args, "--log-format", "json", "--log-level", "debug") as gw:
        await gw.line(lambda line: "connected to broker" in line)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/healthz") as response,
        ):
            assert response.status == 200
        await gw.line(lambda line: "/healthz" in line)  # the access log line
        assert await gw.stop() == 0
    records = _json_lines(gw.lines)
    assert len(records) >= 4
    for record in records:
        assert isinstance(record["ts"], float)
        assert record["level"] in ("debug", "info", "warning", "error", "critical")
        assert isinstance(record["logger"], str)
        assert isinstance(record["message"], str)
    [access] = [r for r in records if "/healthz" in r["message"]]
    assert access["remote"] == "127.0.0.1"


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_device_strings_cannot_forge_log_lines(
    broker: Mosquitto, publisher: Any, prefix: str, log_format: str
) -> None:
    """A metric name with a newline and a forged record in it (logged as a bad metric name)
    stays inside its own line on `iotgw run`'s stderr, in both formats, for every line splitter
    (orjson alone escapes the newline but writes U+2028 as it is)."""
    port = free_port()
    args = ["run", "--port", str(port), "--broker", broker.url, "--prefix", prefix]
    async with gateway_process(*args, "--log-format", log_format) as gw:
        await gw.line(lambda line: "connected to broker" in line)
        forged = "12:00:00 ERROR   gateway.app: FORGED"
        payload = orjson.dumps({f"x\n{forged}\u2028\x1b[2J": 1, "ok": 2})
        await publisher.publish(f"{prefix}/dev-1/telemetry", payload, qos=1)
        warning = await gw.line(lambda line: "bad_metric_name" in line)
        assert await gw.stop() == 0
    assert "FORGED" in warning
    assert not [line for line in gw.lines if "FORGED" in line and line != warning]
    assert "\x1b" not in warning
    assert [line for line in gw.lines if len(line.splitlines()) != 1] == []  # U+2028 too
    if log_format == "json":
        _json_lines(gw.lines)  # still one JSON object per line


TOKEN = "tok-7f3a9c1e5b"
WRONG_TOKEN = "tok-wrong-0d4e2b"
PASSWORD = "pw-a81c55e0"
URL_PASSWORD = "urlpw-4be19f"


async def test_no_secrets_in_logs(broker: Mosquitto, tmp_path: Path) -> None:
    """Tokens (query string, auth frame, bearer header) and broker passwords never reach the
    logs, at debug level too; the access log shows the /ws token as REDACTED."""
    config = tmp_path / "config.toml"
    config.write_text(
        f'[broker]\nusername = "gw"\npassword = "{PASSWORD}"\n'
        f'[[auth.tokens]]\nname = "ops"\ntoken = "{TOKEN}"\ncommand = ["*"]\n'
    )
    port = free_port()
    url = f"mqtt://gw:{URL_PASSWORD}@{broker.host}:{broker.port}"
    args = ["run", "-c", str(config), "--port", str(port), "--broker", url, "--log-level", "debug"]
    base = f"127.0.0.1:{port}"
    async with gateway_process(*args, "--log-format", "json") as gw:
        await gw.line(lambda line: "connected to broker" in line)
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with http.get(f"http://{base}/api/devices", headers=headers) as response:
                assert response.status == 200
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(f"ws://{base}/ws?token={WRONG_TOKEN}")
            assert refused.value.status == 401
            async with http.ws_connect(f"ws://{base}/ws?token={TOKEN}") as ws:
                client = WsClient(ws)
                assert (await client.recv())["auth"] == "none"
            async with http.ws_connect(f"ws://{base}/ws") as ws:
                client = WsClient(ws)
                await client.recv()  # hello: auth required
                await client.request({"type": "auth", "token": WRONG_TOKEN})  # refused, closed
                assert await client.closed() == 4500
        await gw.line(lambda line: "/ws?token=REDACTED" in line)
        assert await gw.stop() == 0
    everything = "\n".join(gw.lines) + gw.stdout.decode()
    assert f"mqtt://gw:***@{broker.host}" in everything  # the URL is logged, without its password
    for secret in (TOKEN, WRONG_TOKEN, PASSWORD, URL_PASSWORD):
        assert secret not in everything


def test_connection_log_carries_conn_and_remote_in_both_formats() -> None:
    """ConnectionLog puts a connection label (not the session id) and the remote address on its
    records: JSON fields, a text suffix."""
    records: list[logging.LogRecord] = []
    logger = logging.getLogger("test.operations.connection")
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        ConnectionLog(logger, "c-abc", "192.0.2.7").warning("closing: %s", "slow consumer")
    finally:
        logger.removeHandler(handler)
    [record] = records
    label = connection_label("c-abc")
    assert re.fullmatch("[0-9a-f]{8}", label)
    entry = orjson.loads(JsonFormatter().format(record))
    assert entry["conn"] == label
    assert entry["remote"] == "192.0.2.7"
    assert entry["message"] == "closing: slow consumer"
    assert entry["level"] == "warning"
    assert "c-abc" not in str(entry)
    text = TextFormatter().format(record)
    assert text.endswith(f"closing: slow consumer [conn={label} remote=192.0.2.7]")


def _mentions(record: logging.LogRecord, text: str) -> bool:
    """`text` is in the record's message or in any of its attributes (context, args)."""
    return text in record.getMessage() or any(text in str(v) for v in vars(record).values())


async def test_session_ids_are_logged_at_debug_only(
    start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """A connection's lines at INFO and above (here: closed for a request before auth) name it
    by its label and remote address; its session id, a resume handle, appears at DEBUG only."""
    gw = await start_gateway({"auth.tokens": [{"token": TOKEN, "name": "ops"}]})
    with caplog.at_level(logging.DEBUG):
        client = await gw.connect()
        await client.send({"type": "subscribe", "id": 1, "devices": ["*"]})
        assert await client.closed() == 4500
    session = client.hello["session"]
    [record] = [r for r in caplog.records if "request_before_auth" in r.getMessage()]
    assert record.levelno == logging.INFO
    assert getattr(record, "conn", None) == connection_label(session)
    assert getattr(record, "remote", None) == "127.0.0.1"
    assert [r for r in caplog.records if _mentions(r, session) and r.levelno >= logging.INFO] == []
    assert [r for r in caplog.records if _mentions(r, session) and r.levelno == logging.DEBUG]


def test_redact_url_hides_only_the_password() -> None:
    """redact_url keeps scheme, user, host and port, and replaces the password."""
    assert redact_url("mqtt://u:p%40ss@h:1883") == "mqtt://u:***@h:1883"
    assert redact_url("mqtts://broker.example:8883") == "mqtts://broker.example:8883"


# --- CLI manners --------------------------------------------------------------------------------


def _cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOTGW_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout, check=False,
    )  # fmt: skip


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_every_flag_and_subcommand_has_help_text() -> None:
    """Each subcommand and each of its arguments carries help text."""
    parser = build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert {a.dest for a in sub._choices_actions} == set(sub.choices)
    for action in sub._choices_actions:
        assert action.help, f"subcommand {action.dest} has no help"
    for name, subparser in sub.choices.items():
        for action in subparser._actions:
            assert action.help, (name, action.dest)
            assert action.help != argparse.SUPPRESS, (name, action.dest)


@pytest.mark.parametrize("command", [None, *_subcommands()])
def test_help_of_each_command_lists_every_option(
    command: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    """`iotgw [COMMAND] --help` exits 0 and shows every option the command has."""
    parser = build_parser() if command is None else _subcommands()[command]
    with pytest.raises(SystemExit) as exited:
        main([*([command] if command else []), "--help"])
    assert exited.value.code == 0
    shown = capsys.readouterr()
    assert shown.err == ""
    for action in parser._actions:
        for option in action.option_strings:
            assert option in shown.out, option


def test_version_prints_the_package_version() -> None:
    """`iotgw --version` prints `iotgw <version>` and exits 0."""
    done = _cli("--version")
    assert (done.returncode, done.stdout) == (0, f"iotgw {__version__}\n")


@pytest.fixture
def taken_port() -> Any:
    """A loopback port something else is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


MISTAKES = {
    "missing config file": (["run", "-c", "/nonexistent/iotgw.toml"], "No such file"),
    "unknown config key": (["run", "-c", "{bad_key}"], "broker.urll: unknown key"),
    "bad broker URL": (["run", "--broker", "http://broker:1883"], "broker.url: expected mqtt://"),
    "port in use": (["run", "--port", "{taken}", "--broker", "{broker}"], "the port is in use"),
    "bad log level": (["run", "--log-level", "loud"], "log.level"),
    "check-config of a bad file": (["check-config", "{bad_key}"], "broker.urll: unknown key"),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_user_mistake_is_one_clear_line_and_nonzero_exit(
    mistake: str, tmp_path: Path, taken_port: int, broker: Mosquitto
) -> None:
    """A user's mistake ends `iotgw` with one `iotgw: …` line on stderr, no traceback, exit > 0."""
    bad_key = tmp_path / "bad.toml"
    bad_key.write_text('[broker]\nurll = "mqtt://h"\n')
    args, expected = MISTAKES[mistake]
    values = {"bad_key": str(bad_key), "taken": str(taken_port), "broker": broker.url}
    done = _cli(*(a.format(**values) for a in args))
    assert done.returncode > 0
    assert "Traceback" not in done.stderr
    [error] = [line for line in done.stderr.splitlines() if line.startswith("iotgw: ")]
    assert expected in error
    assert done.stderr.splitlines()[-1] == error


# --- the suite's broker choice (IOTGW_TEST_BROKER) ----------------------------------------------


def test_broker_choice_parses_host_port_and_refuses_junk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """host:port (and [v6]:port) select a running broker; anything else is a clear error."""
    assert broker_choice.parse_address("broker.lan:1883") == ("broker.lan", 1883)
    assert broker_choice.parse_address("[::1]:1884") == ("::1", 1884)
    for junk in ("broker", "broker:", ":1883", "h:70000", "h:x"):
        with pytest.raises(broker_choice.BrokerChoiceError, match="expected host:port"):
            broker_choice.parse_address(junk)
    monkeypatch.delenv(broker_choice.ENV, raising=False)
    assert broker_choice.own_broker_refusal() is None
    monkeypatch.setenv(broker_choice.ENV, "10.0.0.5:1883")
    assert "a broker of its own" in (broker_choice.own_broker_refusal() or "")


def test_unusable_broker_choice_stops_the_session_with_its_reason() -> None:
    """IOTGW_TEST_BROKER=docker without testcontainers or Docker ends pytest with one reason."""
    # DOCKER_HOST names a socket that does not exist: where testcontainers is installed and a
    # Docker engine runs, the container still cannot start, so this runs the same everywhere.
    env = {**os.environ, broker_choice.ENV: "docker", "DOCKER_HOST": "unix:///nonexistent.sock"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/integration/test_gateway_http.py::test_healthz_and_readyz_report_ok_when_connected"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == pytest.ExitCode.USAGE_ERROR
    assert "IOTGW_TEST_BROKER=docker" in done.stdout
    assert "Traceback" not in done.stdout


async def test_default_access_log_redacts_query_tokens(
    broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """Served with aiohttp's own access logger (as `web.run_app(create_app(config))` does), a
    `?token=` in the request line is still redacted."""
    from aiohttp import web

    from gateway.app import create_app
    from gateway.config import load_config

    config = load_config(
        env={}, overrides={"broker.url": broker.url, "auth.tokens": [{"token": TOKEN}]}
    )
    runner = web.AppRunner(create_app(config))  # default access logger and format
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        with caplog.at_level(logging.INFO, logger="aiohttp.access"):
            async with (
                aiohttp.ClientSession() as http,
                http.ws_connect(f"ws://127.0.0.1:{port}/ws?token={TOKEN}") as ws,
            ):
                await ws.receive(timeout=10)
        lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    finally:
        await runner.cleanup()
    assert any("token=REDACTED" in line for line in lines), lines
    assert not any(TOKEN in line for line in lines)

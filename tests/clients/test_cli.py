"""`iotgw tail | send | devices | history` as a user runs them, against the real gateway."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import orjson

from tests.integration.conftest import AddDevice, StartGateway
from tests.support.devices import echo_ok
from tests.support.gateway import WAIT_S, GatewayUnderTest
from tests.support.process import CliProcess, running

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


async def iotgw(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run `iotgw ARGS` to its end: (exit status, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env or ENV,
    )  # fmt: skip
    async with asyncio.timeout(WAIT_S * 2):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_send_prints_the_result_and_says_the_outcome_in_its_status(
    gw: GatewayUnderTest, add_device: AddDevice
) -> None:
    """ok prints the result (0); a device error, a timeout, an unknown device and bad params
    each exit with their documented status and one line on stderr."""

    def answer(command: str, params: dict) -> tuple[str, object, str | None] | None:
        if command == "set_mode":
            return ("error", None, "mode locked")
        if command == "toggle":
            return None
        return echo_ok(command, params)

    await add_device("thermo-1", answer=answer)
    url = ["--url", gw.ws_url]
    assert await iotgw("send", "thermo-1", "set_target", "target=21.5", *url) == (
        0, '{"target":21.5}\n', "",
    )  # fmt: skip
    status, _, err = await iotgw("send", "thermo-1", "set_mode", "mode=heat", *url)
    assert (status, err) == (5, "iotgw send: mode locked\n")
    status, _, err = await iotgw("send", "thermo-1", "toggle", "--timeout", "0.3", *url)
    assert (status, err) == (6, "iotgw send: the device did not answer in time\n")
    status, _, err = await iotgw("send", "nobody", "toggle", *url)
    assert (status, err) == (4, "iotgw send: not_found: unknown device 'nobody'\n")
    status, _, err = await iotgw("send", "thermo-1", "set_target", "target=99", *url)
    assert status == 4
    assert err.startswith("iotgw send: bad_params: ")


async def test_connection_errors_are_one_line(start_gateway: StartGateway) -> None:
    """A wrong URL exits 1 and a refused token 3, each with one line naming the problem."""
    gw = await start_gateway({"auth.tokens": [{"token": "secret", "command": ["*"]}]})
    status, _, err = await iotgw("devices", "--url", "ws://127.0.0.1:1/ws")
    assert status == 1
    assert err.startswith("iotgw devices: cannot connect to ws://127.0.0.1:1/ws: ")
    assert err.count("\n") == 1
    status, _, err = await iotgw("devices", "--url", gw.ws_url, "--token", "wrong")
    assert (status, err) == (3, f"iotgw devices: {gw.ws_url}: the gateway refused the token\n")
    env = {**ENV, "IOTGW_URL": gw.base_url, "IOTGW_TOKEN": "secret"}
    status, out, _ = await iotgw("devices", "--format", "json", env=env)
    assert (status, orjson.loads(out)) == (0, [])


async def test_devices_and_history(gw: GatewayUnderTest, add_device: AddDevice) -> None:
    """devices lists the fleet; history prints the points of a range, --csv every raw point."""
    device = await add_device("thermo-1")
    for i in range(3):
        await device.telemetry({"temperature": 20 + i}, ts=1000.0 + i)
    url = ["--url", gw.ws_url]
    async with asyncio.timeout(WAIT_S):
        while True:
            status, out, _ = await iotgw("devices", "--format", "json", *url)
            listed = orjson.loads(out)
            if listed and listed[0]["values"].get("temperature", [0, 0])[1] == 22:
                break
    assert listed[0]["id"] == "thermo-1"
    status, out, _ = await iotgw("devices", *url)
    assert (status, out.splitlines()[1].split()[:3]) == (0, ["thermo-1", "online", "thermostat"])
    args = ("history", "thermo-1", "temperature", "--from", "999", "--to", "1002.5", *url)
    status, out, _ = await iotgw(*args)
    assert status == 0
    assert [line.split()[-1] for line in out.splitlines()] == ["20", "21", "22"]
    status, out, _ = await iotgw(*args, "--csv")
    assert (status, out.splitlines()) == (0, ["time,value", "1000.0,20", "1001.0,21", "1002.0,22"])


async def test_tail_prints_json_lines_and_ends_cleanly(
    gw: GatewayUnderTest, add_device: AddDevice, tmp_path
) -> None:
    """tail prints one JSON object per reading and event; SIGINT ends it with status 0, and a
    reader that leaves (`| head -n 2`) ends it quietly too."""
    device = await add_device("thermo-1")
    argv = [sys.executable, "-m", "gateway", "tail", "--url", gw.ws_url, "--devices", "thermo-*"]
    async with running(CliProcess(argv, cwd=tmp_path, env=ENV)) as tail:
        await tail.line(lambda line: line == "iotgw tail: 1 devices")
        await device.telemetry({"temperature": 21.5})
        await device.client.publish(device.topic("status"), b"offline", qos=1, retain=True)
        # tail's own output says it has the event (waiting on another client raced its printing).
        await tail.output(lambda line: '"type":"event"' in line and '"offline"' in line)
        assert await tail.stop(signal.SIGINT) == 0
    lines = [orjson.loads(line) for line in tail.stdout.splitlines()]
    assert {"type": "reading", "device": "thermo-1", "metric": "temperature",
            "ts": lines[0]["ts"], "value": 21.5} == lines[0]  # fmt: skip
    assert (lines[-1]["type"], lines[-1]["device"]["status"]) == ("event", "offline")
    assert not [line for line in tail.lines if "Traceback" in line]

    pipeline = f"{' '.join(argv)} | head -n 2"
    process = await asyncio.create_subprocess_shell(
        pipeline, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV,
        executable="/bin/bash",
    )  # fmt: skip
    for n in range(60):
        await device.telemetry({"temperature": n})
        if process.returncode is not None:
            break
        await asyncio.sleep(0.05)  # readings keep coming until head has its two and leaves
    async with asyncio.timeout(WAIT_S):
        out, err = await process.communicate()
    assert process.returncode == 0
    assert len(out.splitlines()) == 2
    assert b"Traceback" not in err

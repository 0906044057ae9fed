"""Device models: meta, physics, command validation and determinism (no network)."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from gateway.meta import parse_meta
from simulators.devices import (
    DEVICE_TYPES,
    CommandRejected,
    DeviceModel,
    EnvironmentSensor,
    GpsTracker,
    PowerMeter,
    SmartSwitch,
    Thermostat,
)
from simulators.devices.tracker import distance_m

T0 = 1_764_000_000.0  # a fixed wall-clock start, so daily waves are reproducible


def make(cls: type[DeviceModel], seed: int = 1) -> DeviceModel:
    return cls(f"{cls.id_stem}-1", random.Random(seed), "Test device")


def run(model: DeviceModel, seconds: float, dt: float = 1.0) -> list[dict[str, object]]:
    return [model.step(T0 + i * dt) for i in range(int(seconds / dt) + 1)]


@pytest.mark.parametrize("kind", sorted(DEVICE_TYPES))
def test_meta_parses_with_the_gateways_parser(kind: str) -> None:
    """Every model's meta is accepted by gateway.meta.parse_meta, with its units and commands."""
    model = make(DEVICE_TYPES[kind])
    meta = parse_meta(model.meta())
    assert meta.type == kind
    assert meta.name == "Test device"
    assert meta.units == dict(model.metrics.items())
    assert set(meta.commands) == set(model.commands)


@pytest.mark.parametrize("kind", sorted(DEVICE_TYPES))
def test_readings_cover_the_announced_metrics(kind: str) -> None:
    """A reading carries exactly the metrics the meta announces."""
    model = make(DEVICE_TYPES[kind])
    assert set(model.step(T0)) == set(model.metrics)


@pytest.mark.parametrize("kind", sorted(DEVICE_TYPES))
def test_same_seed_same_readings(kind: str) -> None:
    """Two models with the same seed and the same times produce identical readings."""
    cls = DEVICE_TYPES[kind]
    assert run(make(cls, 7), 120) == run(make(cls, 7), 120)
    assert run(make(cls, 7), 120) != run(make(cls, 8), 120)


@pytest.mark.parametrize("kind", sorted(DEVICE_TYPES))
def test_every_declared_command_has_a_handler(kind: str) -> None:
    """No command is announced that the device cannot carry out."""
    model = make(DEVICE_TYPES[kind])
    assert set(model.command_handlers()) == set(model.commands)


# --- thermostat physics -----------------------------------------------------------------------


def thermostat(mode: str, temperature: float, target: float) -> Thermostat:
    model = Thermostat("thermo-1", random.Random(3))
    model.mode, model.temperature, model.target = mode, temperature, target
    return model


def test_heating_approaches_target_without_overshoot() -> None:
    """In heat mode a cold room warms monotonically toward the target and never passes it."""
    model = thermostat("heat", 15.0, 22.0)
    temps = []
    for i in range(600):
        model.step(T0 + i)
        temps.append(model.temperature)
    assert all(b >= a for a, b in itertools.pairwise(temps))
    assert 21.9 < temps[-1] <= 22.0
    assert model.action == "heating"


def test_heating_follows_the_time_constant() -> None:
    """After one time constant the gap to the target has shrunk to 1/e."""
    model = thermostat("heat", 12.0, 22.0)
    for t in (0.0, 45.0, 90.0):  # two steps summing to TAU_ACTIVE_S
        model.step(T0 + t)
    assert model.temperature == pytest.approx(22.0 - 10.0 / math.e, abs=1e-9)


def test_cooling_mode_cools_a_warm_room() -> None:
    """In cool mode a room above the target cools toward it."""
    model = thermostat("cool", 28.0, 21.0)
    readings = run(model, 300)
    assert readings[-1]["action"] == "cooling"
    assert 21.0 <= model.temperature < 22.0


def test_heat_mode_does_not_cool() -> None:
    """A heat-only thermostat above its target stays idle and drifts slowly toward ambient."""
    model = thermostat("heat", 28.0, 21.0)
    run(model, 60)
    assert model.action == "idle"
    assert model.temperature > 27.0  # the idle time constant is ten times slower


def test_off_relaxes_toward_ambient() -> None:
    """Switched off, the room approaches the ambient temperature, whatever the target."""
    model = thermostat("off", 25.0, 30.0)
    run(model, 20_000, dt=10.0)
    assert model.action == "idle"
    assert model.temperature == pytest.approx(model.ambient, abs=0.5)


def test_set_target_takes_effect_in_next_readings() -> None:
    """set_target answers with the new target, and the next reading reports it and acts on it."""
    model = thermostat("auto", 20.0, 20.0)
    model.step(T0)
    assert model.handle("set_target", {"target": 24.5}) == {"target": 24.5}
    reading = model.step(T0 + 1)
    assert reading["target"] == 24.5
    assert reading["action"] == "heating"


def test_set_mode_takes_effect_in_next_readings() -> None:
    """set_mode changes the reported mode and the action."""
    model = thermostat("heat", 18.0, 22.0)
    assert model.handle("set_mode", {"mode": "off"}) == {"mode": "off"}
    reading = model.step(T0)
    assert (reading["mode"], reading["action"]) == ("off", "idle")


@pytest.mark.parametrize(
    ("command", "params", "message"),
    [
        ("set_target", {"target": 40}, "target must be ≤ 30"),
        ("set_target", {"target": 4.9}, "target must be ≥ 5"),
        ("set_target", {"target": "22"}, "target must be a number"),
        ("set_target", {"target": True}, "target must be a number"),
        ("set_target", {}, "missing param 'target'"),
        ("set_target", {"target": 22, "force": True}, "unknown param 'force'"),
        ("set_target", [22], "params must be an object"),
        ("set_mode", {"mode": "turbo"}, "mode must be one of off, heat, cool, auto"),
        ("reboot", {}, "unknown command 'reboot'"),
    ],
)
def test_bad_commands_are_refused_with_a_clear_message(
    command: str, params: object, message: str
) -> None:
    """The device re-validates every command and names what is wrong; its state is unchanged."""
    model = thermostat("heat", 20.0, 21.0)
    with pytest.raises(CommandRejected, match=message):
        model.handle(command, params)
    assert (model.target, model.mode) == (21.0, "heat")


# --- switch, meter, sensor, tracker ---------------------------------------------------------


def test_switch_commands_take_effect() -> None:
    """turn_on/turn_off/toggle change `on`, and power is drawn only while on."""
    model = SmartSwitch("switch-1", random.Random(2))
    assert model.handle("turn_off", {}) == {"on": False}
    assert model.step(T0) == {"on": False, "power": 0.0}
    assert model.handle("toggle", {}) == {"on": True}
    reading = model.step(T0 + 1)
    assert reading["on"] is True
    assert reading["power"] == pytest.approx(model.rated_w, rel=0.2)
    assert model.handle("turn_on", {}) == {"on": True}
    with pytest.raises(CommandRejected, match="unknown param"):
        model.handle("toggle", {"on": True})


def test_meter_energy_is_monotonic() -> None:
    """The energy register never decreases, even with repeated or backwards timestamps."""
    model = PowerMeter("meter-1", random.Random(4))
    times = [T0 + t for t in (0, 1, 1, 0.5, 2, 3600, 3600.5, 90_000)]
    energies = [model.step(t)["energy"] for t in times]
    assert all(b >= a for a, b in itertools.pairwise(energies))
    assert energies[-1] > energies[0]


def test_meter_power_is_voltage_times_current() -> None:
    """Reported power agrees with voltage * current * power factor."""
    model = PowerMeter("meter-1", random.Random(5))
    for reading in run(model, 60):
        assert reading["power"] == pytest.approx(
            reading["voltage"] * reading["current"] * 0.95, rel=0.01, abs=0.5
        )


def test_meter_energy_integrates_power() -> None:
    """An hour at roughly P watts adds roughly P/1000 kWh."""
    model = PowerMeter("meter-1", random.Random(6))
    start = model.step(T0)["energy"]
    powers = [model.step(T0 + i)["power"] for i in range(1, 3601)]
    added = model.step(T0 + 3600)["energy"] - start
    assert added == pytest.approx(sum(powers) / 3_600_000, rel=0.01)


def test_environment_sensor_stays_plausible_and_battery_drains() -> None:
    """Humidity stays in 0..100, temperature moves smoothly, battery only goes down."""
    model = EnvironmentSensor("env-1", random.Random(8))
    readings = run(model, 7200, dt=5.0)
    assert all(0.0 <= r["humidity"] <= 100.0 for r in readings)
    temps = [r["temperature"] for r in readings]
    assert max(abs(b - a) for a, b in itertools.pairwise(temps)) < 1.0
    assert max(temps) - min(temps) > 0.1  # it does move
    batteries = [r["battery"] for r in readings]
    assert all(b <= a for a, b in itertools.pairwise(batteries))
    assert batteries[-1] < batteries[0]


def test_tracker_drives_along_its_route_at_its_speed() -> None:
    """Each second the tracker moves about speed/3.6 metres, headings stay in 0..360."""
    model = GpsTracker("gps-1", random.Random(9))
    previous = model.step(T0)
    headings = set()
    for i in range(1, 900):
        reading = model.step(T0 + i)
        moved = distance_m((previous["lat"], previous["lon"]), (reading["lat"], reading["lon"]))
        # Rounding to 1e-6 degrees is ~0.1 m; corners cut a little off the straight line.
        assert moved <= reading["speed"] / 3.6 + 0.5
        assert 0.0 <= reading["heading"] < 360.0
        headings.add(reading["heading"])
        previous = reading
    centre = model.route[0]
    assert distance_m(centre, model.position) < 10_000
    assert model.odometer_m > 1_000
    assert len(headings) > 1  # it turned a corner of the route

"""GPS tracker: a vehicle driving laps of a closed route around a city, at a varying speed."""

from __future__ import annotations

import math
import random
from typing import ClassVar

from gateway.models import Value
from simulators.devices.base import DeviceModel, clamp, wander

EARTH_RADIUS_M = 6_371_000.0
CITIES = ((52.5200, 13.4050), (48.8566, 2.3522), (40.7128, -74.0060), (35.6762, 139.6503),
          (51.5074, -0.1278), (-33.8688, 151.2093), (59.3293, 18.0686))  # fmt: skip


def distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Equirectangular distance: plenty accurate over the few kilometres of one route leg."""
    mean_lat = math.radians((a[0] + b[0]) / 2.0)
    dx = math.radians(b[1] - a[1]) * math.cos(mean_lat)
    dy = math.radians(b[0] - a[0])
    return EARTH_RADIUS_M * math.hypot(dx, dy)


def bearing_deg(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Initial compass bearing from a to b, 0..360 (0 = north, 90 = east)."""
    lat1, lat2 = math.radians(a[0]), math.radians(b[0])
    dlon = math.radians(b[1] - a[1])
    x = math.sin(dlon) * math.cos(lat2)
    y = math.cos(lat1) * math.sin(lat2) - math.sin(lat1) * math.cos(lat2) * math.cos(dlon)
    return math.degrees(math.atan2(x, y)) % 360.0


class GpsTracker(DeviceModel):
    kind = "tracker"
    id_stem = "gps"
    metrics: ClassVar[dict[str, str]] = {"lat": "°", "lon": "°", "speed": "km/h", "heading": "°"}

    def __init__(self, device_id: str, rng: random.Random, name: str = "") -> None:
        super().__init__(device_id, rng, name)
        self.route = self._make_route(rng)
        self.leg = 0  # driving from route[leg] to route[leg + 1]
        self.along_m = 0.0
        self.cruise_kmh = rng.uniform(25.0, 60.0)
        self.speed_kmh = self.cruise_kmh
        self.odometer_m = 0.0

    @staticmethod
    def _make_route(rng: random.Random) -> list[tuple[float, float]]:
        lat0, lon0 = rng.choice(CITIES)
        radius_deg = rng.uniform(0.01, 0.04)  # about 1-4 km
        points = rng.randint(6, 10)
        route = []
        for i in range(points):
            angle = 2.0 * math.pi * i / points
            r = radius_deg * rng.uniform(0.7, 1.3)
            route.append(
                (
                    lat0 + r * math.sin(angle),
                    lon0 + r * math.cos(angle) / math.cos(math.radians(lat0)),
                )
            )
        return route

    def _ends(self) -> tuple[tuple[float, float], tuple[float, float]]:
        return self.route[self.leg], self.route[(self.leg + 1) % len(self.route)]

    @property
    def position(self) -> tuple[float, float]:
        start, end = self._ends()
        frac = self.along_m / max(distance_m(start, end), 1e-9)
        return start[0] + (end[0] - start[0]) * frac, start[1] + (end[1] - start[1]) * frac

    @property
    def heading(self) -> float:
        return bearing_deg(*self._ends())

    def advance(self, now: float, dt: float) -> None:
        speed = wander(self.speed_kmh, self.cruise_kmh, dt, 60.0, 12.0, self.rng)
        self.speed_kmh = clamp(speed, 0.0, 130.0)
        remaining = self.speed_kmh / 3.6 * dt
        self.odometer_m += remaining
        while remaining > 0.0:
            leg_left = distance_m(*self._ends()) - self.along_m
            if remaining < leg_left:
                self.along_m += remaining
                break
            remaining -= leg_left
            self.leg = (self.leg + 1) % len(self.route)
            self.along_m = 0.0

    def readings(self) -> dict[str, Value]:
        lat, lon = self.position
        return {
            "lat": round(lat, 6),
            "lon": round(lon, 6),
            "speed": round(self.speed_kmh, 1),
            "heading": round(self.heading, 1),
        }

"""Several gateway instances as one service (docs/scaling.md): who this instance is, whose command
an id names, and which of the broker's copies of a message this instance stores.

Pure logic, no I/O: the writer group (gateway/writer_group.py) runs the second broker connection
that `Claims` and `shared_filters` serve, the runtime owns the identity.

- **Identity.** `instance_id` names this process in logs, `hello`, `/healthz`, /metrics, audit
  rows and command ids (`cluster.instance_id`; default: the host name plus a random suffix).
- **Command ids** (`c-<instance>-<16 hex>`): every instance sees every device's answers; only
  the instance an id names acts on it, and the others know it is a peer's, not a stray.
- **Claims.** Every instance subscribes to everything (live data, the registry); the readings are
  stored by whichever instance the broker's shared subscription `$share/<group>/...` hands the
  message to. The pipeline decodes each message once, from the main link: conventions keep state
  (a command waiting for its echo, discovery maps) that a second decode would disturb. `Claims`
  pairs the two copies of a message, the main link's decoded readings and the writer link's
  claim, by topic and payload, whichever arrives first.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from gateway.config import INSTANCE_ID, INSTANCE_ID_MAX, Config
from gateway.models import Reading
from gateway.names import slugify

_SUFFIX_HEX = 6
_COMMAND_ID = re.compile(rf"c-({INSTANCE_ID.pattern})-[0-9a-f]{{16}}")

#: Main-link copies and claims waiting for their other half, at most (each side); past it the
#: oldest waiting copy is given up (counted). At 100,000 messages/s and the default 2 s window
#: a side holds 200,000 at most in steady state.
MAX_WAITING = 500_000


def default_instance_id() -> str:
    """The host name (made id-safe, shortened) plus a random suffix: unique per process."""
    host = slugify(socket.gethostname(), INSTANCE_ID_MAX - _SUFFIX_HEX - 1)
    return f"{host}-{secrets.token_hex(_SUFFIX_HEX // 2)}"


def with_instance_id(config: Config) -> Config:
    """`config` with `cluster.instance_id` filled in when it was left empty (once per process:
    the CLI does it before logging starts, the runtime for tests that build apps directly)."""
    if config.cluster.instance_id:
        return config
    cluster = dataclasses.replace(config.cluster, instance_id=default_instance_id())
    return dataclasses.replace(config, cluster=cluster)


def new_command_id(instance: str) -> str:
    return f"c-{instance}-{secrets.token_hex(8)}"


def command_owner(command_id: str) -> str | None:
    """The instance a command id names, or None when it is not one of the gateway's ids."""
    found = _COMMAND_ID.fullmatch(command_id)
    return found.group(1) if found is not None else None


# --- which filters the writer link subscribes to, shared ----------------------------------------


def covers(general: str, specific: str) -> bool:
    """True when every topic that MQTT filter `specific` matches, `general` matches too."""
    if general == specific:
        return True
    outer, inner = general.split("/"), specific.split("/")
    if specific.startswith("$") and outer[0] in ("+", "#"):
        return False  # wildcards at the first level never match $ topics (MQTT 3.1.1 §4.7.2)
    for i, level in enumerate(outer):
        if level == "#":
            return True  # `a/#` matches `a` too, and anything under it
        if i >= len(inner):
            return False
        if inner[i] == "#":
            return False
        if level != "+" and level != inner[i]:
            return False
    return len(inner) == len(outer)


def shared_filters(filters: Iterable[str], group: str) -> list[str]:
    """The writer link's subscriptions for the main link's `filters`: each one in the shared
    group, except filters another one covers. A broker picks a member per shared subscription,
    so two overlapping ones could hand the same message to two instances (Mosquitto does)."""
    unique = list(dict.fromkeys(filters))
    wide = [f for f in unique if "+" in f or "#" in f]
    kept = [f for f in unique if not any(w != f and covers(w, f) for w in wide)]
    return [f"$share/{group}/{f}" for f in kept]


# --- pairing the two copies of a message ---------------------------------------------------------

#: What the pipeline decoded from one main-link message: (readings, convention) per telemetry.
Decoded = list[tuple[list[Reading], str]]
Key = tuple[str, bytes]


@dataclass(slots=True)
class ClaimStats:
    """Counters read by /metrics; only Claims writes them."""

    claimed_messages: int = 0  # messages the writer link handed this instance
    claimed_points: int = 0  # readings of those handed to the history store
    unclaimed: int = 0  # main-link copies never claimed here (a peer stored them)
    unmatched: int = 0  # claims whose main-link copy never came: their readings are not stored
    given_up: int = 0  # copies dropped at MAX_WAITING (counted in unclaimed/unmatched too)


class Claims:
    """Pairs each writer-link claim with the main link's copy of the same message.

    A copy waits `window_s` for its other half; copies with the same topic and payload pair
    first-in first-out. A main-link copy nobody claims here was a peer's (a shared subscription
    hands each message to one member); a claim whose main-link copy never comes is counted as
    `unmatched`: its readings are lost (the main link dropped it, or the message was refused
    before it was decoded).
    """

    def __init__(
        self,
        window_s: float,
        store: Callable[[list[Reading], str], None],
        clock: Callable[[], float] = time.monotonic,
        max_waiting: int = MAX_WAITING,
    ) -> None:
        self._window = window_s
        self._store = store
        self._clock = clock
        self._max = max_waiting
        # Waiting copies by key, oldest first, each with its deadline (which is its identity
        # for the expiry queue: a copy that paired is gone, and a deadline finds nothing).
        self._decoded: dict[Key, deque[tuple[float, Decoded]]] = {}
        self._claimed: dict[Key, deque[float]] = {}
        self._decoded_count = 0
        self._claimed_count = 0
        # (deadline, key, is_claim) in arrival order: deadlines only grow.
        self._expiry: deque[tuple[float, Key, bool]] = deque()
        self.stats = ClaimStats()

    @property
    def waiting_claims(self) -> int:
        """Claims still waiting for the main link's copy."""
        return self._claimed_count

    @property
    def waiting(self) -> int:
        """Copies waiting for their other half, both sides."""
        return self._claimed_count + self._decoded_count

    def decoded(self, topic: str, payload: bytes, decoded: Decoded) -> None:
        """The main link's copy of a message and what the pipeline made of it."""
        now = self._clock()
        self._expire(now)
        key = (topic, payload)
        claims = self._claimed.get(key)
        if claims is not None:
            claims.popleft()
            if not claims:
                del self._claimed[key]
            self._claimed_count -= 1
            self._keep(decoded)
            return
        deadline = now + self._window
        queue = self._decoded.get(key)
        if queue is None:
            self._decoded[key] = deque(((deadline, decoded),))
        else:
            queue.append((deadline, decoded))
        self._decoded_count += 1
        self._expiry.append((deadline, key, False))
        if self._decoded_count > self._max:
            self._give_up()

    def claim(self, topic: str, payload: bytes) -> None:
        """The writer link's copy: this instance stores the message's readings."""
        now = self._clock()
        self._expire(now)
        self.stats.claimed_messages += 1
        key = (topic, payload)
        queue = self._decoded.get(key)
        if queue is not None:
            _, decoded = queue.popleft()
            if not queue:
                del self._decoded[key]
            self._decoded_count -= 1
            self._keep(decoded)
            return
        deadline = now + self._window
        claims = self._claimed.get(key)
        if claims is None:
            self._claimed[key] = deque((deadline,))
        else:
            claims.append(deadline)
        self._claimed_count += 1
        self._expiry.append((deadline, key, True))
        if self._claimed_count > self._max:
            self._give_up()

    def expire(self) -> None:
        """Give up on copies past their window (also done on every arrival)."""
        self._expire(self._clock())

    def _keep(self, decoded: Decoded) -> None:
        for readings, convention in decoded:
            self.stats.claimed_points += len(readings)
            self._store(readings, convention)

    def _expire(self, now: float) -> None:
        expiry = self._expiry
        while expiry and expiry[0][0] <= now:
            self._drop(*expiry.popleft())

    def _give_up(self) -> None:
        """Past MAX_WAITING on one side: the oldest waiting copies go before their window ends."""
        while self._expiry:
            if self._drop(*self._expiry.popleft()):
                self.stats.given_up += 1
                return

    def _drop(self, deadline: float, key: Key, is_claim: bool) -> bool:
        """Give up the copy an expiry entry stands for, if it is still waiting."""
        if is_claim:
            claims = self._claimed.get(key)
            if claims is None or claims[0] != deadline:
                return False
            claims.popleft()
            if not claims:
                del self._claimed[key]
            self._claimed_count -= 1
            self.stats.unmatched += 1
            return True
        queue = self._decoded.get(key)
        if queue is None or queue[0][0] != deadline:
            return False
        queue.popleft()
        if not queue:
            del self._decoded[key]
        self._decoded_count -= 1
        self.stats.unclaimed += 1
        return True

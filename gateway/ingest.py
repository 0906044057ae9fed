"""The broker link: the only module that uses aiomqtt's API (what it needs of aiomqtt's and paho's
internals is gateway/paho_compat.py's).

Connects, subscribes, hands every message to the pipeline (read by gateway/mqtt_reader.py, or by
aiomqtt's message iterator on the public read path), and reconnects forever with capped,
jittered exponential backoff. A fresh aiomqtt client is made for every connection: paho keeps
unacknowledged QoS 1 publishes queued across reconnects of one client object and would re-send a
command the gateway already reported as `unknown` — or one that got the connection dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import ssl
from collections.abc import AsyncIterator, Callable

import aiomqtt

from gateway import mqtt_reader, paho_compat
from gateway.config import BrokerConfig
from gateway.errors import BrokerUnavailable, PublishUnconfirmed
from gateway.logs import RateLimitedLog
from gateway.stats import LinkStats

log = logging.getLogger(__name__)
_jitter = random.Random()
#: A connection that lasted this long (or reconnect_max_s, if longer) counts as stable.
STABLE_LINK_S = 10.0
#: How long a cancelled connect may still run so that its socket can be closed properly.
ABANDONED_CONNECT_WAIT_S = 5.0
#: Conventions' own requests (Sparkplug rebirths) queued for the current connection.
OUTBOX_SIZE = 64

# paho leaves Nagle's algorithm on; a small command publish then waits for the delayed ACK of the
# previous packet (~40 ms on Linux), which dominated command round trips before this option.
NO_DELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def backoff_delay(attempt: int, low: float, high: float) -> float:
    """Full-jitter exponential backoff: uniform in [low, min(high, low * 2**attempt)]."""
    ceiling = min(high, low * 2 ** min(attempt, 32))
    return _jitter.uniform(low, ceiling)


class BrokerLink:
    def __init__(
        self,
        config: BrokerConfig,
        subscriptions: list[str],
        on_message: Callable[[str, bytes], None],
        on_state: Callable[[bool], None],
        on_oversize: Callable[[str, int], None] | None = None,
        *,
        skip_retained: bool = False,
    ) -> None:
        """`skip_retained`: messages the broker sends because a subscription was just made (the
        RETAIN flag) are acknowledged and not handed on (the cluster's writer link, whose
        shared subscriptions older Mosquittos still send retained messages to)."""
        self._config = config
        self._skip_retained = skip_retained
        # Insertion-ordered, looked up by topic: discovery adds and removes them one by one.
        self._subscriptions = dict.fromkeys(subscriptions)
        self._on_message = on_message
        self._on_state = on_state
        self._on_oversize = on_oversize
        self._client: aiomqtt.Client | None = None
        # Subscription changes for the current connection, in the order they were asked for.
        self._changes: asyncio.Queue[tuple[bool, list[str]]] = asyncio.Queue()
        # Conventions' QoS 0 requests for the current connection (publish_soon), bounded.
        self._outbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(OUTBOX_SIZE)
        self._stopping = asyncio.Event()
        self._warn = RateLimitedLog(log, interval=30.0)
        self._bugs = RateLimitedLog(log, interval=60.0)
        self.client_id = config.client_id or f"iotgw-{secrets.token_hex(4)}"
        # How long a connection must last for the next outage to back off from the start again.
        self.stable_after_s = max(STABLE_LINK_S, config.reconnect_max_s)
        self.stats = LinkStats()
        # The fast read path (gateway/mqtt_reader.py) unless configured off or its fence says
        # the installed paho/aiomqtt are not what it was verified with (then: one warning).
        self.fast_reader = config.fast_reader and _fast_reader_usable()

    @property
    def connected(self) -> bool:
        return self._client is not None

    def stop(self) -> None:
        """Ask run() to end. Shutdown cancels it too; this flag is what makes it end even when
        Python 3.11 swallows that cancellation inside aiomqtt (asyncio.wait_for, gh-86296)."""
        self._stopping.set()

    async def run(self) -> None:
        """Stay connected until cancelled or stopped."""
        attempt = 0
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            started, connects = loop.time(), self.stats.connects
            try:
                await self._session()
            except* aiomqtt.MqttError as group:
                self.stats.connect_failures += 1
                reason = "; ".join(str(exc) for exc in group.exceptions)
                # A flapping link would otherwise log a line per attempt.
                self._warn.warning(
                    reason, "broker %s:%d: %s", self._config.host, self._config.port, reason
                )
            was_up = self.stats.connects != connects
            if was_up and loop.time() - started >= self.stable_after_s:
                # The link held for a while: a new outage starts from the shortest delay. A link
                # that drops right after connecting (another client stealing our client id, a
                # broker that kicks us) keeps backing off instead of flapping at full speed.
                attempt = 0
            delay = backoff_delay(
                attempt, self._config.reconnect_min_s, self._config.reconnect_max_s
            )
            attempt += 1
            if self._stopping.is_set():
                return
            log.info("reconnecting to the broker in %.1fs", delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()

    async def _session(self) -> None:
        """One connection, from connect to its loss."""
        client = self._make_client()
        # The public path acknowledges QoS 1 after the pipeline took the message, as the fast does.
        ack = None if self.fast_reader else paho_compat.manual_acks(client)
        async with _connected(client), asyncio.TaskGroup() as tasks:
            # Everything asked for so far, on every (re)connect: the session is clean.
            self._changes = asyncio.Queue()
            self._outbox = asyncio.Queue(OUTBOX_SIZE)
            topics = [(topic, self._config.qos) for topic in self._subscriptions]
            await client.subscribe(topics)
            if self._stopping.is_set():
                return  # stopped while subscribing (and the cancellation may have been lost)
            tasks.create_task(self._apply_changes(client), name="gateway.ingest.subscriber")
            tasks.create_task(self._send_soon(client), name="gateway.ingest.requests")
            self.stats.connects += 1
            self._set_client(client)
            log.info(
                "connected to broker %s:%d as %s (%s read path), subscribed to %s",
                self._config.host,
                self._config.port,
                self.client_id,
                "fast" if self.fast_reader else "public",
                ", ".join(self._subscriptions),
            )
            try:
                lost = tasks.create_task(self._read(client, ack), name="gateway.ingest.watch")
                stopping = tasks.create_task(self._stopping.wait(), name="gateway.ingest.stop")
                await asyncio.wait([lost, stopping], return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                if lost.done():
                    lost.result()  # raises MqttError: the connection was lost
                lost.cancel()  # stopped: leave, and let `async with` disconnect cleanly
            finally:
                self.stats.disconnects += 1
                self._set_client(None)
                paho_compat.retrieve_disconnect_reason(client)

    def add_subscriptions(self, topics: list[str]) -> None:
        """Subscribe to more topics, now and after every reconnect (conventions that discover
        their devices' topics at run time call this through the pipeline). Never awaits."""
        new = [t for t in dict.fromkeys(topics) if t not in self._subscriptions]
        if new:
            self._subscriptions.update(dict.fromkeys(new))
            self._changes.put_nowait((True, new))

    def remove_subscriptions(self, topics: list[str]) -> None:
        """Unsubscribe from topics now, and stop subscribing to them after reconnects (a
        discovered device's topics once its discovery config is gone). Topics not subscribed
        are ignored. Never awaits; changes reach the broker in the order they were asked for."""
        gone = [t for t in dict.fromkeys(topics) if t in self._subscriptions]
        if gone:
            for topic in gone:
                del self._subscriptions[topic]
            self._changes.put_nowait((False, gone))

    def publish_soon(self, topic: str, payload: bytes) -> bool:
        """Queue a QoS 0 publish of the gateway's own (a convention's request, e.g. Sparkplug's
        rebirth) without waiting; False when it cannot go out: disconnected, or the bounded
        queue is full (the convention asks again later)."""
        if self._client is None:
            return False
        try:
            self._outbox.put_nowait((topic, payload))
        except asyncio.QueueFull:
            return False
        return True

    async def _send_soon(self, client: aiomqtt.Client) -> None:
        while True:
            topic, payload = await self._outbox.get()
            await client.publish(topic, payload, qos=0)

    @property
    def subscriptions(self) -> list[str]:
        """The topic filters subscribed on every connection, in the order they were added."""
        return list(self._subscriptions)

    async def _apply_changes(self, client: aiomqtt.Client) -> None:
        while True:
            subscribe, topics = await self._changes.get()
            if subscribe:
                await client.subscribe([(topic, self._config.qos) for topic in topics])
            else:
                await client.unsubscribe(topics)
            self._changes.task_done()

    async def settled(self) -> None:
        """Return once the broker has acknowledged every subscription change asked for so far
        on this connection (callers bound the wait: the connection may drop meanwhile)."""
        await self._changes.join()

    def _deliver(self, topic: str, payload: bytes) -> None:
        """Hand one message on. A bug that its handling trips (decode, registry, hub) is logged
        with its traceback at a limited rate, counted, and the message dropped (still
        acknowledged): raised into the read path, it would drop the link, and a retained message
        that trips it would do so again on every reconnect."""
        try:
            self._on_message(topic, payload)
        except Exception:
            self.stats.message_errors += 1
            self._bugs.exception(
                "message", "bug while handling a message on %.120r; message dropped", topic
            )

    def _set_client(self, client: aiomqtt.Client | None) -> None:
        self._client = client
        self._on_state(client is not None)

    def _make_client(self) -> aiomqtt.Client:
        config = self._config
        password = config.password
        if config.password_env:
            password = os.environ.get(config.password_env, "")
        tls_context = None
        if config.tls:
            # No plaintext fallback: an mqtts:// URL that cannot do TLS does not connect at all.
            tls_context = ssl.create_default_context(cafile=config.tls_ca_file or None)
            if config.tls_cert_file:
                tls_context.load_cert_chain(config.tls_cert_file, config.tls_key_file or None)
        client = aiomqtt.Client(
            config.host,
            config.port,
            identifier=self.client_id,
            username=config.username or None,
            password=password or None,
            keepalive=config.keepalive_s,
            tls_context=tls_context,
            timeout=config.publish_timeout_s,
            # A fresh client object per connection either way: paho's own queue never re-sends
            # a command; with a persistent session it is the broker that keeps what we missed.
            clean_session=not config.persistent_session,
            socket_options=[NO_DELAY],
        )
        if self.fast_reader:
            problem = paho_compat.client_problem(client)
            if problem is None:
                mqtt_reader.install(
                    client,
                    self._deliver,
                    self._on_oversize,
                    config.max_payload_bytes,
                    [NO_DELAY],
                    self._skip_retained,
                )
                return client
            log.warning("fast MQTT read path off: %s; using aiomqtt's message iterator", problem)
            self.fast_reader = False
        return client

    async def _read(self, client: aiomqtt.Client, ack: Callable[[int, int], object] | None) -> None:
        """Hand on what aiomqtt's message iterator yields (the public read path), acknowledging
        each QoS 1/2 message after; raise MqttError when the connection is lost. On the fast
        path the iterator yields nothing (gateway/mqtt_reader.py hands messages on): there it
        is only aiomqtt's way of reporting the loss."""
        async for message in client.messages:
            payload = message.payload
            if message.retain and self._skip_retained:
                pass
            elif isinstance(payload, bytes | bytearray):  # always, from paho
                self._deliver(message.topic.value, bytes(payload))
            if ack is not None and message.qos:
                ack(message.mid, message.qos)

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1, returning after PUBACK (see commands.Publisher)."""
        client = self._client
        if client is None:
            raise BrokerUnavailable("the broker is disconnected")
        try:
            await client.publish(topic, payload, qos=1, timeout=self._config.publish_timeout_s)
        except aiomqtt.MqttCodeError as exc:
            # Raised before anything was sent (paho refused the packet); this client object is
            # discarded on disconnect, so paho's own queue cannot re-send it later.
            raise BrokerUnavailable(str(exc)) from None
        except aiomqtt.MqttError as exc:
            # Sent, but no PUBACK before the timeout or the link dropped meanwhile.
            raise PublishUnconfirmed(str(exc)) from None


def _fast_reader_usable() -> bool:
    problem = paho_compat.fast_reader_problem()
    if problem is not None:
        log.warning("fast MQTT read path off: %s; using aiomqtt's message iterator", problem)
    return problem is None


@contextlib.asynccontextmanager
async def _connected(client: aiomqtt.Client) -> AsyncIterator[aiomqtt.Client]:
    """`async with client`, safe to cancel while connecting.

    aiomqtt connects in an executor thread that cancellation cannot stop; abandoned, the socket it
    opens and aiomqtt's housekeeping task outlive the event loop. On cancel, let the connect finish
    (briefly), disconnect, then let the cancellation through.
    """
    entering = asyncio.ensure_future(client.__aenter__())
    try:
        await asyncio.shield(entering)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(ABANDONED_CONNECT_WAIT_S):
                await entering
            await client.__aexit__(None, None, None)
        raise
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_exit(client)
        yield client

"""gateway.mqtt_reader: framing of the broker's byte stream, with paho replaced by a recorder
(behind the real gateway.paho_compat hooks and socket view).

The reader must hand each PUBLISH (QoS 0/1) to the pipeline and every other packet to paho
whole, wherever the socket's reads happen to split the stream.
"""

from __future__ import annotations

import struct

import pytest
from paho.mqtt import client as paho_mqtt

from bench.mqtt_wire import varint
from gateway import mqtt_reader
from gateway.mqtt_reader import PacketReader
from gateway.paho_compat import PahoHooks, PahoSocket


def remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish(topic: str, payload: bytes, qos: int = 0, mid: int = 0, retain: bool = False) -> bytes:
    body = struct.pack("!H", len(topic)) + topic.encode() + (struct.pack("!H", mid) if qos else b"")
    body += payload
    return bytes([0x30 | qos << 1 | retain]) + remaining_length(len(body)) + body


PINGRESP = b"\xd0\x00"
SUBACK = b"\x90\x03\x00\x01\x01"


class RecordingPaho:
    """What PacketReader uses of paho: loop_read() reads the fed packet; ack() is recorded."""

    def __init__(self) -> None:
        self.sock: PahoSocket | None = None
        self.packets: list[bytes] = []
        self.acks: list[tuple[int, int]] = []

    def loop_read(self) -> int:
        assert self.sock is not None
        packet = b""
        while True:
            try:
                piece = self.sock.recv(1)
            except BlockingIOError:
                break
            packet += piece
        self.packets.append(packet)
        return paho_mqtt.MQTT_ERR_SUCCESS

    def ack(self, mid: int, qos: int) -> None:
        self.acks.append((mid, qos))


class FakeClient:
    """An aiomqtt client as the hooks see it: its paho client."""

    def __init__(self) -> None:
        self._client = RecordingPaho()


def reader(
    oversize: list[tuple[str, int]] | None = None, max_payload: int = 1 << 20
) -> tuple[PacketReader, RecordingPaho, list[tuple[str, bytes]]]:
    handled: list[tuple[str, bytes]] = []
    refused = oversize if oversize is not None else []
    client = FakeClient()
    view = PahoSocket(None)
    client._client.sock = view
    packet_reader = PacketReader(
        None,
        PahoHooks(client, view),
        handle=lambda t, p: handled.append((t, p)),
        oversize=lambda t, n: refused.append((t, n)),
        max_payload=max_payload,
    )
    return packet_reader, client._client, handled


STREAM = [
    publish("p/a/telemetry", b'{"t": 1}'),
    SUBACK,
    publish("p/b/telemetry", b"x" * 200, qos=1, mid=513),  # two-byte remaining length
    publish("p/c/meta", b"y" * 20000, retain=True),  # three-byte remaining length
    PINGRESP,
    publish("p/d/telemetry", b""),
]


def feed(packet_reader: PacketReader, data: bytes, *cuts: int) -> None:
    """Hand `data` to the reader as the socket would, in pieces ending at `cuts`."""
    start = 0
    for cut in (*cuts, len(data)):
        if cut > start:
            packet_reader._take(data[start:cut])
            start = cut


def test_every_split_of_the_stream_gives_the_same_packets():
    """Wherever reads split the stream, the same packets are handled, in the same order."""
    data = b"".join(STREAM)
    whole_reader, whole_paho, whole_handled = reader()
    feed(whole_reader, data)
    assert whole_handled == [
        ("p/a/telemetry", b'{"t": 1}'),
        ("p/b/telemetry", b"x" * 200),
        ("p/c/meta", b"y" * 20000),
        ("p/d/telemetry", b""),
    ]
    assert whole_paho.packets == [SUBACK, PINGRESP]
    assert whole_paho.acks == [(513, 1)]  # acknowledged after the pipeline took the message
    boundaries = sorted({0, *range(40), *range(len(data) - 40, len(data) + 1), 250, 20000})
    for cut in boundaries:
        split_reader, split_paho, split_handled = reader()
        feed(split_reader, data, cut)
        assert (split_handled, split_paho.packets, split_paho.acks) == (
            whole_handled,
            whole_paho.packets,
            whole_paho.acks,
        ), cut


def test_a_packet_in_many_small_reads_is_assembled_once_complete():
    """A packet arriving 7 bytes at a time is handled once, whole, when its last byte comes."""
    packet_reader, _, handled = reader()
    data = publish("p/big/meta", bytes(range(256)) * 40) + STREAM[0]
    feed(packet_reader, data, *range(7, len(data), 7))
    assert handled == [("p/big/meta", bytes(range(256)) * 40), ("p/a/telemetry", b'{"t": 1}')]


def test_an_incomplete_packet_is_left_for_the_next_read():
    """Bytes of a packet whose end has not arrived wait; the complete ones before it do not."""
    packet_reader, _, handled = reader()
    feed(packet_reader, STREAM[0] + STREAM[2][:-1])
    assert handled == [("p/a/telemetry", b'{"t": 1}')]
    feed(packet_reader, STREAM[2][-1:])
    assert handled[1:] == [("p/b/telemetry", b"x" * 200)]


@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize("step", [1, 3, 1000, 1 << 20])
def test_an_oversize_publish_is_skipped_as_it_streams_in(qos, step):
    """A PUBLISH over the cap is counted with its topic and size, acknowledged at QoS 1, never
    handed on, and its bytes are dropped as they come: the packets around it are unaffected."""
    too_big = publish("p/x/telemetry", b"z" * 5000, qos=qos, mid=77)
    data = STREAM[0] + too_big + PINGRESP + STREAM[2]
    oversize: list[tuple[str, int]] = []
    packet_reader, paho, handled = reader(oversize=oversize, max_payload=4999)
    held = 0  # the most bytes the reader kept between reads
    for start in range(0, len(data), step):
        packet_reader._take(data[start : start + step])
        held = max(held, sum(map(len, packet_reader._pending)))
    assert oversize == [("p/x/telemetry", 5000)]
    assert handled == [("p/a/telemetry", b'{"t": 1}'), ("p/b/telemetry", b"x" * 200)]
    assert paho.packets == [PINGRESP]
    assert paho.acks == [(77, 1), (513, 1)] if qos else [(513, 1)]
    assert held < max(step, len(STREAM[2]))  # the 5000 bytes were never kept


def test_a_payload_at_the_cap_is_handled():
    """The cap is inclusive, as in the pipeline and in Mosquitto's message_size_limit."""
    oversize: list[tuple[str, int]] = []
    packet_reader, _, handled = reader(oversize=oversize, max_payload=200)
    feed(packet_reader, STREAM[2], 5)
    assert (handled, oversize) == ([("p/b/telemetry", b"x" * 200)], [])


def test_qos_2_publishes_are_paho_s():
    packet_reader, paho, handled = reader()
    packet = publish("p/q/telemetry", b"{}", qos=2, mid=7)
    feed(packet_reader, packet)
    assert (handled, paho.packets) == ([], [packet])


@pytest.mark.parametrize(
    "data",
    [
        b"\x30\x80\x80\x80\x80\x01",  # a fifth length byte
        b"\x32\x03\x00\x01a",  # QoS 1 with no room for its packet id
        b"\x30\x02\x00\x09",  # topic longer than the packet
    ],
)
def test_malformed_packets_are_a_broken_connection(data):
    packet_reader, _, handled = reader()
    with pytest.raises(ConnectionError):
        feed(packet_reader, data)
    assert handled == []


@pytest.mark.parametrize("n", [0, 1, 127, 128, 16383, 16384, 2_097_151, 2_097_152, 268_435_455])
def test_remaining_length_decodes_every_width(n):
    """The one decoder (the reader's, also used by bench/mqtt_wire) reads 1 to 4 length bytes."""
    encoded = b"\x30" + varint(n)
    assert mqtt_reader.remaining_length(encoded, 1, len(encoded)) == (n, len(encoded))
    assert mqtt_reader.remaining_length(encoded, 1, len(encoded) - 1) is None  # cut short

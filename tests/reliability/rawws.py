"""A raw WebSocket client over a plain socket, for frames no well-behaved library would send.

It does the RFC 6455 opening handshake itself and then writes frames byte by byte: invalid UTF-8
in a text frame, reserved close codes, oversize frames, ping floods, or nothing at all while never
reading (the stuck browser tab). Reads have deadlines; nothing here sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import struct
from dataclasses import dataclass

from tests.reliability.strict import strict_loads

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


@dataclass(frozen=True, slots=True)
class Frame:
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        if self.opcode != OP_CLOSE or len(self.payload) < 2:
            return None
        return int(struct.unpack("!H", self.payload[:2])[0])

    def json(self) -> dict[str, object]:
        assert self.opcode == OP_TEXT, f"not a text frame: opcode {self.opcode}"
        value = strict_loads(self.payload)
        assert isinstance(value, dict)
        return value


def encode_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True) -> bytes:
    """One frame as a client sends it (masked, RFC 6455 §5.3)."""
    head = bytearray([(0x80 if fin else 0) | opcode])
    length = len(payload)
    bit = 0x80 if mask else 0
    if length < 126:
        head.append(bit | length)
    elif length < 65536:
        head.append(bit | 126)
        head += struct.pack("!H", length)
    else:
        head.append(bit | 127)
        head += struct.pack("!Q", length)
    if not mask:
        return bytes(head) + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes(head) + key + masked


class RawWebSocket:
    """A client WebSocket on a plain socket, with the socket's buffers optionally shrunk."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.status = 0
        self.session = ""  # the gateway's session id, once the test has read hello

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        path: str = "/ws",
        headers: dict[str, str] | None = None,
        rcvbuf: int | None = None,
    ) -> RawWebSocket:
        """Open the socket and complete the upgrade; raise AssertionError unless it is a 101."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            # Set before connecting so the advertised window is small from the first segment.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
        reader, writer = await asyncio.open_connection(sock=sock)
        raw = cls(reader, writer)
        status = await raw._handshake(host, port, path, headers or {})
        assert status == 101, f"upgrade refused with HTTP {status}"
        return raw

    async def _handshake(self, host: str, port: int, path: str, headers: dict[str, str]) -> int:
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        async with asyncio.timeout(10):
            head = await self.reader.readuntil(b"\r\n\r\n")
        self.status = int(head.split(b" ", 2)[1])
        return self.status

    def send(self, opcode: int, payload: bytes, *, fin: bool = True) -> None:
        self.writer.write(encode_frame(opcode, payload, fin=fin))

    async def drain(self) -> None:
        await self.writer.drain()

    async def recv(self, within: float = 10.0) -> Frame:
        """The next frame from the server (its frames are never masked)."""
        async with asyncio.timeout(within):
            b0, b1 = await self.reader.readexactly(2)
            length = b1 & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
            payload = await self.reader.readexactly(length)
        return Frame(b0 & 0x0F, payload)

    async def recv_until_close(self, within: float = 10.0) -> tuple[list[Frame], int | None]:
        """Read frames until the server's close frame or EOF; return them and the close code."""
        frames: list[Frame] = []
        async with asyncio.timeout(within):
            while True:
                try:
                    frame = await self.recv(within)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return frames, None
                frames.append(frame)
                if frame.opcode == OP_TEXT:
                    frame.json()  # every text frame must be strict JSON
                if frame.opcode == OP_CLOSE:
                    return frames, frame.close_code

    async def at_eof(self, within: float = 10.0) -> bool:
        """True once the server has closed the TCP connection (reading and dropping data)."""
        async with asyncio.timeout(within):
            while True:
                try:
                    chunk = await self.reader.read(65536)
                except ConnectionError:
                    return True
                if not chunk:
                    return True

    def stop_reading(self) -> None:
        """Stop taking bytes off the socket: the kernel's receive buffer fills, then the server's
        send buffer, and the server's sends block (a stuck browser tab)."""
        self.writer.transport.pause_reading()

    def abort(self) -> None:
        self.writer.transport.abort()

    async def close(self) -> None:
        if not self.writer.transport.is_closing():
            self.writer.transport.abort()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()

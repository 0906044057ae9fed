"""`python -m gateway.embedded_broker PORT`: an amqtt broker on 127.0.0.1, for machines without
mosquitto. amqtt is pure Python, maintained, and runs on Python 3.11; it is slower than mosquitto
and meant for the demo, not for production fleets.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys


async def serve(port: int) -> None:
    from amqtt.broker import Broker

    broker = Broker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await broker.start()
    try:
        await stop.wait()
    finally:
        await broker.shutdown()


def main() -> int:
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        print("usage: python -m gateway.embedded_broker PORT", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    try:
        import amqtt  # noqa: F401
    except ImportError:
        print("amqtt is not installed: pip install 'iotgw[embedded-broker]'", file=sys.stderr)
        return 1
    asyncio.run(serve(int(sys.argv[1])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

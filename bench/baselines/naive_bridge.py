"""The naive reference bridge: aiohttp + aiomqtt, one send_str per message per client, no batching.

What a first version usually looks like: every MQTT message becomes one readings frame that is
awaited on each client in turn, so one slow client stalls everyone. Commands are passed through so
the command scenario has a baseline too. With --retained (S6, cold start) it also keeps every
device's latest meta (json.loads) and status in a dict and sends them all as a snapshot on
subscribe. Usage: python -m bench.baselines.naive_bridge --broker-port 1883 --port 8081
--prefix iotgw [--retained]
"""

import argparse
import asyncio
import itertools
import json
import socket
import time

import aiomqtt
from aiohttp import WSMsgType, web

CLIENTS = web.AppKey("clients", set[web.WebSocketResponse])
DEVICES: dict[str, dict] = {}  # --retained: device -> {"id", "status", "meta"}
MQTT = web.AppKey("mqtt", aiomqtt.Client)
PENDING: dict[str, asyncio.Future] = {}
TASKS: set[asyncio.Task] = set()
ids, seqs = itertools.count(1), itertools.count(1)


async def ws_handler(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    await ws.send_str(json.dumps({"type": "hello", "protocol": 1, "server": "naive"}))
    async for msg in ws:
        req = json.loads(msg.data) if msg.type == WSMsgType.TEXT else {}
        if req.get("type") == "subscribe":
            request.app[CLIENTS].add(ws)
            await ws.send_str(json.dumps({"type": "subscribed", "id": req["id"]}))
            if ARGS.retained:
                snapshot = {"type": "snapshot", "devices": list(DEVICES.values())}
                await ws.send_str(json.dumps(snapshot))
        elif req.get("type") == "command":
            task = asyncio.create_task(command(request.app[MQTT], ws, req))
            TASKS.add(task)
            task.add_done_callback(TASKS.discard)
    request.app[CLIENTS].discard(ws)
    return ws


async def command(client: aiomqtt.Client, ws: web.WebSocketResponse, req: dict) -> None:
    cid, started = f"c-{next(ids)}", time.perf_counter()
    PENDING[cid] = future = asyncio.get_running_loop().create_future()
    topic = f"{ARGS.prefix}/{req['device']}/cmd/{req['command']}"
    await client.publish(topic, json.dumps({"id": cid, "params": req["params"]}), qos=1)
    result = await asyncio.wait_for(future, 5)
    rtt_ms = (time.perf_counter() - started) * 1000
    await ws.send_str(
        json.dumps(
            {
                "type": "command_result",
                "id": req["id"],
                "rtt_ms": rtt_ms,
                "status": result.get("status"),
                "result": result.get("result"),
            }
        )
    )


async def bridge(app: web.Application, subscribed: asyncio.Event) -> None:
    nodelay = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    async with aiomqtt.Client("127.0.0.1", ARGS.broker_port, socket_options=[nodelay]) as client:
        app[MQTT] = client
        leaves = ["telemetry", "result"] + (["status", "meta"] if ARGS.retained else [])
        await client.subscribe([(f"{ARGS.prefix}/+/{leaf}", 1) for leaf in leaves])
        subscribed.set()
        async for message in client.messages:
            device, leaf = message.topic.value.split("/")[1:3]
            if leaf in ("status", "meta"):
                entry = DEVICES.setdefault(device, {"id": device, "status": None, "meta": None})
                text = message.payload.decode()
                entry[leaf] = json.loads(text) if leaf == "meta" else text
                continue
            body = json.loads(message.payload)
            if leaf == "result":
                PENDING.pop(body["id"]).set_result(body)
                continue
            now = time.time()
            frame = json.dumps(
                {
                    "type": "readings",
                    "seq": next(seqs),
                    "data": [[device, k, now, v] for k, v in body.items()],
                }
            )
            clients: set[web.WebSocketResponse] = app[CLIENTS]
            for ws in list(clients):
                try:
                    await ws.send_str(frame)
                except ConnectionError:
                    app[CLIENTS].discard(ws)


async def lifecycle(app: web.Application):
    subscribed = asyncio.Event()
    task = asyncio.create_task(bridge(app, subscribed))
    await subscribed.wait()
    yield
    task.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    for flag in ("--broker-port", "--port"):
        parser.add_argument(flag, type=int, required=True)
    parser.add_argument("--prefix", default="iotgw")
    parser.add_argument("--retained", action="store_true", help="keep meta/status, snapshot them")
    ARGS = parser.parse_args()
    app = web.Application()
    app[CLIENTS] = set()
    app.router.add_get("/ws", ws_handler)
    app.cleanup_ctx.append(lifecycle)
    web.run_app(app, host="127.0.0.1", port=ARGS.port, print=None)

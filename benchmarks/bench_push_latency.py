"""Confirm -> push latency across processes: desktops wait on gateway A, the phone confirms on
gateway B (both over one Redis), at a steady rate of confirms per second.

    python benchmarks/bench_push_latency.py [--rate 200] [--seconds 10]

For each login: the time from the phone's confirm *response* (B answered 204) to the desktop's
`confirmed` message on A (as the issue defines it; negative when the push is faster than the
response), and from the confirm *request* to the push. Floor, in the same run: a Redis PUBLISH ->
subscriber round trip from this client, the least any cross-process push can cost. Goal: p99 <= 25 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import RawHttp, add_person, gateways, percentile, raise_open_files, redis_server

GOAL_P99_MS = 25.0


async def prepare(
    a: httpx.AsyncClient, b: httpx.AsyncClient, phone: str, count: int
) -> list[tuple[str, ClientConnection]]:
    """`count` QR codes minted on A, waited on at A, scanned on B: ready to confirm."""
    gate = asyncio.Semaphore(100)

    async def one() -> tuple[str, ClientConnection]:
        async with gate:
            minted = (await a.post("/v1/qr", json={"client_id": "withholding-desktop"})).json()
            ws = await connect(minted["events_url"], ping_interval=None)
            await ws.send(json.dumps({"type": "hello", "waiter_token": minted["waiter_token"]}))
            await ws.recv()
            scanned = await b.post(f"/v1/qr/{minted['qr_id']}/scan", headers={"Authorization": f"Bearer {phone}"})
            assert scanned.status_code == 200, scanned.text
            await ws.recv()  # `scanned`
            return minted["qr_id"], ws

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def run(rate: int, seconds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, redis_server() as redis_url:
        floor = await pubsub_floor(redis_url)
        with gateways(Path(tmp), redis_url, 2) as (gw_a, gw_b):
            person = add_person(Path(tmp), redis_url)
            limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
            async with (
                httpx.AsyncClient(base_url=gw_a.base_url, limits=limits, timeout=30) as a,
                httpx.AsyncClient(base_url=gw_b.base_url, limits=limits, timeout=30) as b,
            ):
                login = await b.post(
                    "/v1/login/password",
                    json={"identifier": person["phone"], "password": person["password"], "client_id": "mobile-app"},
                )
                phone = login.json()["access_token"]
                ready = await prepare(a, b, phone, rate * seconds)
                from_response: list[float] = []
                from_request: list[float] = []

                async def wait_push(ws: ClientConnection) -> tuple[float, str | bytes]:
                    message = await ws.recv()
                    return time.perf_counter(), message

                pool: asyncio.Queue[RawHttp] = asyncio.Queue()
                for _ in range(64):
                    pool.put_nowait(RawHttp(gw_b.base_url))

                async def confirm(qr_id: str, ws: ClientConnection) -> None:
                    pushed = asyncio.create_task(wait_push(ws))
                    http = await pool.get()
                    sent = time.perf_counter()
                    status, body = await http.request(
                        "POST", f"/v1/qr/{qr_id}/confirm", headers={"Authorization": f"Bearer {phone}"}
                    )
                    answered = time.perf_counter()
                    pool.put_nowait(http)
                    assert status == 204, body
                    received, raw = await pushed
                    message = json.loads(raw)
                    assert message["type"] == "confirmed"
                    from_response.append((received - answered) * 1000)
                    from_request.append((received - sent) * 1000)
                    await ws.close()

                tasks = []
                started = time.perf_counter()
                for index, (qr_id, ws) in enumerate(ready):
                    delay = started + index / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    tasks.append(asyncio.create_task(confirm(qr_id, ws)))
                await asyncio.gather(*tasks)
                while not pool.empty():
                    await pool.get_nowait().close()
                achieved = len(ready) / (time.perf_counter() - started)
    p50, p99 = percentile(from_response, 50), percentile(from_response, 99)
    print(f"{len(from_response)} confirms at {achieved:.0f}/s (target {rate}/s), desktop on A, phone on B")
    print(f"confirm response -> push: p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {max(from_response):.2f} ms")
    print(
        f"confirm request  -> push: p50 {percentile(from_request, 50):.2f} ms, "
        f"p99 {percentile(from_request, 99):.2f} ms"
    )
    print(f"floor (Redis PUBLISH -> subscriber, this client): p50 {floor[0]:.2f} ms, p99 {floor[1]:.2f} ms")
    print(f"p99 / goal {GOAL_P99_MS:.0f} ms = {p99 / GOAL_P99_MS:.2f}: {'met' if p99 <= GOAL_P99_MS else 'NOT met'}")


async def pubsub_floor(redis_url: str, samples: int = 500) -> tuple[float, float]:
    client = aioredis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    await pubsub.subscribe("floor")
    await pubsub.get_message(timeout=1)
    timings = []
    for _ in range(samples):
        sent = time.perf_counter()
        await client.publish("floor", "x")
        while (await pubsub.get_message(timeout=1)) is None:
            pass
        timings.append((time.perf_counter() - sent) * 1000)
    await pubsub.aclose()
    await client.aclose()
    return percentile(timings, 50), percentile(timings, 99)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=200, help="confirms per second")
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    raise_open_files()
    asyncio.run(run(args.rate, args.seconds))


if __name__ == "__main__":
    main()

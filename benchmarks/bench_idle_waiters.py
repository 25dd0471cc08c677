"""Memory per waiting desktop: N WebSockets (after hello) on one gateway process over Redis, and in
the same run the same figure for a bare Starlette echo WebSocket app (the floor).

    python benchmarks/bench_idle_waiters.py [--connections 10000]

RSS is read from /proc before and after the sockets open; per-connection figure = growth / N.
Goal: at most 1.4x the floor.
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
from websockets.asyncio.client import ClientConnection, connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import bare_app, gateways, raise_open_files, redis_server, rss_kib

GOAL_RATIO = 1.4


async def open_all(urls: list[str], hellos: list[str], parallel: int = 200) -> list[ClientConnection]:
    gate = asyncio.Semaphore(parallel)
    sockets: list[ClientConnection] = []

    async def one(url: str, hello: str) -> None:
        async with gate:
            ws = await connect(url, open_timeout=60, ping_interval=None, max_size=2**16)
            await ws.send(hello)
            await ws.recv()  # the gateway's `state`, or the echo
            sockets.append(ws)

    await asyncio.gather(*(one(u, h) for u, h in zip(urls, hellos, strict=True)))
    return sockets


async def settle(pid: int) -> int:
    """RSS once it stops moving (allocator and GC settle after a burst)."""
    last = rss_kib(pid)
    for _ in range(20):
        await asyncio.sleep(0.5)
        now = rss_kib(pid)
        if abs(now - last) < 256:
            return now
        last = now
    return last


async def measure_gateway(n: int) -> float:
    with (
        tempfile.TemporaryDirectory() as tmp,
        redis_server() as redis_url,
        gateways(Path(tmp), redis_url, 1) as [gateway],
    ):
        async with httpx.AsyncClient(base_url=gateway.base_url, timeout=30) as http:
            minted = []
            for start in range(0, n, 500):
                batch = await asyncio.gather(
                    *(
                        http.post("/v1/qr", json={"client_id": "withholding-desktop"})
                        for _ in range(min(500, n - start))
                    )
                )
                minted += [r.json() for r in batch]
        before = await settle(gateway.proc.pid)
        t0 = time.perf_counter()
        sockets = await open_all(
            [m["events_url"] for m in minted],
            [json.dumps({"type": "hello", "waiter_token": m["waiter_token"]}) for m in minted],
        )
        opened = time.perf_counter() - t0
        after = await settle(gateway.proc.pid)
        print(f"gateway: {len(sockets)} waiting WebSockets opened in {opened:.1f} s; RSS {before} -> {after} KiB")
        await asyncio.gather(*(ws.close() for ws in sockets))
        return (after - before) / len(sockets)


async def measure_floor(n: int) -> float:
    with bare_app("echo") as (base_url, pid):
        url = base_url.replace("http", "ws") + "/v1/qr/x/events"
        before = await settle(pid)
        hello = json.dumps({"type": "hello", "waiter_token": "x" * 43})
        sockets = await open_all([url] * n, [hello] * n)
        after = await settle(pid)
        print(f"bare echo app: {len(sockets)} WebSockets; RSS {before} -> {after} KiB")
        await asyncio.gather(*(ws.close() for ws in sockets))
        return (after - before) / len(sockets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=10_000)
    args = parser.parse_args()
    limit = raise_open_files()
    if args.connections + 200 > limit:
        raise SystemExit(f"open-files limit {limit} is too low for {args.connections} connections")
    floor = asyncio.run(measure_floor(args.connections))
    ours = asyncio.run(measure_gateway(args.connections))
    ratio = ours / floor
    print(f"\nper waiting desktop: gateway {ours:.1f} KiB, bare floor {floor:.1f} KiB, ratio {ratio:.2f}x")
    print(f"goal <= {GOAL_RATIO}x: {'met' if ratio <= GOAL_RATIO else 'NOT met'}")


if __name__ == "__main__":
    main()

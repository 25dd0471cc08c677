"""Full QR logins per second on one gateway process over Redis, and the same request mix against a
bare Starlette app (the floor) in the same run.

    python benchmarks/bench_full_flow.py [--seconds 15] [--concurrency 32]
    python benchmarks/bench_full_flow.py --instructions 300   # count instructions instead (valgrind)

One login: mint (POST /v1/qr) -> WebSocket + hello -> `state` -> the phone scans (POST .../scan) ->
`scanned` -> the phone confirms (POST .../confirm) -> `confirmed` with tokens -> close. No images.
`--concurrency` desktops run logins back to back. Goals: >= 500 logins/s and >= 40% of the floor.
Client and server share this machine's cores; the client is the same for both, so the ratio is fair.

`--instructions N` runs N logins against each server under valgrind's callgrind and prints the
instructions each spent per login: slow (valgrind), but the same figure on a busy machine as on a
quiet one, so a change's effect shows even where logins/s moves by 10 % from run to run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (
    InstructionCounter,
    RawHttp,
    add_person,
    bare_app,
    gateways,
    percentile,
    raise_open_files,
    redis_server,
)

GOAL_LOGINS = 500.0
GOAL_RATIO = 0.40


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(
    base_url: str, phone: str, seconds: float, concurrency: int, logins: int | None = None
) -> tuple[int, list[float]]:
    """Logins back to back from `concurrency` desktops for `seconds`, or until `logins` have started."""
    headers = {"Authorization": f"Bearer {phone}"}
    ws_base = base_url.replace("http", "ws", 1)
    durations: list[float] = []
    mint_body = json.dumps({"client_id": "withholding-desktop"}).encode()

    async def one_login(http: RawHttp) -> None:
        started = time.perf_counter()
        status, body = await http.request("POST", "/v1/qr", body=mint_body, content_type="application/json")
        assert status == 201, body
        minted = json.loads(body)
        async with connect(f"{ws_base}/v1/qr/{minted['qr_id']}/events", ping_interval=None, compression=None) as ws:
            await ws.send(json.dumps({"type": "hello", "waiter_token": minted["waiter_token"]}))
            assert json.loads(await ws.recv())["type"] == "state"
            status, body = await http.request("POST", f"/v1/qr/{minted['qr_id']}/scan", headers=headers)
            assert status == 200, body
            assert json.loads(await ws.recv())["type"] == "scanned"
            status, body = await http.request("POST", f"/v1/qr/{minted['qr_id']}/confirm", headers=headers)
            assert status == 204, body
            assert json.loads(await ws.recv())["type"] == "confirmed"
        durations.append(time.perf_counter() - started)

    deadline = time.perf_counter() + seconds
    to_start = [logins if logins is not None else -1]

    async def desktop() -> int:
        http = RawHttp(base_url)
        done = 0
        try:
            while time.perf_counter() < deadline and to_start[0] != 0:
                to_start[0] -= 1
                await one_login(http)
                done += 1
        finally:
            await http.close()
        return done

    counts = await asyncio.gather(*(desktop() for _ in range(concurrency)))
    return sum(counts), durations


async def phone_token(workdir: Path, redis_url: str, base_url: str) -> str:
    """The scanning phone's access token (a person added to the database, logged in by password)."""
    person = add_person(workdir, redis_url)
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        login = await http.post(
            "/v1/login/password",
            json={"identifier": person["phone"], "password": person["password"], "client_id": "mobile-app"},
        )
        return str(login.json()["access_token"])


async def run(seconds: float, concurrency: int) -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        redis_server() as redis_url,
        gateways(Path(tmp), redis_url, 1) as [gateway],
    ):
        phone = await phone_token(Path(tmp), redis_url, gateway.base_url)
        await drive(gateway.base_url, phone, 2, concurrency)  # warm up
        cpu0 = cpu_seconds(gateway.proc.pid)
        started = time.perf_counter()
        ours, durations = await drive(gateway.base_url, phone, seconds, concurrency)
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(gateway.proc.pid) - cpu0
    with bare_app("flow") as (floor_url, floor_pid):
        await drive(floor_url, "x", 2, concurrency)
        floor_cpu0 = cpu_seconds(floor_pid)
        floor_started = time.perf_counter()
        floor, _ = await drive(floor_url, "x", seconds, concurrency)
        floor_elapsed = time.perf_counter() - floor_started
        floor_cpu = cpu_seconds(floor_pid) - floor_cpu0
    rate, floor_rate = ours / elapsed, floor / floor_elapsed
    print(f"gateway over Redis: {ours} logins in {elapsed:.1f} s = {rate:.0f} logins/s "
          f"(login p50 {percentile(durations, 50) * 1000:.1f} ms, p99 {percentile(durations, 99) * 1000:.1f} ms; "
          f"server CPU {cpu / ours * 1000:.2f} ms per login)")  # fmt: skip
    print(f"bare Starlette floor: {floor} logins in {floor_elapsed:.1f} s = {floor_rate:.0f} logins/s "
          f"(server CPU {floor_cpu / floor * 1000:.2f} ms per login)")  # fmt: skip
    print(f"goal >= {GOAL_LOGINS:.0f} logins/s: {rate / GOAL_LOGINS:.2f} of it; "
          f"ratio to the floor {rate / floor_rate:.2f} (goal >= {GOAL_RATIO})")  # fmt: skip
    # The client shares the machine, so it can hold the floor back: CPU per login is the stricter view.
    print(f"server CPU per login, floor / gateway: {floor_cpu / floor / (cpu / ours):.2f}")


async def count_instructions(logins: int, concurrency: int) -> None:
    forever = 1e9  # `drive` stops after `logins`
    with tempfile.TemporaryDirectory() as tmp, redis_server() as redis_url:
        counter = InstructionCounter(Path(tmp), "gateway")
        with gateways(Path(tmp), redis_url, 1, wrapper=counter.wrapper) as [gateway]:
            phone = await phone_token(Path(tmp), redis_url, gateway.base_url)
            await drive(gateway.base_url, phone, forever, concurrency, logins=max(20, logins // 5))  # warm up
            counter.start(gateway.proc.pid)
            ours, _ = await drive(gateway.base_url, phone, forever, concurrency, logins=logins)
            instructions = counter.stop(gateway.proc.pid)
        floor_counter = InstructionCounter(Path(tmp), "floor")
        with bare_app("flow", floor_counter.wrapper) as (floor_url, floor_pid):
            await drive(floor_url, "x", forever, concurrency, logins=max(20, logins // 5))
            floor_counter.start(floor_pid)
            floor, _ = await drive(floor_url, "x", forever, concurrency, logins=logins)
            floor_instructions = floor_counter.stop(floor_pid)
    per_login, floor_per_login = instructions / ours, floor_instructions / floor
    print(f"gateway over Redis: {per_login / 1e6:.3f} M instructions per login ({ours} logins under callgrind)")
    print(f"bare Starlette floor: {floor_per_login / 1e6:.3f} M instructions per login ({floor} logins)")
    print(f"instructions per login, floor / gateway: {floor_per_login / per_login:.2f} "
          f"(the goal, >= {GOAL_RATIO}, is set in logins/s)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--instructions", type=int, metavar="LOGINS", help="count instructions over LOGINS logins")
    args = parser.parse_args()
    raise_open_files()
    if args.instructions:
        asyncio.run(count_instructions(args.instructions, min(args.concurrency, 8)))
    else:
        asyncio.run(run(args.seconds, args.concurrency))


if __name__ == "__main__":
    main()

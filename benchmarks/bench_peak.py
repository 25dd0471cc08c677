"""Soak and peak: the shape of a filing-deadline morning on ONE gateway process over Redis.

    python benchmarks/bench_peak.py                  # 10 minutes (--seconds 600), full scale
    python benchmarks/bench_peak.py --seconds 60     # a quick look
    python benchmarks/bench_peak.py --scale 0.1      # every rate and count a tenth

At the same time, for `--seconds` (the first `--warmup` seconds are warm-up: their operations count
for errors but not for rates or latencies, and memory is judged from their end):
- 5,000 desktops waiting: each has minted a QR code and waits on its WebSocket (after `hello`); when
  the code expires (`expired`) it mints a new one and waits again. Their first codes are given up at
  random times within one code lifetime, so that the re-mints spread out instead of coming in one wave;
- 150 full QR logins/s: mint -> WebSocket + hello -> `state` -> the phone scans -> `scanned` -> the
  phone confirms -> `confirmed` with the desktop's tokens. Push latency: from the phone's confirm
  response to the desktop's `confirmed` (negative when the push beats the response), and from the
  confirm request;
- 20 password logins/s at the production argon2id cost (the Settings defaults, m=19 MiB, t=2);
- 300 refresh-token grants/s, each on a refresh chain of its own (one request in flight per chain);
- 50 unit verifications/s: `POST /units/v1/units/{tin}/verify` with the declaration password (argon2id,
  the same cost) through the units service mounted in the gateway;
- 100 slow clients (deliberately bad): each sends a request head one byte a `--trickle-interval`
  seconds; a server that closes such a connection is doing its job, so closures are counted as
  expected and the client reconnects.

Open loop: operations are started on a clock (the i-th at start + i/rate), not after the previous one
ends; latency counts from when the operation was due. An operation whose subjects (people, units,
refresh chains, at most a few seconds' worth) are all busy, or that has `--max-in-flight-seconds` worth
in flight, is not started and counted as such: that operation fell behind. The load generator runs in
`--generators` processes (QR logins, password logins and unit verifications in one; the waiting
desktops, refreshes and slow clients in the other); each reports how late it started operations and
how much CPU it used, so a generator that cannot keep up shows. The gateway's RSS, open file
descriptors and CPU are read from /proc every second. Pass/fail lines against the goals end the report:
no errors (the slow clients apart), every rate reached, push p99 <= 25 ms, RSS growth after warm-up
<= 10 %.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import random
import resource
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ROOT, RawHttp, gateways, percentile, raise_open_files, redis_server, rss_kib

GOAL_PUSH_P99_MS = 25.0
GOAL_RSS_GROWTH = 0.10
KEEP_UP = 0.95  # an operation keeps up when it achieves this share of its target rate
OP_TIMEOUT = 30.0  # an operation not finished after this long is an error
DECLARATION_PASSWORD = "Decl-Peak-01"
MINT_BODY = json.dumps({"client_id": "withholding-desktop"}).encode()
FORM = "application/x-www-form-urlencoded"

OPERATIONS = ("qr_login", "password_login", "refresh", "unit_verify")
GENERATOR_ROLES = {
    1: [["qr_login", "password_login", "unit_verify", "desktops", "refresh", "slow"]],
    2: [["qr_login", "password_login", "unit_verify"], ["desktops", "refresh", "slow"]],
}


# --- the load generator (runs in its own processes) ------------------------------------------------


class Failure(Exception):
    """An answer the flow did not expect."""


def expect(status: int, wanted: int, body: bytes, what: str) -> None:
    if status != wanted:
        code = ""
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            parsed = json.loads(body)
            code = str(parsed.get("code") or parsed.get("error") or "")
        raise Failure(f"{what} -> {status} {code}".rstrip())


def reason(exc: BaseException) -> str:
    from websockets.exceptions import ConnectionClosed

    if isinstance(exc, Failure):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return f"no answer within {OP_TIMEOUT:.0f} s"
    if isinstance(exc, ConnectionClosed):
        return f"WebSocket closed ({exc.rcvd.code if exc.rcvd else 'no close frame'})"
    return type(exc).__name__


class Pool:
    """Keep-alive HTTP connections (RawHttp): an idle one is reused (the most recent first), else a new
    one is opened. As HTTP clients do, a connection the server has closed while idle is dropped before
    use, and a request that finds a reused connection closed before any answer came is sent once more
    on a new one (the server closes idle keep-alive connections; the close can cross the request)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.idle: list[RawHttp] = []

    def take(self) -> RawHttp | None:
        while self.idle:
            candidate = self.idle.pop()
            if candidate.reader is None or not candidate.reader.at_eof():
                return candidate
            if candidate.writer is not None:
                candidate.writer.close()
        return None

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        content_type: str = "",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        http = self.take()
        reused = http is not None
        while True:
            http = http or RawHttp(self.base_url)
            try:
                status, found, payload = await http.exchange(
                    method, path, body=body, content_type=content_type, headers=headers
                )
            except (ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError) as exc:
                await http.close()
                answered = isinstance(exc, asyncio.IncompleteReadError) and bool(exc.partial)
                if not reused or answered:
                    raise
                http, reused = None, False
                continue
            except BaseException:
                await http.close()
                raise
            if found.get("connection", "").lower() == "close":
                await http.close()
            else:
                self.idle.append(http)
            return status, payload

    async def close(self) -> None:
        for http in self.idle:
            await http.close()


@dataclass
class Op:
    """One kind of operation: what was due, started, succeeded (in the measured window) and failed."""

    name: str
    rate: float
    measured_from: float  # perf_counter time when warm-up ends
    due: int = 0  # due in the measured window
    started: int = 0
    ok: int = 0  # succeeded, due in the measured window
    ok_total: int = 0  # succeeded, warm-up included
    not_started: int = 0  # due in the measured window but no free subject / too many in flight
    in_flight: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # the whole run, warm-up included
    latencies: list[float] = field(default_factory=list)  # seconds from due to done, measured window
    lags: list[float] = field(default_factory=list)  # seconds from due to started, measured window

    async def run(self, work: Callable[[], Awaitable[None]], due: float) -> None:
        measured = due >= self.measured_from
        self.in_flight += 1
        if measured:
            self.lags.append(time.perf_counter() - due)
            self.started += 1
        try:
            await asyncio.wait_for(work(), OP_TIMEOUT)
        except Exception as exc:
            self.errors[reason(exc)] += 1
        else:
            self.ok_total += 1
            if measured:
                self.ok += 1
                self.latencies.append(time.perf_counter() - due)
        finally:
            self.in_flight -= 1

    def result(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "due": self.due,
            "started": self.started,
            "ok": self.ok,
            "ok_total": self.ok_total,
            "not_started": self.not_started,
            "errors": dict(self.errors),
            "latencies": self.latencies,
            "lags": self.lags,
        }


class Holder:
    """A session's current access token, kept fresh by a background refresh (the run outlasts the
    access tokens' 10 minutes)."""

    def __init__(self, tokens: dict[str, str], client_id: str) -> None:
        self.access = tokens["access_token"]
        self.refresh = tokens["refresh_token"]
        self.client_id = client_id

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access}"}

    async def keep_fresh(self, pool: Pool, stop: asyncio.Event, errors: Counter[str]) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 120)
            if stop.is_set():
                return
            form = urlencode(
                {"grant_type": "refresh_token", "refresh_token": self.refresh, "client_id": self.client_id}
            )
            try:
                status, body = await pool.request("POST", "/v1/token", body=form.encode(), content_type=FORM)
                expect(status, 200, body, "background refresh")
            except Exception as exc:
                errors[reason(exc)] += 1
                continue
            answer = json.loads(body)
            self.access, self.refresh = answer["access_token"], answer["refresh_token"]


async def schedule(
    op: Op, start: float, end: float, stop: asyncio.Event, work: Callable[[], Callable[[], Awaitable[None]] | None]
) -> None:
    """Start `op` on the clock from `start` to `end`. `work()` returns the operation, or None when it
    cannot be started (its subjects are all busy)."""
    tasks: set[asyncio.Task[None]] = set()
    index = 0
    while not stop.is_set():
        due = start + index / op.rate
        if due >= end:
            break
        index += 1
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if due >= op.measured_from:
            op.due += 1
        job = work()
        if job is None:
            if due >= op.measured_from:
                op.not_started += 1
            continue
        task = asyncio.create_task(op.run(job, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks)  # each ends within OP_TIMEOUT


class Generator:
    def __init__(self, spec: dict[str, Any], start: float) -> None:
        self.spec = spec
        self.base_url: str = spec["base_url"]
        self.ws_base = self.base_url.replace("http", "ws", 1)
        self.start = start
        self.end = start + spec["seconds"]
        self.measured_from = start + spec["warmup"]
        self.pool = Pool(self.base_url)
        self.stop = asyncio.Event()
        self.background_errors: Counter[str] = Counter()
        self.ops: dict[str, Op] = {}
        self.push_from_response: list[float] = []
        self.push_from_request: list[float] = []
        self.max_in_flight = spec["max_in_flight_seconds"]

    def op(self, name: str) -> Op:
        rate = self.spec["rates"][name]
        self.ops[name] = Op(name, rate, self.measured_from)
        return self.ops[name]

    # QR logins ---------------------------------------------------------------------------------

    async def qr_login(self, phone: Holder) -> None:
        from websockets.asyncio.client import connect

        status, body = await self.pool.request("POST", "/v1/qr", body=MINT_BODY, content_type="application/json")
        expect(status, 201, body, "mint")
        minted = json.loads(body)
        url = f"{self.ws_base}/v1/qr/{minted['qr_id']}/events"
        async with connect(url, ping_interval=None, compression=None, open_timeout=OP_TIMEOUT) as ws:
            await ws.send(json.dumps({"type": "hello", "waiter_token": minted["waiter_token"]}))
            if json.loads(await ws.recv())["type"] != "state":
                raise Failure("the first message was not `state`")
            status, body = await self.pool.request("POST", f"/v1/qr/{minted['qr_id']}/scan", headers=phone.headers)
            expect(status, 200, body, "scan")
            if json.loads(await ws.recv())["type"] != "scanned":
                raise Failure("no `scanned` after the scan")

            async def pushed() -> tuple[float, str | bytes]:
                message = await ws.recv()
                return time.perf_counter(), message

            waiting = asyncio.create_task(pushed())
            try:
                sent = time.perf_counter()
                status, body = await self.pool.request(
                    "POST", f"/v1/qr/{minted['qr_id']}/confirm", headers=phone.headers
                )
                answered = time.perf_counter()
                expect(status, 204, body, "confirm")
                received, raw = await waiting
            finally:
                waiting.cancel()
            message = json.loads(raw)
            if message["type"] != "confirmed" or "access_token" not in message.get("token", {}):
                raise Failure(f"the desktop got {message['type']!r} instead of `confirmed` with its tokens")
        if sent >= self.measured_from:
            self.push_from_response.append(received - answered)
            self.push_from_request.append(received - sent)

    async def run_qr_logins(self) -> None:
        op = self.op("qr_login")
        phone = Holder(self.spec["phone"], "mobile-app")
        cap = max(4, math.ceil(op.rate * self.max_in_flight))
        fresh = asyncio.create_task(phone.keep_fresh(self.pool, self.stop, self.background_errors))

        def work() -> Callable[[], Awaitable[None]] | None:
            return None if op.in_flight >= cap else lambda: self.qr_login(phone)

        await schedule(op, self.start, self.end, self.stop, work)
        await fresh

    # password logins, unit verifications, refreshes: one request, a subject that is free -------------

    async def run_password_logins(self) -> None:
        op = self.op("password_login")
        free: deque[dict[str, str]] = deque(self.spec["people"])

        async def login(person: dict[str, str]) -> None:
            try:
                body = {"identifier": person["phone"], "password": person["password"], "client_id": "web"}
                status, answer = await self.pool.request(
                    "POST", "/v1/login/password", body=json.dumps(body).encode(), content_type="application/json"
                )
                expect(status, 200, answer, "password login")
                if "access_token" not in json.loads(answer):
                    raise Failure("password login -> 200 without an access token")
            finally:
                free.append(person)

        def work() -> Callable[[], Awaitable[None]] | None:
            if not free:
                return None
            person = free.popleft()
            return lambda: login(person)

        await schedule(op, self.start, self.end, self.stop, work)

    async def run_unit_verifications(self) -> None:
        op = self.op("unit_verify")
        member = Holder(self.spec["member"], "web")
        free: deque[str] = deque(self.spec["units"])
        body = json.dumps({"declaration_password": DECLARATION_PASSWORD}).encode()
        fresh = asyncio.create_task(member.keep_fresh(self.pool, self.stop, self.background_errors))

        async def verify(tin: str) -> None:
            try:
                status, answer = await self.pool.request(
                    "POST", f"/units/v1/units/{tin}/verify", body=body, content_type="application/json",
                    headers=member.headers,
                )  # fmt: skip
                expect(status, 200, answer, "unit verify")
                if "unit_token" not in json.loads(answer):
                    raise Failure("unit verify -> 200 without a unit token")
            finally:
                free.append(tin)

        def work() -> Callable[[], Awaitable[None]] | None:
            if not free:
                return None
            tin = free.popleft()
            return lambda: verify(tin)

        await schedule(op, self.start, self.end, self.stop, work)
        await fresh

    async def run_refreshes(self) -> None:
        op = self.op("refresh")
        free: deque[str] = deque(self.spec["chains"])

        async def refresh(token: str) -> None:
            form = urlencode(
                {"grant_type": "refresh_token", "refresh_token": token, "client_id": "withholding-desktop"}
            )
            status, body = await self.pool.request("POST", "/v1/token", body=form.encode(), content_type=FORM)
            expect(status, 200, body, "refresh")
            free.append(json.loads(body)["refresh_token"])  # a failed chain is not used again

        def work() -> Callable[[], Awaitable[None]] | None:
            if not free:
                return None
            token = free.popleft()
            return lambda: refresh(token)

        await schedule(op, self.start, self.end, self.stop, work)

    # waiting desktops ------------------------------------------------------------------------------

    async def open_desktops(self) -> None:
        """Before the clock starts: every desktop mints and waits (200 at a time)."""
        from websockets.asyncio.client import ClientConnection

        self.remint = Op("desktop_remint", 0.0, self.measured_from)
        self.desktops_open = 0
        self.sockets: set[ClientConnection] = set()
        self.desktop_samples: list[tuple[float, int]] = []
        gate = asyncio.Semaphore(200)
        opened: list[tuple[ClientConnection, float]] = []

        async def one() -> None:
            async with gate:
                for _ in range(3):
                    try:
                        opened.append(await self.wait_on_new_code())
                        return
                    except Exception as exc:  # counted, and tried again
                        self.remint.errors[f"while the desktops opened: {reason(exc)}"] += 1
                        await asyncio.sleep(1)

        await asyncio.gather(*(one() for _ in range(self.spec["desktops"])))
        self.desktop_tasks = [asyncio.create_task(self.desktop(ws, expires_in)) for ws, expires_in in opened]

    async def wait_on_new_code(self) -> tuple[Any, float]:
        from websockets.asyncio.client import connect

        status, body = await self.pool.request("POST", "/v1/qr", body=MINT_BODY, content_type="application/json")
        expect(status, 201, body, "desktop mint")
        minted = json.loads(body)
        ws = await connect(
            f"{self.ws_base}/v1/qr/{minted['qr_id']}/events", ping_interval=None, compression=None,
            open_timeout=OP_TIMEOUT, max_size=2**16,
        )  # fmt: skip
        try:
            await ws.send(json.dumps({"type": "hello", "waiter_token": minted["waiter_token"]}))
            message = json.loads(await ws.recv())
            if message["type"] != "state" or message["state"] != "pending":
                raise Failure(f"a new code's first message was {message}")
        except BaseException:
            await ws.close()
            raise
        self.desktops_open += 1
        self.sockets.add(ws)
        return ws, float(minted["expires_in"])

    async def desktop(self, ws: Any, expires_in: float) -> None:
        """Wait; the first code is given up after a random part of its life, later ones at `expired`."""
        patience, first = random.uniform(0, expires_in), True
        while True:
            try:
                raw = await asyncio.wait_for(ws.recv(), patience)
            except TimeoutError:
                raw = None  # the first code: given up, the person reloaded the page
                if not first:
                    self.remint.errors[f"no `expired` within {patience:.0f} s of the mint"] += 1
            except Exception as exc:
                if not self.stop.is_set():
                    self.remint.errors[reason(exc)] += 1
                raw = None
            self.desktops_open -= 1
            self.sockets.discard(ws)
            await ws.close()
            if raw is not None and json.loads(raw)["type"] != "expired":
                self.remint.errors[f"a waiting desktop got {json.loads(raw)['type']!r}"] += 1
            if self.stop.is_set():
                return
            result: list[tuple[Any, float]] = []

            async def again(result: list[tuple[Any, float]] = result) -> None:
                result.append(await self.wait_on_new_code())

            while not result:
                await self.remint.run(again, time.perf_counter())
                if not result:  # failed: try again after a pause, as a desktop would
                    if self.stop.is_set():
                        return
                    await asyncio.sleep(1)
            ws, expires_in = result[0]
            if self.stop.is_set():
                self.desktops_open -= 1
                self.sockets.discard(ws)
                await ws.close()
                return
            patience, first = expires_in + 30, False  # `expired` comes at expires_in

    async def sample_desktops(self) -> None:
        while not self.stop.is_set():
            self.desktop_samples.append((time.perf_counter() - self.start, self.desktops_open))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 1)

    # slow clients ---------------------------------------------------------------------------------

    async def run_slow_clients(self) -> None:
        self.slow: Counter[str] = Counter()
        self.slow_closed_after: list[float] = []
        host, port = self.base_url.split("://", 1)[1].split(":")
        interval = self.spec["trickle_interval"]

        stopped = asyncio.create_task(self.stop.wait())

        async def client(index: int) -> None:
            head = (
                f"GET /healthz HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: qrgate-bench-slow-client/{index}\r\n"
                "Accept: */*\r\n\r\n"
            ).encode()
            with contextlib.suppress(TimeoutError):  # not in step with one another
                await asyncio.wait_for(asyncio.shield(stopped), random.uniform(0, interval * 10))
            while not self.stop.is_set():
                try:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 10)
                except (OSError, TimeoutError) as exc:
                    self.slow[f"could not connect ({type(exc).__name__})"] += 1
                    await asyncio.sleep(1)
                    continue
                self.slow["connections"] += 1
                opened = time.perf_counter()
                answer = asyncio.create_task(reader.read(65536))
                sent = 0
                try:
                    for byte in head:
                        if answer.done() or self.stop.is_set():
                            break
                        writer.write(bytes([byte]))
                        await writer.drain()
                        sent += 1
                        await asyncio.wait({answer, stopped}, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
                    if sent == len(head) and not self.stop.is_set():
                        await asyncio.wait({answer, stopped}, timeout=OP_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
                    if self.stop.is_set() and not answer.done():
                        continue
                    data = answer.result() if answer.done() else b""
                    if sent == len(head) and data.startswith(b"HTTP/1.1 "):
                        self.slow["answered after the whole head"] += 1
                    elif data.startswith(b"HTTP/1.1 "):
                        self.slow[f"closed by the server with {data[9:12].decode()} (expected)"] += 1
                        self.slow_closed_after.append(time.perf_counter() - opened)
                    elif answer.done():
                        self.slow["closed by the server (expected)"] += 1
                        self.slow_closed_after.append(time.perf_counter() - opened)
                    else:
                        self.slow["no answer to a whole head"] += 1
                except (ConnectionError, OSError):
                    self.slow["closed by the server (expected)"] += 1
                    self.slow_closed_after.append(time.perf_counter() - opened)
                finally:
                    answer.cancel()
                    writer.close()
                    with contextlib.suppress(Exception):
                        await writer.wait_closed()

        await asyncio.gather(*(client(i) for i in range(self.spec["slow_clients"])))
        await stopped

    # the run ---------------------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        roles = self.spec["roles"]
        jobs: list[Awaitable[None]] = []
        if "qr_login" in roles:
            jobs.append(self.run_qr_logins())
        if "password_login" in roles:
            jobs.append(self.run_password_logins())
        if "unit_verify" in roles:
            jobs.append(self.run_unit_verifications())
        if "refresh" in roles:
            jobs.append(self.run_refreshes())
        slow = asyncio.create_task(self.run_slow_clients()) if "slow" in roles else None
        sampler = asyncio.create_task(self.sample_desktops()) if "desktops" in roles else None
        cpu0 = own_cpu_seconds()
        ended = asyncio.get_running_loop().create_future()
        stalls: list[float] = []

        async def watch_loop() -> None:
            """How late a 50 ms sleep wakes up: this generator's event loop, held up by its own work or
            by waiting for a core."""
            while not self.stop.is_set():
                asleep = time.perf_counter()
                await asyncio.sleep(0.05)
                if asleep >= self.measured_from:
                    stalls.append(time.perf_counter() - asleep - 0.05)

        async def clock() -> None:
            await asyncio.sleep(max(0.0, self.end - time.perf_counter()))
            ended.set_result(own_cpu_seconds())
            self.stop.set()
            if "desktops" in roles:  # the waiting desktops go home
                await asyncio.gather(*(ws.close() for ws in list(self.sockets)), return_exceptions=True)

        await asyncio.gather(clock(), watch_loop(), *jobs)
        if slow is not None:
            await slow
        if sampler is not None:
            await sampler
        if "desktops" in roles:
            await asyncio.gather(*self.desktop_tasks)
        await self.pool.close()
        result: dict[str, Any] = {
            "ops": {name: op.result() for name, op in self.ops.items()},
            "push_from_response": self.push_from_response,
            "push_from_request": self.push_from_request,
            "cpu_seconds": ended.result() - cpu0,
            "loop_stall_p99": percentile(stalls, 99) if stalls else 0.0,
            "loop_stall_max": max(stalls, default=0.0),
            "background_errors": dict(self.background_errors),
        }
        if "desktops" in roles:
            result["remint"] = self.remint.result()
            result["desktop_samples"] = self.desktop_samples
        if slow is not None:
            result["slow"] = dict(self.slow)
            result["slow_closed_after"] = self.slow_closed_after
        return result


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def generator_main(spec: dict[str, Any], channel: Connection) -> None:
    """A load-generator process: set up (open the waiting desktops), say ready, wait for the shared
    start time, run, send the results."""
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()

    async def main() -> dict[str, Any]:
        placeholder = Generator(spec, time.perf_counter() + 3600)
        if "desktops" in spec["roles"]:
            await placeholder.open_desktops()
        channel.send("ready")
        start_wall = await asyncio.get_running_loop().run_in_executor(None, channel.recv)
        start = time.perf_counter() + (start_wall - time.time())
        # The clock is now known: move it onto the generator (the desktops are already waiting).
        placeholder.start, placeholder.end = start, start + spec["seconds"]
        placeholder.measured_from = start + spec["warmup"]
        if "desktops" in spec["roles"]:
            placeholder.remint.measured_from = placeholder.measured_from
        return await placeholder.run()

    try:
        channel.send(asyncio.run(main()))
    except BaseException as exc:
        channel.send({"crashed": f"{type(exc).__name__}: {exc}"})
        raise


# --- setting up: people, units, sessions ---------------------------------------------------------


def seed(settings: Any, people: int, units: int) -> tuple[list[dict[str, str]], dict[str, str], list[str]]:
    """`people` for the password logins, one unit member (tax staff of `units` units, each with the
    declaration password), through the same code paths as `qrgate admin person add` / `admin unit`."""
    from stdnum.cn import uscc

    from gateway.cli import add_person_record
    from gateway.units.admin import assign_role, create_unit
    from gateway.units.rules import UnitRole
    from gateway.units.service import UnitsService
    from tests.conftest import new_identity

    async def run() -> tuple[list[dict[str, str]], dict[str, str], list[str]]:
        member = new_identity()
        member_id = await add_person_record(settings, **member)
        crowd = [new_identity() for _ in range(people)]

        async def add_crowd() -> None:
            for person in crowd:
                await add_person_record(settings, **person)

        async def add_units() -> list[str]:
            service = UnitsService.create(settings)
            await service.start()
            tins = []
            try:
                for index in range(units):
                    body = f"91110000{700_000_000 + index:09d}"
                    tin = await create_unit(
                        service, tin=body + str(uscc.calc_check_digit(body)), name=f"高峰测试{index}有限公司",
                        declaration_password=DECLARATION_PASSWORD, actor="bench",
                    )  # fmt: skip
                    await assign_role(service, tin, member_id, UnitRole.TAX_STAFF, actor="bench")
                    tins.append(tin)
            finally:
                await service.close()
            return tins

        _, tins = await asyncio.gather(add_crowd(), add_units())  # two hashes at a time
        return crowd, member, tins

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


async def password_login(base_url: str, person: dict[str, str], client_id: str) -> dict[str, str]:
    http = RawHttp(base_url)
    try:
        body = {"identifier": person["phone"], "password": person["password"], "client_id": client_id}
        status, answer = await http.request(
            "POST", "/v1/login/password", body=json.dumps(body).encode(), content_type="application/json"
        )
        expect(status, 200, answer, "setup login")
        return dict(json.loads(answer))
    finally:
        await http.close()


async def desktop_sessions(base_url: str, phone_token: str, count: int) -> list[str]:
    """`count` desktop sessions made by QR login (no argon2): the refresh chains."""
    from websockets.asyncio.client import connect

    pool, ws_base = Pool(base_url), base_url.replace("http", "ws", 1)
    headers = {"Authorization": f"Bearer {phone_token}"}
    gate = asyncio.Semaphore(16)

    async def one() -> str:
        async with gate:
            status, body = await pool.request("POST", "/v1/qr", body=MINT_BODY, content_type="application/json")
            expect(status, 201, body, "setup mint")
            minted = json.loads(body)
            async with connect(f"{ws_base}/v1/qr/{minted['qr_id']}/events", ping_interval=None) as ws:
                await ws.send(json.dumps({"type": "hello", "waiter_token": minted["waiter_token"]}))
                await ws.recv()
                status, body = await pool.request("POST", f"/v1/qr/{minted['qr_id']}/scan", headers=headers)
                expect(status, 200, body, "setup scan")
                await ws.recv()
                status, body = await pool.request("POST", f"/v1/qr/{minted['qr_id']}/confirm", headers=headers)
                expect(status, 204, body, "setup confirm")
                return str(json.loads(await ws.recv())["token"]["refresh_token"])

    try:
        return list(await asyncio.gather(*(one() for _ in range(count))))
    finally:
        await pool.close()


# --- the conductor -----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def redis_pid(redis_url: str) -> int | None:
    """The private redis-server's process (harness.redis_server starts it with `--port N`)."""
    port = redis_url.rsplit(":", 1)[1].split("/")[0].encode()
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit():
                argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").split()
                # redis-server renames itself "redis-server 127.0.0.1:PORT"
                if argv and argv[0].endswith(b"redis-server") and any(a.endswith(b":" + port) for a in argv):
                    return int(entry.name)
    return None


def log_summary(text: str, lines: int = 8) -> str:
    """The gateway's log messages (JSON lines), each once with how often it came, tracebacks left out."""
    seen: Counter[str] = Counter()
    for line in text.splitlines():
        try:
            message = str(json.loads(line).get("msg", line))
        except ValueError:
            message = line
        seen[message.strip()[:200]] += 1
    return "\n".join(f"  {count} x {message}" for message, count in seen.most_common(lines)) or "  (none)"


def probe_health(base_url: str) -> float | None:
    """Seconds `GET /healthz` took on a new connection (None: no answer within 5 s): how promptly the
    gateway's event loop gets round to a newcomer. (http.client: httpx would spend more than that.)"""
    import http.client

    host, port = base_url.split("://", 1)[1].split(":")
    began = time.perf_counter()
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        connection.request("GET", "/healthz")
        connection.getresponse().read()
    except OSError:
        return None
    finally:
        connection.close()
    return time.perf_counter() - began


def scaled(value: float, scale: float, least: float) -> float:
    return max(least, value * scale)


def plan(args: argparse.Namespace) -> dict[str, Any]:
    rates = {
        "qr_login": scaled(args.qr_rate, args.scale, 0.5),
        "password_login": scaled(args.password_rate, args.scale, 0.5),
        "refresh": scaled(args.refresh_rate, args.scale, 0.5),
        "unit_verify": scaled(args.unit_rate, args.scale, 0.5),
    }
    # Subjects: a few seconds' worth, so that an operation never waits for one while the gateway keeps
    # up (one attempt in flight per person or unit: a second one would meet the captcha rule; one
    # request in flight per refresh chain: a second one would be a reuse).
    return {
        "rates": rates,
        "desktops": max(1, round(args.desktops * args.scale)),
        "slow_clients": max(1, round(args.slow_clients * args.scale)),
        "people": max(2, math.ceil(rates["password_login"] * args.subject_seconds)),
        "units": max(2, math.ceil(rates["unit_verify"] * args.subject_seconds)),
        "chains": max(4, math.ceil(rates["refresh"] * args.subject_seconds / 2)),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    sys.path.insert(0, str(ROOT))
    from gateway.settings import Settings

    shape = plan(args)
    warmup = args.warmup if args.warmup is not None else min(60.0, args.seconds / 5)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="qrgate-bench-peak-") as tmp, redis_server() as redis_url:
        workdir = Path(tmp)
        database_url = args.database_url or f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
        with gateways(workdir, redis_url, 1, QRGATE_DATABASE_URL=database_url) as [gateway]:
            settings = Settings(
                database_url=database_url, keys_file=str(workdir / "keys.json"), redis_url=redis_url,
                public_url=gateway.base_url,
            )  # fmt: skip
            print(f"gateway up after {time.perf_counter() - began:.0f} s", file=sys.stderr)
            people, member, tins = seed(settings, shape["people"], shape["units"])
            phone_person = people[0] if people else member
            generators = GENERATOR_ROLES[args.generators]

            async def sessions() -> tuple[list[dict[str, str]], list[dict[str, str]], list[str]]:
                phones = [await password_login(gateway.base_url, phone_person, "mobile-app") for _ in generators]
                members = [await password_login(gateway.base_url, member, "web") for _ in generators]
                chains = await desktop_sessions(gateway.base_url, phones[0]["access_token"], shape["chains"])
                return phones, members, chains

            phones, members, chains = asyncio.run(sessions())
            print(f"set up after {time.perf_counter() - began:.0f} s: {len(people)} people, {len(tins)} units, "
                  f"{len(chains)} refresh chains", file=sys.stderr)  # fmt: skip
            # A person's phone scans on their own behalf; the password-login crowd excludes them.
            crowd = [p for p in people if p is not phone_person] or people
            context = multiprocessing.get_context("spawn")
            processes = []
            for index, roles in enumerate(generators):
                spec = {
                    "base_url": gateway.base_url,
                    "roles": roles,
                    "rates": shape["rates"],
                    "seconds": args.seconds,
                    "warmup": warmup,
                    "max_in_flight_seconds": args.max_in_flight_seconds,
                    "desktops": shape["desktops"],
                    "slow_clients": shape["slow_clients"],
                    "trickle_interval": args.trickle_interval,
                    "phone": phones[index],
                    "member": members[index],
                    "people": crowd,
                    "units": tins,
                    "chains": chains,
                }
                ours, theirs = context.Pipe()
                process = context.Process(target=generator_main, args=(spec, theirs), daemon=True)
                process.start()
                processes.append((process, ours))
            for _process, channel in processes:
                if not channel.poll(600):
                    raise SystemExit("a load generator did not get ready within 10 minutes")
                message = channel.recv()
                if message != "ready":
                    raise SystemExit(f"a load generator failed while setting up: {message}")
            print(f"load generators ready after {time.perf_counter() - began:.0f} s", file=sys.stderr)
            pid = gateway.proc.pid
            idle = {"rss_kib": rss_kib(pid), "fds": open_fds(pid)}
            start_wall = time.time() + 0.5
            for _, channel in processes:
                channel.send(start_wall)
            time.sleep(max(0.0, start_wall - time.time()))
            started = time.perf_counter()
            redis = redis_pid(redis_url)
            gateway_cpu0, busy0 = cpu_seconds(pid), machine_busy_seconds()
            redis_cpu0 = cpu_seconds(redis) if redis else 0.0
            probes: list[float | None] = []
            generator_cpu0 = [cpu_seconds(p.pid) for p, _ in processes]
            samples: list[dict[str, float]] = []
            while (elapsed := time.perf_counter() - started) < args.seconds - 0.25:  # the end: still under load
                samples.append({"t": elapsed, "rss_kib": rss_kib(pid), "fds": open_fds(pid)})
                if elapsed >= warmup:
                    probes.append(probe_health(gateway.base_url))
                next_sample = len(samples) * 1.0
                time.sleep(max(0.0, min(args.seconds - 0.25, next_sample) - (time.perf_counter() - started)))
            time.sleep(max(0.0, args.seconds - (time.perf_counter() - started)))
            gateway_cpu = cpu_seconds(pid) - gateway_cpu0
            redis_cpu = cpu_seconds(redis) - redis_cpu0 if redis else 0.0
            generators_cpu = sum(
                cpu_seconds(p.pid) - before for (p, _), before in zip(processes, generator_cpu0, strict=True)
            )
            others = max(0.0, machine_busy_seconds() - busy0 - gateway_cpu - generators_cpu - redis_cpu)
            results = []
            for process, channel in processes:
                if not channel.poll(OP_TIMEOUT * 3 + 60):
                    raise SystemExit("a load generator did not report")
                results.append(channel.recv())
                process.join(30)
            crashed = [r["crashed"] for r in results if "crashed" in r]
            if crashed:
                raise SystemExit(f"a load generator crashed: {crashed}")
            healthy = httpx.get(gateway.base_url + "/healthz", timeout=10).status_code
            log_tail = log_summary(Path(gateway.log.name).read_text(errors="replace"))
    measured = {
        "idle": idle,
        "samples": samples,
        "probes": probes,
        "gateway_cpu": gateway_cpu,
        "redis_cpu": redis_cpu,
        "others": others,
        "healthy": healthy,
        "log_tail": log_tail,
    }
    return summarise(args, shape, warmup, measured, results)


# --- the report -----------------------------------------------------------------------------------


def summarise(
    args: argparse.Namespace,
    shape: dict[str, Any],
    warmup: float,
    measured: dict[str, Any],
    results: list[dict[str, Any]],
) -> dict[str, Any]:
    window = args.seconds - warmup
    idle, samples = measured["idle"], measured["samples"]
    ops: dict[str, dict[str, Any]] = {}
    for result in results:
        for name, op in result["ops"].items():
            ops[name] = op
        if "remint" in result:
            ops["desktop_remint"] = result["remint"]
    push_response = [x for r in results for x in r["push_from_response"]]
    push_request = [x for r in results for x in r["push_from_request"]]

    def at(t: float) -> dict[str, float]:
        return min(samples, key=lambda s: abs(s["t"] - t))

    start, middle, end = at(warmup), at(warmup + window / 2), samples[-1]
    growth = max(middle["rss_kib"], end["rss_kib"]) / start["rss_kib"] - 1
    figures: dict[str, Any] = {"seconds": args.seconds, "warmup": warmup, "shape": shape, "operations": {}}
    for name, op in ops.items():
        lat = op["latencies"]
        figures["operations"][name] = {
            "target_per_s": op["rate"] or None,
            "achieved_per_s": op["ok"] / window,
            "due": op["due"],
            "ok": op["ok"],
            "not_started": op["not_started"],
            "errors": sum(op["errors"].values()),
            "error_kinds": op["errors"],
            "p50_ms": percentile(lat, 50) * 1000 if lat else None,
            "p99_ms": percentile(lat, 99) * 1000 if lat else None,
            "start_lag_p99_ms": percentile(op["lags"], 99) * 1000 if op["lags"] else None,
        }
    figures["push_ms"] = {
        "samples": len(push_response),
        "from_response_p50": percentile(push_response, 50) * 1000 if push_response else None,
        "from_response_p99": percentile(push_response, 99) * 1000 if push_response else None,
        "from_request_p50": percentile(push_request, 50) * 1000 if push_request else None,
        "from_request_p99": percentile(push_request, 99) * 1000 if push_request else None,
    }
    desktop_counts = [n for r in results for t, n in r.get("desktop_samples", []) if t >= warmup]
    figures["desktops"] = {
        "target": shape["desktops"],
        "open_min": min(desktop_counts) if desktop_counts else None,
        "open_mean": sum(desktop_counts) / len(desktop_counts) if desktop_counts else None,
    }
    slow: Counter[str] = Counter()
    closed_after: list[float] = []
    for r in results:
        slow.update(r.get("slow", {}))
        closed_after += r.get("slow_closed_after", [])
    figures["slow_clients"] = {
        "count": shape["slow_clients"],
        "outcomes": dict(slow),
        "closed_after_p50_s": percentile(closed_after, 50) if closed_after else None,
    }
    answered = [x for x in measured["probes"] if x is not None]
    figures["gateway"] = {
        "rss_kib": {"idle": idle["rss_kib"], "start": start["rss_kib"], "middle": middle["rss_kib"],
                    "end": end["rss_kib"], "max": max(s["rss_kib"] for s in samples)},
        "rss_growth_after_warmup": growth,
        "fds": {"idle": idle["fds"], "start": start["fds"], "middle": middle["fds"], "end": end["fds"],
                "max": max(s["fds"] for s in samples)},
        "cpu_cores": measured["gateway_cpu"] / args.seconds,
        "healthz_after": measured["healthy"],
        "healthz_p50_ms": percentile(answered, 50) * 1000 if answered else None,
        "healthz_max_ms": max(answered) * 1000 if answered else None,
        "healthz_unanswered": len(measured["probes"]) - len(answered),
        "log_tail": measured["log_tail"],
    }  # fmt: skip
    figures["generators"] = [
        {
            "roles": roles,
            "cpu_cores": r["cpu_seconds"] / args.seconds,
            "loop_stall_p99_ms": r["loop_stall_p99"] * 1000,
            "loop_stall_max_ms": r["loop_stall_max"] * 1000,
        }
        for roles, r in zip(GENERATOR_ROLES[args.generators], results, strict=True)
    ]
    figures["redis_cores"] = measured["redis_cpu"] / args.seconds
    figures["other_processes_cores"] = measured["others"] / args.seconds
    figures["background_errors"] = {k: v for r in results for k, v in r["background_errors"].items()}
    return figures


def report(figures: dict[str, Any]) -> list[tuple[bool, str]]:
    window = figures["seconds"] - figures["warmup"]
    print(f"\npeak benchmark: {figures['seconds']:.0f} s, of which {figures['warmup']:.0f} s warm-up "
          f"(rates and latencies over the last {window:.0f} s; errors over the whole run); one gateway process "
          f"over Redis; {os.cpu_count()} cores shared by the gateway, Redis and the load generator")  # fmt: skip
    print(f"{'operation':<16}{'target/s':>9}{'done/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'ok':>9}"
          f"{'errors':>8}{'not started':>13}{'start lag p99 ms':>18}")  # fmt: skip
    verdicts: list[tuple[bool, str]] = []

    def show(value: float | None, digits: int = 1) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    errors = 0
    for name, op in figures["operations"].items():
        errors += op["errors"]
        print(f"{name:<16}{show(op['target_per_s']):>9}{show(op['achieved_per_s']):>9}{show(op['p50_ms']):>9}"
              f"{show(op['p99_ms']):>9}{op['ok']:>9}{op['errors']:>8}{op['not_started']:>13}"
              f"{show(op['start_lag_p99_ms']):>18}")  # fmt: skip
        for kind, count in sorted(op["error_kinds"].items(), key=lambda item: -item[1])[:5]:
            print(f"    error: {count} x {kind}")
        if op["target_per_s"]:
            kept = op["achieved_per_s"] >= KEEP_UP * op["target_per_s"]
            verdicts.append((kept, f"{name}: {op['achieved_per_s']:.1f}/s of the target {op['target_per_s']:.1f}/s"
                             + ("" if kept else f" (FELL BEHIND: {op['not_started']} due operations not started, "
                                "their subjects all busy or too many in flight)")))  # fmt: skip
    background = figures["background_errors"]
    errors += sum(background.values())
    for kind, count in background.items():
        print(f"    background token refresh error: {count} x {kind}")
    push = figures["push_ms"]
    print(f"push (phone's confirm -> desktop's `confirmed`), {push['samples']} logins: from the confirm response "
          f"p50 {show(push['from_response_p50'], 2)} ms, p99 {show(push['from_response_p99'], 2)} ms; "
          f"from the confirm request p50 {show(push['from_request_p50'], 2)} ms, "
          f"p99 {show(push['from_request_p99'], 2)} ms")  # fmt: skip
    desktops = figures["desktops"]
    print(f"waiting desktops: {desktops['target']} (open after warm-up: min {desktops['open_min']}, "
          f"mean {show(desktops['open_mean'], 0)}; the rest were re-minting at that second)")  # fmt: skip
    slow = figures["slow_clients"]
    outcomes = ", ".join(f"{count} {kind}" for kind, count in sorted(slow["outcomes"].items()))
    print(f"slow clients (deliberately bad, not counted as errors): {slow['count']}; {outcomes or 'nothing yet'}"
          + (f"; a closed one lasted {slow['closed_after_p50_s']:.1f} s (median)" if slow["closed_after_p50_s"]
             else ""))  # fmt: skip
    gw = figures["gateway"]
    rss, fds = gw["rss_kib"], gw["fds"]
    print(f"gateway RSS: {rss['idle'] / 1024:.0f} MiB before the load (desktops waiting), {rss['start'] / 1024:.0f} "
          f"after warm-up, {rss['middle'] / 1024:.0f} middle, {rss['end'] / 1024:.0f} end, max {rss['max'] / 1024:.0f};"
          f" growth after warm-up {gw['rss_growth_after_warmup'] * 100:+.1f} %")  # fmt: skip
    print(f"gateway open files: {fds['idle']} before, {fds['start']} after warm-up, {fds['middle']} middle, "
          f"{fds['end']} end, max {fds['max']}")  # fmt: skip
    generators = "; ".join(
        f"{'+'.join(g['roles'])}: {g['cpu_cores']:.2f} of a core, event loop late by p99 "
        f"{g['loop_stall_p99_ms']:.1f} ms, max {g['loop_stall_max_ms']:.0f} ms"
        for g in figures["generators"]
    )
    print(f"CPU: gateway {gw['cpu_cores']:.2f} cores; Redis {figures['redis_cores']:.2f}; load generators "
          f"{generators}; everything else on the machine {figures['other_processes_cores']:.2f} cores")  # fmt: skip
    print(f"/healthz once a second after warm-up: p50 {show(gw['healthz_p50_ms'])} ms, max "
          f"{show(gw['healthz_max_ms'])} ms, {gw['healthz_unanswered']} unanswered within 5 s; "
          f"after the run: {gw['healthz_after']}")  # fmt: skip
    lags = [op["start_lag_p99_ms"] for op in figures["operations"].values() if op["start_lag_p99_ms"] is not None]
    busiest = max((g["cpu_cores"] for g in figures["generators"]), default=0.0)
    stalled = max((g["loop_stall_p99_ms"] for g in figures["generators"]), default=0.0)
    kept_up = max(lags, default=0.0) <= 50.0 and stalled <= 50.0 and busiest < 0.9
    verdicts.insert(0, (errors == 0, f"errors: {errors} (the deliberate slow clients apart)"))
    if errors:
        print("the gateway's log messages, most frequent first:\n" + gw["log_tail"], file=sys.stderr)
    verdicts.append((kept_up, f"the load generator kept up: start lag p99 at most {max(lags, default=0):.1f} ms "
                     f"(<= 50), event loop late by p99 {stalled:.1f} ms (<= 50), busiest process {busiest:.2f} "
                     "of a core (< 0.9)"))  # fmt: skip
    p99 = push["from_response_p99"]
    verdicts.append((p99 is not None and p99 <= GOAL_PUSH_P99_MS,
                     f"push p99 {show(p99, 2)} ms (goal <= {GOAL_PUSH_P99_MS:.0f} ms)"))  # fmt: skip
    growth = gw["rss_growth_after_warmup"]
    line = f"RSS growth after warm-up {growth * 100:+.1f} % (goal <= {GOAL_RSS_GROWTH * 100:.0f} %)"
    verdicts.append((growth <= GOAL_RSS_GROWTH, line))
    if desktops["open_min"] is not None:
        line = f"waiting desktops: at least {desktops['open_min']} of {desktops['target']} open after warm-up"
        verdicts.append((desktops["open_min"] >= 0.95 * desktops["target"], line))
    verdicts.append((gw["healthz_after"] == 200, f"/healthz answers {gw['healthz_after']} after the run"))
    print()
    for ok, line in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}  {line}")
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=600, help="length of the load (default 600)")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up within it (default: min(60, seconds/5))")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every rate and count (default 1)")
    parser.add_argument("--desktops", type=int, default=5000, help="waiting desktops")
    parser.add_argument("--qr-rate", type=float, default=150, help="full QR logins per second")
    parser.add_argument("--password-rate", type=float, default=20, help="password logins per second")
    parser.add_argument("--refresh-rate", type=float, default=300, help="refresh-token grants per second")
    parser.add_argument("--unit-rate", type=float, default=50, help="unit verifications per second")
    parser.add_argument("--slow-clients", type=int, default=100, help="connections trickling request heads")
    parser.add_argument("--trickle-interval", type=float, default=1.0, help="seconds between a slow client's bytes")
    parser.add_argument("--generators", type=int, choices=sorted(GENERATOR_ROLES), default=2,
                        help="load-generator processes (default 2)")  # fmt: skip
    parser.add_argument("--subject-seconds", type=float, default=3.0,
                        help="people, units and refresh chains: this many seconds' worth of their rate")  # fmt: skip
    parser.add_argument("--max-in-flight-seconds", type=float, default=5.0,
                        help="QR logins in flight at most: this many seconds' worth")  # fmt: skip
    parser.add_argument("--database-url", help="the gateway's database (default: SQLite in a temporary directory)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    limit = raise_open_files()
    needed = args.desktops * args.scale + 3000  # the gateway's and the generator's own
    if needed > limit:
        raise SystemExit(f"open-files limit {limit} is too low for {args.desktops * args.scale:.0f} desktops")
    figures = run(args)
    figures["verdicts"] = [{"pass": ok, "line": line} for ok, line in report(figures)]
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()

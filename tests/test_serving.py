"""The HTTP server protects itself (gateway/serving.py): head size, head and body deadlines, idle
keep-alive, a connection cap that leaves the operations port answering, problem+json for what it
refuses, and client hang-ups that are neither 5xx nor tracebacks. Driven with raw sockets (asyncio
streams) against real servers: `qrgate serve`'s server in a thread with short limits, and for memory
and the whole process log, `qrgate serve` itself."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from gateway.serving import RESERVED_FILES, connections_within_open_files
from gateway.settings import Settings
from tests.conftest import new_identity
from tests.support.clients import bearer, mint, next_message, open_events, phone_login
from tests.support.gateway_server import GatewayProcess, ThreadedGateway, free_port, make_settings
from tests.support.schemas import assert_valid

pytestmark = pytest.mark.anyio

MAX_CONNECTIONS = 12
LIMITS: dict[str, Any] = {
    "http_header_timeout": 1.0,
    "http_body_timeout": 1.0,
    "http_keep_alive_timeout": 1,
    "http_max_connections": MAX_CONNECTIONS,
    "metrics_public": False,
}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedGateway]:
    """`qrgate serve`'s server (guarded protocol, operations port) with short limits, in a thread."""
    port = free_port()
    settings = make_settings(tmp_path_factory.mktemp("serving"), port, metrics_port=free_port(), **LIMITS)
    server = ThreadedGateway(settings, port).start()
    yield server
    server.stop()


# Raw HTTP ---------------------------------------------------------------------------------------


def parse(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    return status, headers, body


def assert_problem(data: bytes, status: int, code: str) -> dict[str, Any]:
    got, headers, body = parse(data)
    assert got == status, data[:300]
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)
    problem: dict[str, Any] = json.loads(body)
    assert_valid("problem.json", problem)
    assert (problem["status"], problem["code"]) == (status, code)
    return problem


async def exchange(port: int, request: bytes, timeout: float = 10.0) -> tuple[bytes, float]:
    """Send `request`, read until the server closes; what it answered, and after how long."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    try:
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)
        return data, time.monotonic() - started
    finally:
        writer.close()


async def trickle(port: int, start: bytes, byte: bytes, every: float, timeout: float = 10.0) -> tuple[bytes, float]:
    """Slow loris: send `start`, then one byte every `every` seconds, until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()

    async def drip() -> None:
        with contextlib.suppress(ConnectionError):
            writer.write(start)
            while True:
                await asyncio.sleep(every)
                writer.write(byte)
                await writer.drain()

    dripping = asyncio.create_task(drip())
    try:
        data = await asyncio.wait_for(reader.read(), timeout)
        return data, time.monotonic() - started
    finally:
        dripping.cancel()
        writer.close()


def sample(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


# Head size --------------------------------------------------------------------------------------


def head(size: int) -> bytes:
    """A GET /healthz whose head (request line and headers) is exactly `size` bytes."""
    start = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: "
    return start + b"a" * (size - len(start) - 4) + b"\r\n\r\n"


async def test_a_head_over_the_limit_is_431_and_one_within_is_served(guarded: ThreadedGateway) -> None:
    within, _ = await exchange(guarded.port, head(16000) + b"")
    assert parse(within)[0] == 200  # keep-alive: the server closes it after the idle timeout
    over, _ = await exchange(guarded.port, head(17000))
    problem = assert_problem(over, 431, "headers_too_large")
    assert "16384" in problem["detail"]
    # Many small headers count together.
    many = b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 90) for i in range(200)) + b"\r\n"
    assert_problem((await exchange(guarded.port, many))[0], 431, "headers_too_large")
    # Sent in pieces, as a client that never ends its headers would: refused once past the limit.
    reader, writer = await asyncio.open_connection("127.0.0.1", guarded.port)
    answer = asyncio.create_task(reader.read())
    writer.write(b"GET /healthz HTTP/1.1\r\nX-Endless: ")
    sent = 0
    with contextlib.suppress(ConnectionError):
        while not answer.done() and sent < 4 << 20:
            writer.write(b"b" * 4096)
            await writer.drain()
            sent += 4096
            await asyncio.sleep(0.001)
    assert_problem(await asyncio.wait_for(answer, 5), 431, "headers_too_large")
    writer.close()


# Deadlines --------------------------------------------------------------------------------------


async def test_a_slow_head_is_closed_whatever_it_trickles(guarded: ThreadedGateway) -> None:
    data, took = await trickle(guarded.port, b"GET /healthz HTTP/1.1\r\nX-Slow: ", b"a", every=0.2)
    problem = assert_problem(data, 408, "request_timeout")
    assert "head" in problem["detail"]
    assert 0.9 < took < 3, took
    # A connection that sends nothing is closed as quietly as it came.
    silent, took = await exchange(guarded.port, b"")
    assert silent == b""
    assert 0.9 < took < 3, took


async def test_a_slow_body_is_closed(guarded: ThreadedGateway) -> None:
    start = b"POST /v1/qr HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{"
    data, took = await trickle(guarded.port, start, b" ", every=0.2)
    problem = assert_problem(data, 408, "request_timeout")
    assert "body" in problem["detail"]
    assert 0.9 < took < 3, took


async def test_an_idle_kept_alive_connection_is_closed(guarded: ThreadedGateway) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", guarded.port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        started = time.monotonic()
        answer = await asyncio.wait_for(reader.readuntil(b'{"status":"ok"}'), 5)
        assert parse(answer)[0] == 200
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server, not by us
        assert time.monotonic() - started < 3
        # While it was answering nothing timed it: a second request on a fresh connection works too.
        assert parse((await exchange(guarded.port, head(200)))[0])[0] == 200
    finally:
        writer.close()


async def test_websockets_and_long_polls_outlive_every_timeout(guarded: ThreadedGateway) -> None:
    identity = new_identity()
    guarded.add_person(**identity)
    async with httpx.AsyncClient(base_url=guarded.base_url, timeout=10) as http:
        phone = await phone_login(http, identity)
        minted = await mint(http)
        ws = await open_events(minted)
        assert (await next_message(ws))["type"] == "state"
        await asyncio.sleep(2.5)  # idle past the head, body and keep-alive timeouts
        assert (await http.post(f"/v1/qr/{minted['qr_id']}/scan", headers=bearer(phone))).status_code == 200
        assert (await next_message(ws))["type"] == "scanned"
        await http.post(f"/v1/qr/{minted['qr_id']}/confirm", headers=bearer(phone))
        assert (await next_message(ws))["type"] == "confirmed"
        await ws.close()

        polled = await mint(http)
        started = time.monotonic()
        answer = await http.get(f"/v1/qr/{polled['qr_id']}/state?wait=3", headers=bearer(polled["waiter_token"]))
        assert answer.status_code == 200, answer.text
        assert answer.json()["state"] == "pending"
        assert time.monotonic() - started > 2.8  # it waited, and was not cut at 1 s


# Malformed requests -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n",
        b"G\x01T /healthz HTTP/1.1\r\n\r\n",
        b"POST /v1/qr HTTP/1.1\r\nContent-Length: twelve\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,  # TLS to the plain port
        b"GET /healthz HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ],
    ids=["header-line", "method", "content-length", "tls", "smuggling"],
)
async def test_malformed_http_is_a_problem(guarded: ThreadedGateway, request_bytes: bytes) -> None:
    data, _ = await exchange(guarded.port, request_bytes)
    problem = assert_problem(data, 400, "malformed_request")
    assert problem["detail"] == "The request is not valid HTTP/1.1."


# The connection cap and the operations port ----------------------------------------------------


async def test_past_the_connection_cap_new_connections_get_503_at_once(guarded: ThreadedGateway) -> None:
    async with httpx.AsyncClient(base_url=guarded.base_url) as http:
        codes = [await mint(http) for _ in range(MAX_CONNECTIONS)]
    await asyncio.sleep(0.3)  # the minting connection is gone on the server's side too
    # The holders are waiting desktops: WebSockets count as connections, and time out of nothing here.
    holders = [await open_events(minted) for minted in codes]
    try:
        for ws in holders:
            assert (await next_message(ws))["type"] == "state"
        data, took = await exchange(guarded.port, head(200))
        assert took < 0.5, took
        assert_problem(data, 503, "too_many_connections")
        assert parse(data)[1]["retry-after"] == "1"
        with pytest.raises(Exception, match="503"):
            await connect(codes[0]["events_url"])  # a WebSocket, too
        async with httpx.AsyncClient(base_url=guarded.ops_url) as ops:
            assert (await ops.get("/healthz")).json() == {"status": "ok"}
            assert (await ops.get("/readyz")).status_code == 200
            metrics = (await ops.get("/metrics")).text
        assert sample(metrics, 'qrgate_http_refusals_total{reason="too_many_connections"}') >= 2
    finally:
        for ws in holders:
            await ws.close()
    await asyncio.sleep(0.3)
    assert parse((await exchange(guarded.port, head(200)))[0])[0] == 200


async def test_metrics_are_on_the_operations_port_only(guarded: ThreadedGateway) -> None:
    defaults = Settings.model_fields
    assert (defaults["metrics_port"].default, defaults["metrics_public"].default) == (9100, False)
    async with httpx.AsyncClient() as http:
        public = await http.get(f"{guarded.base_url}/metrics")
        assert public.status_code == 404
        assert public.headers["content-type"] == "application/problem+json"
        ops = await http.get(f"{guarded.ops_url}/metrics")
        assert ops.status_code == 200
        assert "# TYPE qrgate_http_request_duration_seconds histogram" in ops.text
        # The public port keeps the probes load balancers use.
        assert (await http.get(f"{guarded.base_url}/healthz")).status_code == 200
        assert (await http.get(f"{guarded.base_url}/readyz")).status_code == 200
        assert (await http.get(f"{guarded.ops_url}/v1/qr")).status_code == 404  # nothing else there


def test_the_connection_cap_stays_below_the_open_files_limit(caplog: pytest.LogCaptureFixture) -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert connections_within_open_files(10) == 10
    assert not caplog.records
    if soft == resource.RLIM_INFINITY:
        pytest.skip("no open-files limit to stay below")
    wanted = 10**9  # more than any hard limit: the process keeps RESERVED_FILES for itself
    room = connections_within_open_files(wanted)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)  # raised to the hard limit
    assert room == soft - RESERVED_FILES
    assert "open-files limit" in caplog.text


# Client hang-ups --------------------------------------------------------------------------------


async def test_half_a_body_then_gone_is_499_not_an_error(
    guarded: ThreadedGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with httpx.AsyncClient() as ops:
        before = (await ops.get(f"{guarded.ops_url}/metrics")).text
        _, writer = await asyncio.open_connection("127.0.0.1", guarded.port)
        writer.write(
            b"POST /v1/qr HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"client_id": "withholding-desktop",'
        )
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()
        for _ in range(50):
            if any(getattr(r, "status", None) == 499 for r in caplog.records):
                break
            await asyncio.sleep(0.05)
        after = (await ops.get(f"{guarded.ops_url}/metrics")).text
    route = 'qrgate_http_request_duration_seconds_count{method="POST",route="/v1/qr",status='
    assert sample(after, route + '"499"}') - sample(before, route + '"499"}') == 1
    assert sample(after, route + '"5xx"}') == sample(before, route + '"5xx"}')
    lines = [r for r in caplog.records if getattr(r, "route", None) == "/v1/qr" and getattr(r, "status", 0) == 499]
    assert len(lines) == 1
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


# `qrgate serve` itself: memory under endless headers, and its log -------------------------------


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[GatewayProcess]:
    port = free_port()
    env = {
        "QRGATE_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "QRGATE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'serve.db'}",
        "QRGATE_KEYS_FILE": str(tmp_path / "keys.json"),
        "QRGATE_METRICS_PORT": str(free_port()),
        "QRGATE_METRICS_PUBLIC": "false",
        "QRGATE_LOG_LEVEL": "info",
    }
    server = GatewayProcess(env, port, tmp_path / "gateway.log").start()
    yield server
    server.stop()


@pytest.mark.slow
async def test_endless_headers_leave_memory_flat(served: GatewayProcess) -> None:
    """The reproduction: ten clients each sending a 32 MB header. Each is refused within a few
    hundred KiB, and the process grows by a few MB at most (it grew by 460 MB before)."""
    assert served.proc is not None
    pid = served.proc.pid
    async with httpx.AsyncClient(base_url=served.base_url) as http:
        for _ in range(20):
            assert (await http.get("/healthz")).status_code == 200
    baseline = peak = rss_kib(pid)
    total = 32 << 20
    chunk = b"c" * 65536

    async def endless() -> int:
        _, writer = await asyncio.open_connection("127.0.0.1", served.port)
        sent = 0
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: ")
            while sent < total:
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
        except ConnectionError:
            pass
        finally:
            writer.close()
        return sent

    senders = [asyncio.create_task(endless()) for _ in range(10)]
    while not all(task.done() for task in senders):
        peak = max(peak, rss_kib(pid))
        await asyncio.sleep(0.01)
    sent = [task.result() for task in senders]
    assert all(amount < total for amount in sent), sent  # every one was cut off
    assert peak - baseline < 40 * 1024, f"RSS grew from {baseline} KiB to {peak} KiB"
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{served.base_url}/healthz")).status_code == 200
        metrics = (await http.get(f"{served.ops_url}/metrics")).text
    assert sample(metrics, 'qrgate_http_refusals_total{reason="headers_too_large"}') == 10


@pytest.mark.slow
async def test_a_hang_up_leaves_one_clean_log_line(served: GatewayProcess) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(
        b"POST /v1/login/password HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b'Content-Length: 300\r\n\r\n{"identifier": "13900000000",'
    )
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()
    malformed, _ = await exchange(served.port, b"GET / HTTP/1.1\r\nBroken\r\n\r\n")
    assert_problem(malformed, 400, "malformed_request")
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{served.base_url}/metrics")).status_code == 404
        metrics = (await http.get(f"{served.ops_url}/metrics")).text
    assert 'status="5xx"' not in metrics
    assert sample(metrics, 'qrgate_http_request_duration_seconds_count{method="POST",route="/v1/login/password",') == 1
    served.stop()
    text = served.log_path.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    hang_ups = [line for line in lines if line.get("route") == "/v1/login/password"]
    assert [line["status"] for line in hang_ups] == [499]
    assert "Traceback" not in text
    assert "Exception in ASGI application" not in text
    assert not [line for line in lines if line["level"] in ("error", "critical")]
    refused = [line for line in lines if line.get("msg") == "refused"]
    assert [(line["reason"], line["client"]) for line in refused] == [("malformed_request", "127.0.0.1")]


class GatewayWithFewFiles(GatewayProcess):
    """`qrgate serve` under the usual open-files limit of 1,024 (soft and hard)."""

    def launch(self) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "serve", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024)),
            )
        return self.proc


@pytest.mark.slow
async def test_idle_connections_past_the_open_files_limit_leave_the_probes_answering(tmp_path: Path) -> None:
    """The reproduction: with 1,024 open files, 1,100 idle connections made /healthz fail. Now the
    process caps its connections below the limit, answers the rest 503 at once, and the operations
    port answers throughout; once the idle ones time out, the public port serves again."""
    port = free_port()
    env = {
        "QRGATE_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "QRGATE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'files.db'}",
        "QRGATE_KEYS_FILE": str(tmp_path / "keys.json"),
        "QRGATE_METRICS_PORT": str(free_port()),
        "QRGATE_HTTP_HEADER_TIMEOUT": "8",
    }
    server = GatewayWithFewFiles(env, port, tmp_path / "gateway.log").start()
    idle: list[asyncio.StreamWriter] = []
    try:
        started = time.monotonic()
        for _ in range(11):
            opened = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in range(100)))
            idle += [writer for _, writer in opened]
        # The server has accepted them all, and the refused ones have done lingering (at most 64 linger at
        # once, for a second; a refusal past that closes at once, and a request already sent on it is then
        # reset by the kernel instead of read).
        await asyncio.sleep(1.5)
        async with httpx.AsyncClient(timeout=5) as http:
            assert (await http.get(f"{server.ops_url}/healthz")).json() == {"status": "ok"}
            assert (await http.get(f"{server.ops_url}/readyz")).status_code == 200
            data, took = await exchange(port, head(200))
            assert_problem(data, 503, "too_many_connections")
            assert took < 1, took
            metrics = (await http.get(f"{server.ops_url}/metrics")).text
            assert sample(metrics, 'qrgate_http_refusals_total{reason="too_many_connections"}') >= 1100 - 768
            assert time.monotonic() - started < 8, "the checks ran after the idle connections timed out"
            await asyncio.sleep(8.5 - (time.monotonic() - started))  # the idle ones time out
            assert (await http.get(f"{server.base_url}/healthz")).status_code == 200
    finally:
        for writer in idle:
            writer.close()
        server.stop()
    assert "allows 768 client connections" in server.log_path.read_text()

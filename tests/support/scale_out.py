"""Several `qrgate serve` processes behind an imaginary load balancer, and the desktop and phone of
a QR login talking to whichever process they like.

`GatewayCluster` starts N processes (in parallel) on one Redis URL, one SQLite file and one key file,
all with the same public URL (the load balancer's, so every process issues tokens with the same
`iss`): the database is migrated and the keys are created once, before any process starts, and the
processes do not migrate. Spares are started with the group and handed out to tests that kill or
stop a process. The tests address every process directly (`events_on` builds a WebSocket URL for a
chosen process).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from gateway.cli import add_person_record
from gateway.settings import Settings
from gateway.tokens import keys
from tests.conftest import new_identity
from tests.support.gateway_server import GatewayProcess, free_port
from tests.support.redis_procs import in_ci, redis_server_binary

PUBLIC_URL = "https://qrgate.example"  # the load balancer: no test traffic goes there
WAIT = 30.0  # generous: a loaded 2-core machine runs several Python processes at once
POLL = 0.05
Json = dict[str, Any]


@dataclass
class Person:
    identity: dict[str, str]
    id: str
    phone_token: str = ""


class GatewayCluster:
    """N gateway processes on one Redis (`redis_url`) and one database; see the module docs."""

    def __init__(self, root: Path, redis_url: str, *, size: int, spares: int = 0, **env: str) -> None:
        self.root = root
        self.redis_url = redis_url
        self.database_url = f"sqlite+aiosqlite:///{root / 'qrgate.db'}"
        self.keys_file = root / "keys.json"
        self.extra_env = env
        self.processes: list[GatewayProcess] = []
        self.spares: list[GatewayProcess] = []
        self.people: list[Person] = []
        self._started: list[GatewayProcess] = []
        self._size = size
        self._spare_count = spares

    # Life cycle ----------------------------------------------------------------------------------------
    def settings(self) -> Settings:
        return Settings(
            public_url=PUBLIC_URL,
            database_url=self.database_url,
            keys_file=str(self.keys_file),
            redis_url=self.redis_url,
            argon2_memory_kib=1024,
            argon2_time_cost=1,
        )

    def env(self) -> dict[str, str]:
        return {
            "QRGATE_PUBLIC_URL": PUBLIC_URL,
            "QRGATE_DATABASE_URL": self.database_url,
            "QRGATE_DATABASE_AUTO_MIGRATE": "false",
            "QRGATE_KEYS_FILE": str(self.keys_file),
            "QRGATE_REDIS_URL": self.redis_url,
            "QRGATE_ARGON2_MEMORY_KIB": "1024",
            "QRGATE_ARGON2_TIME_COST": "1",
            "QRGATE_UNITS_MOUNT": "false",
            "QRGATE_LOG_LEVEL": "info",
            "QRGATE_QR_MINT_IP_MAX": "1000000",
            **self.extra_env,
        }

    def _new_process(self) -> GatewayProcess:
        index = len(self._started)
        process = GatewayProcess(self.env(), free_port(), self.root / f"gateway-{index}.log")
        self._started.append(process)
        return process

    def start(self, people: int = 0) -> list[Person]:
        """Prepare the database and keys, add `people`, and start every process (in parallel)."""
        keys.load_or_create(self.keys_file, "ES256")
        found = [self.add_person() for _ in range(max(people, 1))]  # the first one also migrates
        wanted = [self._new_process() for _ in range(self._size + self._spare_count)]
        start_all(wanted)
        self.processes = wanted[: self._size]
        self.spares = wanted[self._size :]
        self.people = found[:people]
        return self.people

    def add_person(self) -> Person:
        identity = new_identity()
        with ThreadPoolExecutor(1) as pool:  # its own event loop, so it works from async code too
            person_id = pool.submit(asyncio.run, add_person_record(self.settings(), **identity)).result()
        return Person(identity, person_id)

    def spare(self) -> GatewayProcess:
        """A running process that a test may kill or stop (started now if none is left)."""
        if self.spares:
            return self.spares.pop()
        process = self._new_process()
        start_all([process])
        return process

    def stop(self) -> None:
        running = [p for p in self._started if p.proc is not None and p.proc.poll() is None]
        for process in running:
            assert process.proc is not None
            process.proc.terminate()
        for process in running:
            assert process.proc is not None
            try:
                process.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.proc.kill()
                process.proc.wait(timeout=10)

    def tracebacks(self) -> list[str]:
        """Log files (of every process started) that show a traceback: an unhandled error."""
        return [p.log_path.name for p in self._started if p.log_path.exists() and "Traceback" in p.log_path.read_text()]


READY_TIMEOUT = 120.0  # Python start-up alone takes seconds each when several start on a busy 2-core machine


def start_all(processes: Sequence[GatewayProcess], timeout: float = READY_TIMEOUT) -> None:
    """Start processes at once and wait until every one answers /healthz; if one fails, kill all."""
    try:
        for process in processes:
            process.launch()
        deadline = time.monotonic() + timeout
        waiting = list(processes)
        while waiting:
            process = waiting[0]
            assert process.proc is not None
            if process.proc.poll() is not None:
                raise RuntimeError(f"qrgate serve exited: {process.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(process.base_url + "/healthz", timeout=1).status_code == 200:
                    waiting.pop(0)
                    continue
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"qrgate serve did not become healthy: {process.log_path.read_text()[-2000:]}")
            time.sleep(POLL)
    except BaseException:
        for process in processes:
            if process.proc is not None and process.proc.poll() is None:
                process.proc.kill()
                process.proc.wait(timeout=10)
        raise


def need_redis_server() -> None:
    """For module-scoped Redis fixtures: skip without redis-server, except under CI=true (fail)."""
    if redis_server_binary() is None:
        if in_ci():
            pytest.fail("redis-server is not on PATH, and CI=true requires the Redis tests to run")
        pytest.skip("redis-server is not on PATH")


# Clients ---------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def http_clients(processes: Sequence[GatewayProcess]) -> AsyncIterator[list[httpx.AsyncClient]]:
    """One httpx client per process (room for many concurrent long-polls)."""
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=100)
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(base_url=p.base_url, timeout=WAIT + 30, limits=limits))
            for p in processes
        ]
        yield clients


def events_on(process: GatewayProcess, minted: Json) -> Json:
    """The minted QR's WebSocket address on one chosen process (the minted one names the balancer)."""
    assert minted["events_url"] == f"wss://qrgate.example/v1/qr/{minted['qr_id']}/events"
    return {**minted, "events_url": f"{process.ws_url}/v1/qr/{minted['qr_id']}/events"}


_sockets: list[ClientConnection] = []


async def hello(process: GatewayProcess, minted: Json) -> ClientConnection:
    """Connect to the QR's events on `process` and say hello (closed by `close_sockets` at the latest)."""
    ws = await connect(events_on(process, minted)["events_url"], open_timeout=WAIT)
    _sockets.append(ws)
    await ws.send(json.dumps({"type": "hello", "waiter_token": minted["waiter_token"]}))
    return ws


async def close_sockets() -> None:
    """Close every socket `hello` opened (for a test's teardown, so a failure leaks no transport)."""
    while _sockets:
        await _sockets.pop().close()


async def receive(ws: ClientConnection, timeout: float = WAIT) -> Json:
    async with asyncio.timeout(timeout):
        raw = await ws.recv()
    message: Json = json.loads(raw)
    return message


async def rest(ws: ClientConnection, timeout: float = WAIT) -> tuple[list[Json], int | None]:
    """Every message until the server closes, and its close code (None: the connection just died)."""
    messages: list[Json] = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                messages.append(json.loads(await ws.recv()))
    except ConnectionClosed as closed:
        return messages, closed.rcvd.code if closed.rcvd else None


async def nothing_pending(ws: ClientConnection, within: float = 0.3) -> bool:
    """True when no message (and no close) arrives within `within` seconds (the socket is idle)."""
    try:
        async with asyncio.timeout(within):
            await ws.recv()
    except TimeoutError:
        return True
    except ConnectionClosed:
        return False
    return False


async def phone_login(http: httpx.AsyncClient, person: Person) -> str:
    identity = person.identity
    body = {"identifier": identity["phone"], "password": identity["password"], "client_id": "mobile-app"}
    response = await http.post("/v1/login/password", json=body)
    assert response.status_code == 200, response.text
    person.phone_token = response.json()["access_token"]
    return person.phone_token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def mint(http: httpx.AsyncClient) -> Json:
    response = await http.post("/v1/qr", json={"client_id": "withholding-desktop", "device_name": "PC-01"})
    assert response.status_code == 201, response.text
    body: Json = response.json()
    return body


async def phone_action(http: httpx.AsyncClient, person: Person, minted: Json, action: str) -> httpx.Response:
    return await http.post(f"/v1/qr/{minted['qr_id']}/{action}", headers=bearer(person.phone_token))


async def long_poll_until_done(http: httpx.AsyncClient, minted: Json, wait: int = 25) -> list[Json]:
    """Long-poll the state until it is final: the token, `delivered` (someone else got it), or
    terminal. Every answer, in order."""
    answers: list[Json] = []
    while True:
        response = await http.get(
            f"/v1/qr/{minted['qr_id']}/state", params={"wait": wait}, headers=bearer(minted["waiter_token"])
        )
        assert response.status_code == 200, response.text
        answers.append(response.json())
        if "token" in answers[-1] or answers[-1]["state"] in ("delivered", "cancelled", "expired"):
            return answers


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = WAIT) -> None:
    """Poll `check` until it holds (never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(POLL)


def is_state(message: Json, state: str, *, scanned: bool = False) -> bool:
    """A `state` message with this state (and the masked scanner once scanned)."""
    expected = {"type", "state", "expires_in"} | ({"scanner"} if scanned else set())
    return (
        set(message) == expected
        and message["type"] == "state"
        and message["state"] == state
        and isinstance(message["expires_in"], int)
        and 0 < message["expires_in"] <= 120
        and (not scanned or message["scanner"] == {"display_name": "张*"})
    )


SCANNED: Json = {"type": "scanned", "scanner": {"display_name": "张*"}}


@dataclass
class Desktop:
    """A desktop that reconnects the way the protocol asks: after 1001 (shutdown), 1013 (try again) or a
    dropped connection it connects to the next process, and expects the current state first there.
    `sessions` holds what each connection received, `closes` how each ended."""

    minted: Json
    processes: Sequence[GatewayProcess]
    at: int = 0
    ws: ClientConnection | None = None
    sessions: list[list[Json]] = field(default_factory=list)
    closes: list[int | None] = field(default_factory=list)

    RECONNECT = frozenset({1001, 1006, 1012, 1013, None})

    @property
    def messages(self) -> list[Json]:
        return [message for session in self.sessions for message in session]

    async def connect(self, index: int | None = None) -> Json | None:
        """(Re)connect to process `index` (default: the current one) and return the first message,
        which must be `state`; None when the server closed at once (see `closes`)."""
        if index is not None:
            self.at = index
        self.ws = await hello(self.processes[self.at % len(self.processes)], self.minted)
        self.sessions.append([])
        try:
            first = await receive(self.ws)
        except ConnectionClosed as closed:
            self.ws = None
            self.closes.append(closed.rcvd.code if closed.rcvd else None)
            return None
        self.sessions[-1].append(first)
        assert first["type"] == "state", first
        return first

    async def until_closed(self, timeout: float = WAIT) -> int | None:
        assert self.ws is not None
        messages, code = await rest(self.ws, timeout)
        self.ws = None
        self.sessions[-1] += messages
        self.closes.append(code)
        return code

    async def finish(self, timeout: float = WAIT * 2) -> Json | None:
        """Read, reconnecting as needed, until the server ends it: the token, or None when it says
        the result went elsewhere (4409) or the QR is finished."""
        deadline = time.monotonic() + timeout
        while True:
            if self.ws is not None:
                await self.until_closed(max(1.0, deadline - time.monotonic()))
            if self.closes[-1] not in self.RECONNECT:
                tokens = [message["token"] for message in self.messages if message["type"] == "confirmed"]
                assert len(tokens) <= 1, self.sessions
                return tokens[0] if tokens else None
            assert time.monotonic() < deadline, f"no result: {self.closes}"
            self.at += 1
            try:
                if await self.connect() is not None:
                    continue
            except (OSError, TimeoutError, InvalidHandshake):
                self.closes.append(None)  # that process does not accept connections (now)
            await asyncio.sleep(0.2)  # the client's back-off before it tries the next process

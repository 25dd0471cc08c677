"""Scale-out: several `qrgate serve` processes on one Redis, as behind a load balancer without sticky
sessions. The desktop waits on one process while the phone scans on a second and confirms on a third;
processes are killed (-9) and drained (SIGTERM) under waiting desktops; the same logins run on a
3-master Redis Cluster and on Sentinel, through a failover. Real redis-server and uvicorn processes."""

from __future__ import annotations

import asyncio
import itertools
import signal
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from redis.crc import key_slot

from gateway.tokens.verifier import AccessTokenVerifier, RemoteJwks
from tests.support.gateway_server import GatewayProcess
from tests.support.redis_procs import (
    RedisClusterGroup,
    RedisSentinelGroup,
    RedisServer,
    command,
    replication_offset,
    sync_client,
)
from tests.support.scale_out import (
    PUBLIC_URL,
    SCANNED,
    Desktop,
    GatewayCluster,
    Json,
    Person,
    bearer,
    close_sockets,
    eventually,
    hello,
    http_clients,
    is_state,
    long_poll_until_done,
    mint,
    need_redis_server,
    phone_action,
    phone_login,
    receive,
    rest,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]  # slow: several `qrgate serve` processes on redis-server


@pytest.fixture(autouse=True)
async def _close_sockets() -> AsyncIterator[None]:
    yield
    await close_sockets()


@pytest.fixture(scope="module")
def group(module_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayCluster]:
    """Three processes on one standalone Redis, plus two spares for the tests that kill one."""
    cluster = GatewayCluster(tmp_path_factory.mktemp("scale-out"), module_redis.url, size=3, spares=2)
    try:
        cluster.start(people=6)
        yield cluster
    finally:
        cluster.stop()


# One login, with the desktop, the phone and a concurrent long-poll on chosen processes ----------------


@dataclass
class Login:
    route: tuple[int, int, int, int]  # the processes of: the socket (and mint), scan, confirm, long-poll
    person: Person
    first: Json
    scanned: Json
    after_confirm: list[Json]
    close: int | None
    polled: list[Json]

    @property
    def socket_token(self) -> Json | None:
        return self.after_confirm[0]["token"] if self.after_confirm else None

    @property
    def poll_token(self) -> Json | None:
        token: Json | None = self.polled[-1].get("token")
        return token


def route_of(i: int, n: int) -> tuple[int, int, int, int]:
    """Login `i` of many: every (socket, scan, confirm) combination in turn, the long-poll elsewhere."""
    a, b, c = i % n, i // n % n, i // n**2 % n
    return a, b, c, (a + 1 + i // n**3 % (n - 1)) % n


async def login(
    route: tuple[int, int, int, int],
    processes: Sequence[GatewayProcess],
    http: Sequence[httpx.AsyncClient],
    person: Person,
    minted: Json | None = None,
) -> Login:
    a, b, c, d = route
    minted = minted or await mint(http[a])
    ws = await hello(processes[a], minted)
    poll: asyncio.Task[list[Json]] | None = None
    try:
        first = await receive(ws)
        poll = asyncio.create_task(long_poll_until_done(http[d], minted))
        scan = await phone_action(http[b], person, minted, "scan")
        assert scan.status_code == 200, scan.text
        scanned = await receive(ws)
        confirm = await phone_action(http[c], person, minted, "confirm")
        assert confirm.status_code == 204, confirm.text
        after, code = await rest(ws)
        polled = await poll
    finally:
        if poll is not None and not poll.done():
            poll.cancel()
        await ws.close()
    return Login(route, person, first, scanned, after, code, polled)


async def check_logins(logins: Sequence[Login], processes: Sequence[GatewayProcess]) -> None:
    """Each desktop got exactly one token, from the socket or from the long-poll, never both; the loser
    was told (4409, or `delivered`); every token is valid on any process and names the scanner."""
    jwks = RemoteJwks(f"{processes[-1].base_url}/.well-known/jwks.json")
    verifier = AccessTokenVerifier(jwks, issuer=PUBLIC_URL, audience="qrgate-sso")
    try:
        sids: set[str] = set()
        for done in logins:
            assert is_state(done.first, "pending"), done
            assert done.scanned == SCANNED, done
            token = done.socket_token or done.poll_token
            if done.socket_token is not None:
                assert [m["type"] for m in done.after_confirm] == ["confirmed"], done
                assert done.close == 1000, done
                assert done.polled[-1] == {"state": "delivered", "expires_in": done.polled[-1]["expires_in"]}, done
            else:
                assert (done.after_confirm, done.close) == ([], 4409), done
                assert done.polled[-1]["state"] == "confirmed", done
            assert token is not None
            assert [p for p in done.polled if "token" in p] == ([] if done.poll_token is None else [done.polled[-1]])
            claims = await verifier.verify(token["access_token"])
            assert claims["sub"] == done.person.id
            assert claims["amr"] == ["qr"]
            sids.add(claims["sid"])
        assert len(sids) == len(logins)  # one session per login
    finally:
        await jwks.aclose()


# Standalone Redis, three processes ---------------------------------------------------------------------


async def test_sixty_logins_spread_over_three_processes_each_deliver_one_token(group: GatewayCluster) -> None:
    processes = group.processes
    people = group.people
    async with http_clients(processes) as http:
        for i, person in enumerate(people):
            await phone_login(http[i % 3], person)  # a token from one process is good on every other
        routes = [route_of(i, 3) for i in range(60)]
        assert {r[:3] for r in routes} == set(itertools.product(range(3), repeat=3))
        assert all(r[0] != r[3] for r in routes)
        logins = await asyncio.gather(
            *(login(route, processes, http, people[i % len(people)]) for i, route in enumerate(routes))
        )
    await check_logins(logins, processes)
    assert group.tracebacks() == []


async def test_kill_9_between_scan_and_confirm_the_desktop_finishes_elsewhere_once(group: GatewayCluster) -> None:
    victim = group.spare()
    processes = group.processes
    person = group.people[0]
    async with http_clients([*processes, victim]) as http:
        await phone_login(http[1], person)
        # Two desktops wait on the victim: one is confirmed while it is away, one after it is back.
        away, back = [await mint(http[3]) for _ in range(2)]
        sockets = [await hello(victim, minted) for minted in (away, back)]
        for minted, ws in zip((away, back), sockets, strict=True):
            assert is_state(await receive(ws), "pending")
            assert (await phone_action(http[0], person, minted, "scan")).status_code == 200
            assert await receive(ws) == SCANNED

        assert victim.proc is not None
        victim.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(victim.proc.wait, 10)
        for ws in sockets:
            assert await rest(ws) == ([], None)  # no close frame: the process is gone

        assert (await phone_action(http[1], person, away, "confirm")).status_code == 204
        ws = await hello(processes[2], away)
        assert is_state(await receive(ws), "confirmed", scanned=True)  # the current state first...
        messages, code = await rest(ws)
        assert ([m["type"] for m in messages], code) == (["confirmed"], 1000)  # ...then the result, once

        ws = await hello(processes[0], back)
        assert is_state(await receive(ws), "scanned", scanned=True)
        assert (await phone_action(http[2], person, back, "confirm")).status_code == 204
        messages, code = await rest(ws)
        assert ([m["type"] for m in messages], code) == (["confirmed"], 1000)

        for minted in (away, back):  # delivered exactly once: every process says so now
            for process, client in zip(processes, http, strict=False):
                assert await rest(await hello(process, minted)) == ([], 4409)
                polled = await long_poll_until_done(client, minted)
                assert [p["state"] for p in polled] == ["delivered"]
    assert group.tracebacks() == []


def subscribers(redis: RedisServer, minted: Json) -> int:
    """How many connections (one per process at most) listen on the QR's wake-up channel."""
    with redis.client() as client:
        reply = command(client, "PUBSUB", "SHARDNUMSUB", f"qrgate:{{qr:{minted['qr_id']}}}:wake")
    return int(reply[1])


async def test_sigterm_closes_waiting_desktops_1001_and_they_finish_elsewhere(
    group: GatewayCluster, module_redis: RedisServer
) -> None:
    victim = group.spare()
    processes = group.processes
    person = group.people[1]
    async with http_clients([*processes, victim]) as http:
        await phone_login(http[2], person)
        minted = [await mint(http[i % 3]) for i in range(6)]
        sockets = [await hello(victim, m) for m in minted]
        for ws in sockets:
            assert is_state(await receive(ws), "pending")
        for m, ws in list(zip(minted, sockets, strict=True))[:3]:  # half of them are scanned
            assert (await phone_action(http[1], person, m, "scan")).status_code == 200
            assert await receive(ws) == SCANNED
        # A desktop on the fallback waits in a long-poll on the victim too.
        polled = await mint(http[0])
        poll = asyncio.create_task(
            http[3].get(f"/v1/qr/{polled['qr_id']}/state", params={"wait": 30}, headers=bearer(polled["waiter_token"]))
        )

        async def polling() -> bool:
            return subscribers(module_redis, polled) == 1

        await eventually(polling, "the long-poll to wait")

        assert victim.proc is not None
        victim.proc.send_signal(signal.SIGTERM)
        closed = await asyncio.gather(*(rest(ws) for ws in sockets))
        assert closed == [([], 1001)] * 6
        # The long-poll answers at once with the current state (it does not hold the drain for 30 s).
        answer = await poll
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"state": "pending", "expires_in": answer.json()["expires_in"]}
        assert await asyncio.to_thread(victim.proc.wait, 20) in (0, -signal.SIGTERM)

        again = [await hello(processes[i % 3], m) for i, m in enumerate(minted)]
        for i, ws in enumerate(again):
            first = await receive(ws)
            assert is_state(first, "scanned", scanned=True) if i < 3 else is_state(first, "pending"), first
        for i, (m, ws) in enumerate(zip(minted, again, strict=True)):
            if i >= 3:
                assert (await phone_action(http[0], person, m, "scan")).status_code == 200
                assert await receive(ws) == SCANNED
            assert (await phone_action(http[i % 3], person, m, "confirm")).status_code == 204
        results = await asyncio.gather(*(rest(ws) for ws in again))
        for messages, code in results:
            assert ([m["type"] for m in messages], code) == (["confirmed"], 1000)
    assert "Traceback" not in victim.log_path.read_text()
    assert group.tracebacks() == []


# Redis Cluster and Sentinel, two processes each ----------------------------------------------------------

MASTERS = 3


def shard_of(qr_id: str) -> int:
    return key_slot(f"qrgate:{{qr:{qr_id}}}".encode()) * MASTERS // 16384


async def test_logins_on_a_three_master_redis_cluster(redis_cluster: RedisClusterGroup, tmp_path: Path) -> None:
    cluster = GatewayCluster(tmp_path, redis_cluster.url, size=2)
    people = cluster.start(people=2)
    try:
        processes = cluster.processes
        async with http_clients(processes) as http:
            for i, person in enumerate(people):
                await phone_login(http[i], person)
            # Enough QR codes that every master holds some (their wake-up channels live there too).
            minted: list[Json] = []
            while len(minted) < 16 or len({shard_of(m["qr_id"]) for m in minted}) < MASTERS:
                minted.append(await mint(http[len(minted) % 2]))
            logins = await asyncio.gather(
                *(login(route_of(i, 2), processes, http, people[i % 2], m) for i, m in enumerate(minted))
            )
        await check_logins(logins, processes)
        assert cluster.tracebacks() == []
    finally:
        cluster.stop()


@pytest.fixture
def sentinel_group() -> Iterator[RedisSentinelGroup]:
    """A private Sentinel group (master, replica, three sentinels): the failover kills its master."""
    need_redis_server()
    with RedisSentinelGroup() as group:
        yield group


def master_port(group: RedisSentinelGroup, sentinel_port: int) -> int:
    with sync_client(sentinel_port) as client:
        address = command(client, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", group.service_name)
    return int(address[1])


async def readiness(http: Sequence[httpx.AsyncClient]) -> list[int]:
    return [(await client.get("/readyz")).status_code for client in http]


async def test_logins_on_sentinel_and_through_a_failover(sentinel_group: RedisSentinelGroup, tmp_path: Path) -> None:
    cluster = GatewayCluster(tmp_path, sentinel_group.url, size=2)
    people = cluster.start(people=2)
    try:
        processes = cluster.processes
        async with http_clients(processes) as http:
            for i, person in enumerate(people):
                await phone_login(http[i], person)
            logins = await asyncio.gather(*(login(route_of(i, 2), processes, http, people[i % 2]) for i in range(8)))
            await check_logins(logins, processes)

            # Desktops wait (half of them scanned); then the master dies and Sentinel promotes the replica.
            person = people[0]
            desktops = [Desktop(await mint(http[i % 2]), processes) for i in range(6)]
            for i, desktop in enumerate(desktops):
                assert is_state(await desktop.connect(i % 2) or {}, "pending")
            for desktop in desktops[:3]:
                assert (await phone_action(http[1], person, desktop.minted, "scan")).status_code == 200
                assert desktop.ws is not None
                message = await receive(desktop.ws)
                desktop.sessions[-1].append(message)
                assert message == SCANNED

            sentinels = [s.port for s in sentinel_group.sentinels]
            assert master_port(sentinel_group, sentinels[0]) == sentinel_group.master.port

            async def replicated() -> bool:  # replication is asynchronous: let the replica catch up first
                return replication_offset(sentinel_group.replica.port) >= replication_offset(sentinel_group.master.port)

            await eventually(replicated, "the replica to catch up")
            old_master = sentinel_group.master.proc
            assert old_master is not None
            old_master.kill()
            await asyncio.to_thread(old_master.wait, 10)

            async def not_ready() -> bool:  # until the sentinels agree it is down (2 s) and promote
                return 503 in await readiness(http)

            await eventually(not_ready, "/readyz to fail while there is no master")

            async def promoted() -> bool:
                agreed = all(master_port(sentinel_group, p) == sentinel_group.replica.port for p in sentinels)
                return agreed and await readiness(http) == [200, 200]

            await eventually(promoted, "the replica to be promoted and the gateways to be ready", timeout=60)

            for i, desktop in enumerate(desktops):
                if i >= 3:
                    response = await phone_action(http[i % 2], person, desktop.minted, "scan")
                    assert response.status_code == 200, response.text
                response = await phone_action(http[(i + 1) % 2], person, desktop.minted, "confirm")
                assert response.status_code == 204, response.text
            tokens = await asyncio.gather(*(desktop.finish() for desktop in desktops))
            for desktop, token in zip(desktops, tokens, strict=True):
                assert token is not None, (desktop.sessions, desktop.closes)
                assert desktop.closes[-1] == 1000
                for session in desktop.sessions:  # every connection starts with the current state
                    assert session == [] or session[0]["type"] == "state", desktop.sessions
                assert [m["type"] for m in desktop.messages].count("confirmed") == 1
        assert cluster.tracebacks() == []
    finally:
        cluster.stop()

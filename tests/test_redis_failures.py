"""Redis goes away under two gateway processes with desktops waiting, and comes back.

What the code does, precisely: while Redis is down, requests that need it answer 503 problem+json
`store_unavailable` with Retry-After, /readyz answers 503, and a desktop that connects is closed with
1013; a desktop that was already waiting keeps its socket open and hears nothing (nothing can change
without the store). When Redis is back the fan-out re-subscribes and wakes every waiter, which reads
the state again: with the data restored the logins simply go on; with Redis restarted empty the QR
codes are gone, so the waiting desktops are closed with 4404 (mint anew) and phones must log in again.
No gateway process is restarted.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from tests.support.redis_procs import RedisServer
from tests.support.scale_out import (
    SCANNED,
    GatewayCluster,
    Json,
    Person,
    bearer,
    close_sockets,
    eventually,
    hello,
    http_clients,
    is_state,
    mint,
    nothing_pending,
    phone_action,
    phone_login,
    receive,
    rest,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]  # slow: `qrgate serve` and redis-server processes


@pytest.fixture(autouse=True)
async def _close_sockets() -> AsyncIterator[None]:
    yield
    await close_sockets()


@pytest.fixture(scope="module")
def group(module_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayCluster]:
    cluster = GatewayCluster(tmp_path_factory.mktemp("redis-failures"), module_redis.url, size=2)
    try:
        cluster.start(people=2)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def http(group: GatewayCluster) -> AsyncIterator[list[httpx.AsyncClient]]:
    async with http_clients(group.processes) as clients:
        yield clients


async def ready(http: Sequence[httpx.AsyncClient]) -> bool:
    return [(await client.get("/readyz")).status_code for client in http] == [200] * len(http)


def assert_store_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, (response.request.url, response.text)
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) >= 1
    body = response.json()
    assert (body["status"], body["code"]) == (503, "store_unavailable")


async def waiting_desktops(
    group: GatewayCluster, http: Sequence[httpx.AsyncClient], person: Person, count: int, scanned: int
) -> tuple[list[Json], list[ClientConnection]]:
    """`count` desktops waiting, alternately on each process; the first `scanned` of them scanned by `person`."""
    minted = [await mint(http[i % 2]) for i in range(count)]
    sockets = [await hello(group.processes[i % 2], m) for i, m in enumerate(minted)]
    for ws in sockets:
        assert is_state(await receive(ws), "pending")
    for m, ws in list(zip(minted, sockets, strict=True))[:scanned]:
        assert (await phone_action(http[1], person, m, "scan")).status_code == 200
        assert await receive(ws) == SCANNED
    return minted, sockets


async def test_outage_answers_503_keeps_waiting_sockets_and_service_resumes(
    module_redis: RedisServer, group: GatewayCluster, http: list[httpx.AsyncClient]
) -> None:
    person = group.people[0]
    await phone_login(http[0], person)
    minted, sockets = await waiting_desktops(group, http, person, count=4, scanned=2)
    with module_redis.client() as sync:
        sync.save()  # what the restarted server will load: this test restarts Redis with its data
    module_redis.stop()
    try:
        probes = await asyncio.gather(*(client.get("/readyz") for client in http))
        for probe in probes:
            assert probe.status_code == 503
            assert probe.json()["checks"]["store"] == "unavailable"
            assert probe.json()["checks"]["database"] == "ok"
        for client in http:
            assert (await client.get("/healthz")).status_code == 200  # alive: no reason to restart it
        login = {"identifier": person.identity["phone"], "password": "Passw0rd!x", "client_id": "mobile-app"}
        refused = await asyncio.gather(
            http[0].post("/v1/qr", json={"client_id": "withholding-desktop"}),
            http[1].get(f"/v1/qr/{minted[0]['qr_id']}/state", headers=bearer(minted[0]["waiter_token"])),
            http[1].get(f"/v1/qr/{minted[2]['qr_id']}.svg"),
            phone_action(http[0], person, minted[2], "scan"),
            phone_action(http[1], person, minted[0], "confirm"),
            http[0].delete(f"/v1/qr/{minted[1]['qr_id']}", headers=bearer(minted[1]["waiter_token"])),
            http[1].post("/v1/captcha"),
            http[0].post("/v1/login/password", json=login),
        )
        for response in refused:
            assert_store_unavailable(response)
        # A desktop that connects now is told to come back later...
        latecomers = [await hello(process, minted[3]) for process in group.processes]
        assert await asyncio.gather(*(rest(ws) for ws in latecomers)) == [([], 1013)] * 2
        # ...and the ones already waiting stay connected, and hear nothing (nothing can change).
        assert await asyncio.gather(*(nothing_pending(ws) for ws in sockets)) == [True] * 4
    finally:
        module_redis.start()  # same port; it loads the data saved above

    await eventually(lambda: ready(http), "the gateways to be ready again")
    # The same sockets, still open, get the rest of their logins.
    for i, (m, ws) in enumerate(zip(minted, sockets, strict=True)):
        if i >= 2:
            assert (await phone_action(http[i % 2], person, m, "scan")).status_code == 200
            assert await receive(ws) == SCANNED
        assert (await phone_action(http[(i + 1) % 2], person, m, "confirm")).status_code == 204
    for ws in sockets:
        messages, code = await rest(ws)
        assert ([m["type"] for m in messages], code) == (["confirmed"], 1000)
    # And a login that starts now works from end to end.
    fresh = await mint(http[1])
    ws = await hello(group.processes[0], fresh)
    assert is_state(await receive(ws), "pending")
    assert (await phone_action(http[1], person, fresh, "scan")).status_code == 200
    assert await receive(ws) == SCANNED
    assert (await phone_action(http[0], person, fresh, "confirm")).status_code == 204
    messages, code = await rest(ws)
    assert ([m["type"] for m in messages], code) == (["confirmed"], 1000)
    assert group.tracebacks() == []


async def test_restart_without_data_closes_waiting_sockets_4404_and_new_logins_work(
    module_redis: RedisServer, group: GatewayCluster, http: list[httpx.AsyncClient]
) -> None:
    person = group.people[1]
    await phone_login(http[1], person)
    minted, sockets = await waiting_desktops(group, http, person, count=2, scanned=1)
    module_redis.stop()
    (module_redis.process.dir / "dump.rdb").unlink(missing_ok=True)
    module_redis.start()  # empty: every QR session and refresh session is gone
    for ws in sockets:
        assert await rest(ws) == ([], 4404)  # woken after the re-subscribe, it finds its QR gone
    await eventually(lambda: ready(http), "the gateways to be ready again")
    gone = await phone_action(http[0], person, minted[0], "confirm")
    assert (gone.status_code, gone.json()["code"]) == (401, "session_ended")
    await phone_login(http[0], person)
    unknown = await phone_action(http[0], person, minted[1], "scan")
    assert (unknown.status_code, unknown.json()["code"]) == (404, "qr_not_found")

    fresh = await mint(http[0])
    ws = await hello(group.processes[1], fresh)
    assert is_state(await receive(ws), "pending")
    assert (await phone_action(http[0], person, fresh, "scan")).status_code == 200
    assert await receive(ws) == SCANNED
    assert (await phone_action(http[1], person, fresh, "confirm")).status_code == 204
    messages, code = await rest(ws)
    assert ([m["type"] for m in messages], code) == (["confirmed"], 1000)
    assert group.tracebacks() == []


async def test_redis_timeout_and_retries_are_settings(tmp_path: Path) -> None:
    """QRGATE_REDIS_TIMEOUT and QRGATE_REDIS_RETRIES reach the store. Redis stops answering for 3 s
    (CLIENT PAUSE): a gateway told to wait 0.3 s and not retry answers a mint 503 at once, while one on
    the defaults (2 s, 3 retries; the mint's write is safe to send again) rides the pause out."""
    with RedisServer() as redis_server:
        tuned = GatewayCluster(
            tmp_path / "tuned", redis_server.url, size=1, QRGATE_REDIS_TIMEOUT="0.3", QRGATE_REDIS_RETRIES="0"
        )
        patient = GatewayCluster(tmp_path / "default", redis_server.url, size=1)
        try:
            for group in (tuned, patient):
                group.root.mkdir()
                group.start()
            async with http_clients([*tuned.processes, *patient.processes]) as (quick, slow):
                await mint(quick)  # both are connected before the pause
                await mint(slow)
                with redis_server.client() as client:
                    client.client_pause(3000)
                assert_store_unavailable(
                    await quick.post("/v1/qr", json={"client_id": "withholding-desktop", "device_name": "PC-01"})
                )
                await mint(slow)  # 201 once Redis answers again
                await mint(quick)  # and the tuned one is back too
        finally:
            tuned.stop()
            patient.stop()

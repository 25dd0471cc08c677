"""The database goes away while the gateway runs: 503 problem+json with Retry-After (never a 500),
readiness fails, and service resumes by itself when the database is back."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.conftest import new_identity
from tests.support.databases import POSTGRES, create_postgres_database, drop_postgres_database
from tests.support.gateway_server import ThreadedGateway, free_port, make_settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def pg_gateway(tmp_path: Path) -> Iterator[tuple[ThreadedGateway, str]]:
    url, name = create_postgres_database()
    port = free_port()
    server = ThreadedGateway(make_settings(tmp_path, port, database_url=url), port).start()
    try:
        yield server, name
    finally:
        server.stop()
        drop_postgres_database(name)


async def admin(sql: str, *args: str) -> None:
    connection = await asyncpg.connect(POSTGRES, timeout=5)
    try:
        await connection.execute(sql, *args)
    finally:
        await connection.close()


async def test_database_outage_is_503_and_recovers(pg_gateway: tuple[ThreadedGateway, str]) -> None:
    gateway, name = pg_gateway
    identity = new_identity()
    await asyncio.to_thread(lambda: gateway.add_person(**identity))
    body = {"identifier": identity["phone"], "password": identity["password"], "client_id": "web"}
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=20) as http:
        assert (await http.post("/v1/login/password", json=body)).status_code == 200
        # The database disappears (every connection is cut; new ones are refused).
        await admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
        down = await http.post("/v1/login/password", json=body)
        assert down.status_code == 503, down.text
        assert down.headers["content-type"] == "application/problem+json"
        assert down.json()["code"] == "database_unavailable"
        assert int(down.headers["retry-after"]) > 0
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"] == "unavailable"
        # QR codes need no database: desktops can still mint.
        assert (await http.post("/v1/qr", json={"client_id": "withholding-desktop"})).status_code == 201
        # Back again: no restart needed.
        await admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        again = await http.post("/v1/login/password", json=body)
        assert again.status_code == 200, again.text
        assert (await http.get("/readyz")).status_code == 200

"""Fresh databases for directory tests: a SQLite file, or a new database on the PostgreSQL server
(127.0.0.1:5432, trust auth; QRGATE_TEST_POSTGRES overrides), dropped afterwards."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

POSTGRES = os.environ.get("QRGATE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def need(reason: str) -> None:
    """A missing service skips locally, and fails in CI."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must provide this: {reason}")
    pytest.skip(reason)


@asynccontextmanager
async def fresh_database(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    """An SQLAlchemy async URL of an empty database of `kind` ("sqlite" or "postgresql")."""
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'directory.db'}"
        return
    import asyncpg

    name = "qrgate_" + secrets.token_hex(6)
    try:
        admin = await asyncpg.connect(POSTGRES, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        need(f"PostgreSQL is not reachable at {POSTGRES}: {exc}")
    try:
        await admin.execute(f"CREATE DATABASE \"{name}\" ENCODING 'UTF8' TEMPLATE template0")
        base = POSTGRES.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        yield f"{base}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def create_postgres_database() -> tuple[str, str]:
    """For fixtures outside an event loop: a new empty database -> (SQLAlchemy URL, name)."""
    import asyncio

    import asyncpg

    name = "qrgate_" + secrets.token_hex(6)

    async def create() -> None:
        admin = await asyncpg.connect(POSTGRES, timeout=5)
        try:
            await admin.execute(f"CREATE DATABASE \"{name}\" ENCODING 'UTF8' TEMPLATE template0")
        finally:
            await admin.close()

    try:
        asyncio.run(create())
    except (OSError, asyncpg.PostgresError) as exc:
        need(f"PostgreSQL is not reachable at {POSTGRES}: {exc}")
    base = POSTGRES.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return f"{base}/{name}", name


def drop_postgres_database(name: str) -> None:
    import asyncio

    import asyncpg

    async def drop() -> None:
        admin = await asyncpg.connect(POSTGRES, timeout=5)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    asyncio.run(drop())

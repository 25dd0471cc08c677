from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.accounts import SmsCodes, sms_codes
from tests.support.gateway_server import ThreadedGateway, free_port, make_settings

# Fixtures shared by many test modules: private Redis processes, the units stack, the browser.
pytest_plugins = ("tests.support.fixtures", "tests.support.units_fixtures", "tests.support.browser_fixtures")

_counter = itertools.count(1)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedGateway]:
    """One gateway on its embedded defaults (memory store, SQLite), shared by the session."""
    port = free_port()
    server = ThreadedGateway(make_settings(tmp_path_factory.mktemp("gateway"), port), port).start()
    yield server
    server.stop()


def new_identity() -> dict[str, str]:
    """A fresh, valid person (unique phone, login name and resident ID number)."""
    n = next(_counter)
    body = f"1101051990{(n // 28) % 12 + 1:02d}{n % 28 + 1:02d}{(n // 336) % 1000:03d}"  # a real birth date
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    check = "10X98765432"[sum(int(d) * w for d, w in zip(body, weights, strict=True)) % 11]
    return {
        "login_name": f"tester_{n}",
        "phone": f"139{n:08d}",
        "name": "张三",
        "id_type": "resident_id",
        "id_number": body + check,
        "password": "Passw0rd!x",
    }


@pytest.fixture
def make_person(gateway: ThreadedGateway) -> Callable[..., dict[str, str]]:
    def factory(**overrides: str) -> dict[str, str]:
        identity = {**new_identity(), **overrides}
        fields = {k: v for k, v in identity.items() if k != "id"}
        identity["id"] = gateway.add_person(**fields)
        return identity

    return factory


def artifacts_dir() -> Path:
    path = Path("test-artifacts")
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture
async def http(gateway: ThreadedGateway) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the shared gateway (room for the tests that fire 50 requests at once)."""
    limits = httpx.Limits(max_connections=60)
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=20, limits=limits) as client:
        yield client


@pytest.fixture
def codes() -> Iterator[SmsCodes]:
    """The SMS codes the dev sender logs, as the tests' way to read them."""
    with sms_codes() as handler:
        yield handler

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.accounts import SmsCodes, sms_codes
from tests.support.gateway_server import ThreadedGateway, free_port, make_settings

# Fixtures shared by many test modules: private Redis processes, the units stack, the browser.
pytest_plugins = (
    "tests.support.fixtures",
    "tests.support.units_fixtures",
    "tests.support.browser_fixtures",
    "tests.support.oidc",
)

_counter = itertools.count(1)

# Test servers, in this process and the `qrgate serve` ones it starts: no operations port unless a test
# sets one (many gateways run side by side, and would all want the default 9100), and /metrics on the
# public port, where most tests read it. tests/test_serving.py runs the defaults' operations port.
os.environ.setdefault("QRGATE_METRICS_PORT", "0")
os.environ.setdefault("QRGATE_METRICS_PUBLIC", "true")

# The fast tier (`scripts/test --fast`, i.e. -m "not slow") runs in-process only: the memory store, SQLite,
# and Starlette's TestClient or the in-thread uvicorn `ThreadedGateway`. A test is marked `slow` here when
# it uses one of these fixtures (directly or through another fixture), or when it is a parametrized case
# on a real server; modules that start servers themselves say `pytestmark = pytest.mark.slow`.
SLOW_FIXTURES = frozenset(
    {
        # tests/support/fixtures.py: private redis-server processes
        "redis_server",
        "module_redis",
        "redis_cluster",
        "redis_sentinel",
        # tests/support/browser_fixtures.py: headless Chromium
        "browser",
        "page",
        # tests/support/units_fixtures.py: `qrgate serve` and `qrgate serve-units` subprocesses
        "units_stack",
        # fixtures of single modules that start `qrgate serve` or PostgreSQL databases
        "logged_gateway",  # test_operations.py
        "pg_gateway",  # test_database_failures.py
        "topology",  # test_deploy.py
    }
)
SLOW_PARAMS = frozenset({"postgresql", "redis", "cluster"})  # engine/kind/backend cases on real servers


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        params = list(callspec.params.values()) if callspec is not None else []
        if fixtures & SLOW_FIXTURES or any(isinstance(v, str) and v in SLOW_PARAMS for v in params):
            item.add_marker(pytest.mark.slow)


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

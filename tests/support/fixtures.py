"""Pytest fixtures for private Redis processes (load with `pytest_plugins = ("tests.support.fixtures",)`).

- `redis_server` (function scope): a fresh standalone `RedisServer` with `.url`, `.port`, `.stop()`,
  `.start()` (same port, empty data) and `.restart()`.
- `redis_cluster` (session scope): a `RedisClusterGroup` of three masters, `.url` is redis+cluster://.
- `redis_sentinel` (session scope): a `RedisSentinelGroup` (master, replica, three sentinels), `.url` is
  redis+sentinel://.../mymaster.

Without `redis-server` on PATH they skip, except under CI=true, where they fail.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.redis_procs import (
    RedisClusterGroup,
    RedisSentinelGroup,
    RedisServer,
    in_ci,
    redis_server_binary,
)


def require_redis_server() -> None:
    if redis_server_binary() is not None:
        return
    if in_ci():
        pytest.fail("redis-server is not on PATH, and CI=true requires the Redis tests to run")
    pytest.skip("redis-server is not on PATH")


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    require_redis_server()
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def module_redis() -> Iterator[RedisServer]:
    """One standalone server for a whole test module (its tests share the gateways started on it)."""
    require_redis_server()
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterGroup]:
    require_redis_server()
    with RedisClusterGroup() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[RedisSentinelGroup]:
    require_redis_server()
    with RedisSentinelGroup() as group:
        yield group

"""Redis clients from URLs (redis-py >= 8, `redis.asyncio`): standalone, Sentinel or Cluster.

URL forms accepted by `RedisStore.from_url` (and `client_factory`):

    redis://[[user]:password@]host[:port][/db][?option=value...]      standalone
    rediss://...                                                       standalone over TLS
    redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[?db=0&sentinel_password=...]
                                                                       Sentinel: the service's master
    redis+cluster://[[user]:password@]host:port[,host:port...]        Redis Cluster (any reachable nodes)
    rediss+cluster://...                                               Redis Cluster over TLS

Credentials in the URL are for the Redis servers; `sentinel_password` (and `sentinel_username`) are
for the Sentinels themselves. Every client gets explicit socket timeouts and a retry policy
(exponential backoff, a few attempts, on connection and timeout errors): redis-py has none by default.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeAlias, cast
from urllib.parse import parse_qs, unquote, urlsplit

from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff

log = logging.getLogger("qrgate.state.redis")

RedisClient: TypeAlias = Redis | RedisCluster
ClientFactory: TypeAlias = Callable[[], RedisClient]

SOCKET_TIMEOUT = 2.0
CONNECT_TIMEOUT = 2.0
RETRIES = 3

UNAVAILABLE: tuple[type[BaseException], ...] = (
    rx.ConnectionError,  # also BusyLoadingError, MaxConnectionsError, MasterNotFoundError
    rx.TimeoutError,
    rx.ClusterError,  # ClusterDownError, MasterDownError
    rx.TryAgainError,
    rx.ReadOnlyError,  # a demoted master during a failover
    rx.RedisClusterException,  # no reachable node, slot not covered
    OSError,
)


def default_retry(retries: int = RETRIES) -> Retry:
    return Retry(
        ExponentialBackoff(cap=0.5, base=0.05), retries, supported_errors=(rx.ConnectionError, rx.TimeoutError)
    )


def _hosts(netloc: str, default_port: int) -> tuple[str | None, str | None, list[tuple[str, int]]]:
    """`[user[:password]@]host:port,host:port` -> (user, password, [(host, port), ...])."""
    user: str | None = None
    password: str | None = None
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        name, _, secret = userinfo.partition(":")
        user = unquote(name) or None
        password = unquote(secret) if secret else None
    hosts: list[tuple[str, int]] = []
    for item in netloc.split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("["):  # [ipv6]:port
            host, _, rest = item[1:].partition("]")
            port = rest.removeprefix(":")
        else:
            host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
        try:
            hosts.append((host, int(port) if port else default_port))
        except ValueError:
            raise ValueError(f"bad port in Redis URL host {item!r}") from None
    if not hosts:
        raise ValueError("the Redis URL names no host")
    return user, password, hosts


def _single(query: dict[str, list[str]], name: str) -> str | None:
    values = query.pop(name, None)
    return values[-1] if values else None


def client_factory(
    url: str,
    *,
    socket_timeout: float = SOCKET_TIMEOUT,
    socket_connect_timeout: float = CONNECT_TIMEOUT,
    retries: int = RETRIES,
    max_connections: int | None = None,
) -> ClientFactory:
    """A function that builds a new client for `url` each time it is called (see the module docs)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    common: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_connect_timeout,
        "socket_keepalive": True,
    }

    if scheme in ("redis", "rediss", "unix"):
        standalone = dict(common)
        if max_connections is not None:
            standalone["max_connections"] = max_connections

        def make_standalone() -> RedisClient:
            return Redis.from_url(url, retry=default_retry(retries), **standalone)

        return make_standalone

    query = parse_qs(parts.query)
    if scheme in ("redis+cluster", "rediss+cluster"):
        user, password, hosts = _hosts(parts.netloc, 6379)
        if query:
            raise ValueError(f"unsupported redis+cluster URL options: {sorted(query)}")
        cluster_kwargs = dict(common)
        if max_connections is not None:
            cluster_kwargs["max_connections"] = max_connections

        def make_cluster() -> RedisClient:
            return RedisCluster(
                startup_nodes=[ClusterNode(host, port) for host, port in hosts],
                username=user,
                password=password,
                ssl=scheme == "rediss+cluster",
                retry=default_retry(retries),
                **cluster_kwargs,
            )

        return make_cluster

    if scheme == "redis+sentinel":
        user, password, hosts = _hosts(parts.netloc, 26379)
        service = parts.path.strip("/")
        if not service or "/" in service:
            raise ValueError("a redis+sentinel URL ends with /service_name")
        db = int(_single(query, "db") or 0)
        sentinel_password = _single(query, "sentinel_password")
        sentinel_username = _single(query, "sentinel_username")
        if query:
            raise ValueError(f"unsupported redis+sentinel URL options: {sorted(query)}")
        sentinel_kwargs: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_connect_timeout,
            "decode_responses": True,
        }
        if sentinel_password is not None:
            sentinel_kwargs["password"] = sentinel_password
        if sentinel_username is not None:
            sentinel_kwargs["username"] = sentinel_username
        master_kwargs = dict(common, db=db, username=user, password=password)
        if max_connections is not None:
            master_kwargs["max_connections"] = max_connections

        def make_sentinel_master() -> RedisClient:
            sentinel = cast(Any, Sentinel)(hosts, sentinel_kwargs=sentinel_kwargs)
            return cast(Redis, sentinel.master_for(service, retry=default_retry(retries), **master_kwargs))

        return make_sentinel_master

    raise ValueError("the Redis URL must start with redis://, rediss://, redis+sentinel:// or redis+cluster://")


async def close_client(client: RedisClient) -> None:
    """Close a client and everything it owns (for Sentinel: the connections to the sentinels too)."""
    await client.aclose()
    if isinstance(client, Redis):
        pool = client.connection_pool
        if isinstance(pool, SentinelConnectionPool):
            for sentinel in cast(Sentinel, pool.sentinel_manager).sentinels:
                await sentinel.aclose()


def text_of(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

"""Everything the state store takes from redis-py (`redis` >= 8, < 9), in one module, behind small types
of our own: nothing else in `gateway.state` imports redis-py.

- `parse_redis_url` reads the URL forms below into a `RedisTarget`: the addresses, credentials, database
  and TLS settings the wire (`wire`, `connections`) connects with. The wire makes its own connections,
  so it needs no redis-py client, only what the URL says.
- `SentinelMaster` asks the Sentinels where the service's master is (redis-py's `Sentinel`).
- `slot_of` is a key's Cluster slot (redis-py's CRC16); the slot map itself is `slots.SlotMap`.
- `exceptions` are the error types every Redis failure is reported as; `UNAVAILABLE` the ones that mean
  "Redis cannot answer now" (503).
- `Backoff` is the one strategy type of every retry and reconnect wait (`redis.backoff`).

Only redis-py's public API is used. What a client object knows only through its internals (a Cluster's
nodes, a Sentinel's addresses, the settings a URL gave) is kept here, from the URL, instead.

URL forms accepted by `RedisStore.from_url` (and `parse_redis_url`):

    redis://[[user]:password@]host[:port][/db][?option=value...]      standalone
    rediss://...                                                       standalone over TLS
    unix://[[user]:password@]/path/to/socket[?db=...]                  standalone over a Unix socket
    redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[?db=0&sentinel_password=...]
                                                                       Sentinel: the service's master
    redis+cluster://[[user]:password@]host:port[,host:port...]        Redis Cluster (any reachable nodes)
    rediss+cluster://...                                               Redis Cluster over TLS

Credentials in the URL are for the Redis servers; `sentinel_password` (and `sentinel_username`) are
for the Sentinels themselves. Standalone URLs take redis-py's TLS options (`ssl_ca_certs`,
`ssl_certfile`, `ssl_keyfile`, `ssl_cert_reqs`, `ssl_check_hostname`, ...), with its defaults: the
server's certificate and host name are checked. Their other redis-py options (`socket_timeout`, ...)
have no effect: the settings QRGATE_REDIS_TIMEOUT and friends govern the wire.
"""

from __future__ import annotations

import contextlib
import ssl
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeAlias, cast
from urllib.parse import parse_qs, unquote, urlsplit

from redis import exceptions as exceptions
from redis.asyncio.sentinel import Sentinel
from redis.backoff import EqualJitterBackoff, ExponentialBackoff
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

Address: TypeAlias = tuple[str, int] | str  # (host, port), or a Unix socket path

SOCKET_TIMEOUT = 2.0
CONNECT_TIMEOUT = 2.0
RETRIES = 3
SLOTS = REDIS_CLUSTER_HASH_SLOTS

UNAVAILABLE: tuple[type[BaseException], ...] = (
    exceptions.ConnectionError,  # also BusyLoadingError, MaxConnectionsError, MasterNotFoundError
    exceptions.TimeoutError,
    exceptions.ClusterError,  # ClusterDownError, MasterDownError
    exceptions.TryAgainError,
    exceptions.ReadOnlyError,  # a demoted master during a failover
    exceptions.RedisClusterException,  # no reachable node, slot not covered
    OSError,
)


# Backoff --------------------------------------------------------------------------------------


class Backoff(Protocol):
    """redis-py's backoff strategy interface (`redis.backoff.AbstractBackoff`): the wait in seconds
    after `failures` failures in a row (1 for the first), and `reset` when a streak ends."""

    def compute(self, failures: int) -> float: ...

    def reset(self) -> None: ...


# redis-py's strategies wait `base * 2**failures` (capped), counting failures from 1 as its Retry does,
# so their `base` is half the first wait.

# Commands: 50 ms doubling to 500 ms, each wait drawn between half and all of that, so that the
# commands of many requests that failed together do not all come back at once.
COMMAND_BACKOFF_FIRST = 0.05
COMMAND_BACKOFF_CAP = 0.5
# Reconnects of the fan-out and of the Sentinel watch: 50 ms doubling to 2 s.
RECONNECT_BACKOFF_FIRST = 0.05
RECONNECT_BACKOFF_CAP = 2.0


def command_backoff(first: float = COMMAND_BACKOFF_FIRST, cap: float = COMMAND_BACKOFF_CAP) -> Backoff:
    """The wait before a command is sent again (the wire's retries)."""
    return EqualJitterBackoff(cap=cap, base=first / 2)


def reconnect_backoff(first: float = RECONNECT_BACKOFF_FIRST, cap: float = RECONNECT_BACKOFF_CAP) -> Backoff:
    """The wait before connecting again after a lost pub/sub connection (no jitter: one per process)."""
    return ExponentialBackoff(cap=cap, base=first / 2)


# Keys -----------------------------------------------------------------------------------------


def slot_of(key: str) -> int:
    """The Cluster slot of `key` (its hash tag's, if it has one)."""
    return key_slot(key.encode())


# URLs -----------------------------------------------------------------------------------------

_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
_FALSE = ("0", "F", "FALSE", "N", "NO")


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """TLS settings, with the meaning and the defaults redis-py gives its `ssl_*` options."""

    ca_certs: str | None = None
    ca_path: str | None = None
    ca_data: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    password: str | None = field(default=None, repr=False)
    cert_reqs: ssl.VerifyMode = ssl.CERT_REQUIRED
    check_hostname: bool = True
    min_version: ssl.TLSVersion | None = None
    ciphers: str | None = None
    include_verify_flags: tuple[ssl.VerifyFlags, ...] = ()
    exclude_verify_flags: tuple[ssl.VerifyFlags, ...] = ()

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        # check_hostname first: CERT_NONE is refused while it is on.
        context.check_hostname = self.check_hostname and self.cert_reqs != ssl.CERT_NONE
        context.verify_mode = self.cert_reqs
        for flag in self.include_verify_flags:
            context.verify_flags |= flag
        for flag in self.exclude_verify_flags:
            context.verify_flags &= ~flag
        if self.certfile or self.keyfile:
            context.load_cert_chain(certfile=cast(str, self.certfile), keyfile=self.keyfile, password=self.password)
        if self.ca_certs or self.ca_path or self.ca_data:
            context.load_verify_locations(cafile=self.ca_certs, capath=self.ca_path, cadata=self.ca_data)
        if self.min_version is not None:
            context.minimum_version = self.min_version
        if self.ciphers is not None:
            context.set_ciphers(self.ciphers)
        return context


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """What a Redis URL says: where the servers are and how to log in."""

    kind: Literal["standalone", "sentinel", "cluster"]
    # standalone: the server (or its Unix socket); sentinel: the Sentinels; cluster: the nodes to ask
    # for the slot map first
    addresses: tuple[Address, ...]
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    db: int = 0
    tls: TlsOptions | None = None
    service: str = ""  # sentinel: the service name
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)


def parse_redis_url(url: str) -> RedisTarget:
    """The target of a Redis URL (see the module docs); ValueError when it is not one."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("redis", "rediss", "unix"):
        return _standalone(url)
    query = parse_qs(parts.query)
    if scheme in ("redis+cluster", "rediss+cluster"):
        user, password, hosts = _hosts(parts.netloc, 6379)
        if query:
            raise ValueError(f"unsupported redis+cluster URL options: {sorted(query)}")
        tls = TlsOptions() if scheme == "rediss+cluster" else None
        return RedisTarget("cluster", tuple(hosts), username=user, password=password, tls=tls)
    if scheme == "redis+sentinel":
        user, password, hosts = _hosts(parts.netloc, 26379)
        service = parts.path.strip("/")
        if not service or "/" in service:
            raise ValueError("a redis+sentinel URL ends with /service_name")
        db = int(_last(query, "db") or 0)
        sentinel_password = _last(query, "sentinel_password")
        sentinel_username = _last(query, "sentinel_username")
        if query:
            raise ValueError(f"unsupported redis+sentinel URL options: {sorted(query)}")
        return RedisTarget(
            "sentinel",
            tuple(hosts),
            username=user,
            password=password,
            db=db,
            service=service,
            sentinel_username=sentinel_username,
            sentinel_password=sentinel_password,
        )
    raise ValueError("the Redis URL must start with redis://, rediss://, redis+sentinel:// or redis+cluster://")


def _standalone(url: str) -> RedisTarget:
    """redis://, rediss:// and unix:// as redis-py reads them (`Redis.from_url`): a query value wins
    over the path's database; the first of repeated query values counts."""
    parts = urlsplit(url)
    query = {name: values[0] for name, values in parse_qs(parts.query).items() if values}
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    db = 0
    if "db" in query:
        try:
            db = int(query["db"])
        except ValueError:
            raise ValueError("Invalid value for 'db' in the Redis URL") from None
    address: Address
    if parts.scheme.lower() == "unix":
        address = unquote(parts.path)
    else:
        address = (unquote(parts.hostname) if parts.hostname else "localhost", parts.port or 6379)
        if parts.path and "db" not in query:
            with contextlib.suppress(ValueError):  # redis-py ignores a path that is no number
                db = int(unquote(parts.path).replace("/", ""))
    tls = _tls_options(query) if parts.scheme.lower() == "rediss" else None
    return RedisTarget("standalone", (address,), username=username, password=password, db=db, tls=tls)


def _tls_options(query: dict[str, str]) -> TlsOptions:
    options: dict[str, Any] = {}
    for name, value in query.items():
        if not name.startswith("ssl_"):
            continue
        option = name.removeprefix("ssl_")
        if option in ("ca_certs", "ca_path", "ca_data", "certfile", "keyfile", "password", "ciphers"):
            options[option] = value
        elif option == "cert_reqs":
            if value not in _CERT_REQS:
                raise ValueError(f"Invalid SSL Certificate Requirements Flag: {value}")
            options[option] = _CERT_REQS[value]
        elif option == "check_hostname":
            options[option] = bool(value) and value.upper() not in _FALSE
        elif option == "min_version":
            options[option] = ssl.TLSVersion(int(value))
        elif option in ("include_verify_flags", "exclude_verify_flags"):
            options[option] = tuple(_verify_flag(flag) for flag in value.strip("[]").split(","))
        else:
            raise ValueError(f"unsupported TLS option in the Redis URL: {name}")
    return TlsOptions(**options)


def _verify_flag(name: str) -> ssl.VerifyFlags:
    try:
        return ssl.VerifyFlags[name.strip()]
    except KeyError:
        raise ValueError(f"Invalid ssl verify flag: {name.strip()}") from None


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


def _last(query: dict[str, list[str]], name: str) -> str | None:
    values = query.pop(name, None)
    return values[-1] if values else None


# Sentinel -------------------------------------------------------------------------------------


class SentinelMaster:
    """Where the Sentinels say the service's master is. redis-py's `Sentinel.discover_master` asks them
    in turn and takes an answer only from one that sees the master up (neither subjectively nor
    objectively down)."""

    def __init__(self, target: RedisTarget, *, socket_timeout: float, connect_timeout: float) -> None:
        sentinel_kwargs: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": connect_timeout,
            "decode_responses": True,
        }
        if target.sentinel_password is not None:
            sentinel_kwargs["password"] = target.sentinel_password
        if target.sentinel_username is not None:
            sentinel_kwargs["username"] = target.sentinel_username
        self.service = target.service
        # redis-py's Sentinel is not annotated
        self._sentinel: Any = cast(Any, Sentinel)(list(target.addresses), sentinel_kwargs=sentinel_kwargs)

    async def locate(self) -> Address:
        host, port = await self._sentinel.discover_master(self.service)
        return (str(host), int(port))

    async def aclose(self) -> None:
        """Close the connections to the Sentinels."""
        await self._sentinel.aclose()


def text_of(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

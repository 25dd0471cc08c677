"""Private Redis processes for tests: a standalone server, a 3-master Cluster, a Sentinel group.

Every process runs from its own temporary directory with persistence off, on a free port, and is
ready when it answers PING (polled, never a fixed sleep). `close()` terminates everything it started
and removes the directories; the classes are context managers too.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast

import redis

READY_TIMEOUT = 15.0
POLL = 0.02
SENTINEL_SERVICE = "mymaster"


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


def free_port(*, with_bus: bool = False) -> int:
    """A port free right now; with_bus: port + 10000 (the Cluster bus) is free too."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if not with_bus:
            return port
        if port + 10000 > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port found")


def wait_until(condition: Callable[[], bool], what: str, timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (redis.RedisError, OSError) as exc:
            last_error = exc
        time.sleep(POLL)
    raise TimeoutError(f"timed out waiting for {what} (last error: {last_error!r})")


@contextlib.contextmanager
def sync_client(port: int) -> Iterator[redis.Redis]:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2, decode_responses=True)
    try:
        yield client
    finally:
        client.close()


def command(client: redis.Redis, *args: Any) -> Any:
    """execute_command, typed."""
    return cast(Any, client).execute_command(*args)


def replication_offset(port: int) -> int:
    """The replication offset a server has reached (a master's own, or what a replica has applied)."""
    with sync_client(port) as client:
        info = client.info("replication")
    return int(info["master_repl_offset"])


def _ping(port: int) -> bool:
    with sync_client(port) as client:
        return bool(client.ping())


class RedisProcess:
    """One redis-server (or sentinel) process, restartable on the same port with the same config."""

    def __init__(self, directory: Path, port: int, args: list[str], *, sentinel_conf: str | None = None) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise FileNotFoundError("redis-server is not installed")
        self.binary = binary
        self.dir = directory
        self.port = port
        self.args = args
        self.sentinel_conf = sentinel_conf
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _command(self) -> list[str]:
        common = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        common += ["--logfile", str(self.dir / "redis.log"), "--daemonize", "no"]
        if self.sentinel_conf is not None:
            conf = self.dir / "sentinel.conf"
            if not conf.exists():  # the sentinel rewrites its own file: keep what it learnt on restart
                conf.write_text(self.sentinel_conf)
            return [self.binary, str(conf), "--sentinel", *common]
        return [self.binary, *common, "--save", "", "--appendonly", "no", *self.args]

    def start(self) -> None:
        if self.running:
            return
        self.proc = subprocess.Popen(
            self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.dir
        )
        try:
            wait_until(self._ready, f"redis on port {self.port}")
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            log = self.dir / "redis.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"redis on port {self.port} exited with {self.proc.returncode}:\n{tail}")
        return _ping(self.port)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self) -> contextlib.AbstractContextManager[redis.Redis]:
        return sync_client(self.port)


class _Group:
    """Owns a temporary directory and the processes started in it."""

    def __init__(self, prefix: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.processes: list[RedisProcess] = []

    def _spawn(self, name: str, port: int, args: list[str], sentinel_conf: str | None = None) -> RedisProcess:
        process = RedisProcess(self.root / name, port, args, sentinel_conf=sentinel_conf)
        self.processes.append(process)
        process.start()
        return process

    def close(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class RedisServer(_Group):
    """A standalone server: `.url`, `.stop()`, `.start()` (same port, empty data), `.restart()`."""

    def __init__(self, prefix: str = "qrgate-redis-") -> None:
        super().__init__(prefix)
        try:
            self.process = self._spawn("server", free_port(), self._arguments())
        except BaseException:
            self.close()
            raise

    def _arguments(self) -> list[str]:
        return []

    @property
    def port(self) -> int:
        return self.process.port

    @property
    def url(self) -> str:
        return self.process.url

    def start(self) -> None:
        self.process.start()

    def stop(self) -> None:
        self.process.stop()

    def restart(self) -> None:
        self.process.restart()

    def client(self) -> contextlib.AbstractContextManager[redis.Redis]:
        return self.process.client()


def write_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca.pem, server.pem, server.key)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qrgate test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    paths = (directory / "ca.pem", directory / "server.pem", directory / "server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


class RedisTlsServer(RedisServer):
    """A standalone server that also listens with TLS (`.tls_port`, certificate for 127.0.0.1 by the
    CA in `.ca_file`); the plain port is for the fixtures' own readiness checks."""

    def __init__(self) -> None:
        super().__init__("qrgate-redis-tls-")

    def _arguments(self) -> list[str]:
        self.ca_file, cert, key = write_tls_files(self.root / "tls")
        self.tls_port = free_port()
        args = ["--tls-port", str(self.tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key)]
        return [*args, "--tls-ca-cert-file", str(self.ca_file), "--tls-auth-clients", "no"]


class RedisClusterGroup(_Group):
    """Three masters (no replicas) sharing the 16384 slots; `.url` is a redis+cluster:// URL."""

    def __init__(self, masters: int = 3) -> None:
        super().__init__("qrgate-cluster-")
        try:
            args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            args += ["--cluster-node-timeout", "2000", "--cluster-require-full-coverage", "yes"]
            self.nodes = [self._spawn(f"node{i}", free_port(with_bus=True), args) for i in range(masters)]
            self._form()
        except BaseException:
            self.close()
            raise

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def _form(self) -> None:
        count = len(self.nodes)
        bounds = [16384 * i // count for i in range(count + 1)]
        for index, node in enumerate(self.nodes):
            with node.client() as client:
                command(client, "CLUSTER", "SET-CONFIG-EPOCH", index + 1)
                command(client, "CLUSTER", "ADDSLOTSRANGE", bounds[index], bounds[index + 1] - 1)
        with self.nodes[0].client() as client:
            for node in self.nodes[1:]:
                command(client, "CLUSTER", "MEET", "127.0.0.1", node.port)
        for node in self.nodes:
            wait_until(functools.partial(self._settled, node.port), f"cluster node {node.port} to settle")

    def _settled(self, port: int) -> bool:
        with sync_client(port) as client:
            info = command(client, "CLUSTER", "INFO")
            if isinstance(info, dict):
                fields = {str(name): str(value) for name, value in info.items()}
            else:
                fields = dict(line.split(":", 1) for line in str(info).split() if ":" in line)
            return (
                fields.get("cluster_state") == "ok"
                and fields.get("cluster_known_nodes") == str(len(self.nodes))
                and fields.get("cluster_slots_ok") == "16384"
            )


class RedisSentinelGroup(_Group):
    """One master, one replica, three sentinels; `.url` is a redis+sentinel:// URL."""

    def __init__(self, sentinels: int = 3) -> None:
        super().__init__("qrgate-sentinel-")
        try:
            self.master = self._spawn("master", free_port(), ["--repl-diskless-sync-delay", "0"])
            self.replica = self._spawn("replica", free_port(), ["--replicaof", "127.0.0.1", str(self.master.port)])
            conf = (
                f"sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {SENTINEL_SERVICE} 2000\n"
                f"sentinel failover-timeout {SENTINEL_SERVICE} 10000\n"
            )
            self.sentinels = [self._spawn(f"sentinel{i}", free_port(), [], conf) for i in range(sentinels)]
            wait_until(self._replica_linked, "the replica to sync")
            for sentinel in self.sentinels:
                wait_until(functools.partial(self._knows_master, sentinel.port), "sentinels to know the master")
        except BaseException:
            self.close()
            raise

    @property
    def service_name(self) -> str:
        return SENTINEL_SERVICE

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{hosts}/{SENTINEL_SERVICE}?db=0"

    def _replica_linked(self) -> bool:
        with self.replica.client() as client:
            return client.info("replication").get("master_link_status") == "up"

    def _knows_master(self, port: int) -> bool:
        with sync_client(port) as client:
            address = command(client, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE)
            return bool(address) and int(address[1]) == self.master.port


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"

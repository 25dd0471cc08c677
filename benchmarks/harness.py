"""Shared parts of the benchmarks: private redis-server and gateway processes on free ports, the
bare floor app, process memory, percentiles. Everything listens on 127.0.0.1 and is stopped at exit."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raise_open_files() -> int:
    """Lift the soft open-files limit to the hard one (inherited by the processes we start)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=0.5).status_code < 500:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer")


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="qrgate-bench-redis-")
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir, "--maxclients", "20000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


class Gateway:
    """One `qrgate serve` process."""

    def __init__(self, workdir: Path, port: int, env: dict[str, str], wrapper: Sequence[str] = ()) -> None:
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.env = env
        self.log = (workdir / f"gateway-{port}.log").open("wb")
        self.proc = subprocess.Popen(
            [*wrapper, sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)],
            env=env,
            stdout=self.log,
            stderr=self.log,
            cwd=ROOT,
        )

    def log_tail(self, lines: int = 40) -> str:
        self.log.flush()
        return "\n".join(Path(self.log.name).read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def gateway_env(workdir: Path, port: int, redis_url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "QRGATE_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "QRGATE_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'bench.db'}",
        "QRGATE_KEYS_FILE": str(workdir / "keys.json"),
        "QRGATE_REDIS_URL": redis_url,
        "QRGATE_LOG_LEVEL": "warning",
        "QRGATE_LOGIN_IP_MAX_ATTEMPTS": "1000000",
        "QRGATE_QR_MINT_IP_MAX": "1000000",  # the benchmark's desktops all mint from one address
        "QRGATE_QR_LIVE_IP_MAX": "1000000",  # and keep their codes live at once
        "QRGATE_METRICS_PORT": str(free_port()),  # an operations port each: several gateways run side by side
        **extra,
    }


@contextlib.contextmanager
def gateways(
    workdir: Path, redis_url: str, count: int = 1, wrapper: Sequence[str] = (), **extra: str
) -> Iterator[list[Gateway]]:
    """`count` gateway processes; `wrapper` prefixes the command line (a profiler, valgrind)."""
    started: list[Gateway] = []
    try:
        for _ in range(count):
            port = free_port()
            started.append(Gateway(workdir, port, gateway_env(workdir, port, redis_url, **extra), wrapper))
            # One at a time: the first one migrates. Under valgrind, starting takes much longer.
            wait_http(f"{started[-1].base_url}/healthz", 300 if wrapper else 30)
        yield started
    except BaseException:
        for gateway in started:
            print(f"--- log of the gateway on port {gateway.port}:\n{gateway.log_tail()}", file=sys.stderr)
        raise
    finally:
        for gateway in started:
            gateway.stop()


@contextlib.contextmanager
def bare_app(kind: str, wrapper: Sequence[str] = ()) -> Iterator[tuple[str, int]]:
    """The floor: benchmarks/bare_app.py under the same uvicorn settings as `qrgate serve`."""
    port = free_port()
    proc = subprocess.Popen(
        [*wrapper, sys.executable, str(ROOT / "benchmarks" / "bare_app.py"), kind, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", 300 if wrapper else 30)
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        proc.terminate()
        proc.wait(60)


def add_person(workdir: Path, redis_url: str, n: int = 1) -> dict[str, str]:
    """A person in the benchmark's database, through the same code path as `qrgate admin person add`."""
    import asyncio

    sys.path.insert(0, str(ROOT))
    from gateway.cli import add_person_record
    from gateway.settings import Settings
    from tests.conftest import new_identity

    identity = new_identity()
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{workdir / 'bench.db'}",
        keys_file=str(workdir / "keys.json"),
        redis_url=redis_url,
    )
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:  # its own event loop, callable from inside one too
        pool.submit(asyncio.run, add_person_record(settings, **identity)).result()
    return identity


class RawHttp:
    """One keep-alive HTTP/1.1 connection with almost no client-side cost, so that the load
    generator is not what is measured (httpx spends about a millisecond per request here)."""

    def __init__(self, base_url: str) -> None:
        host_port = base_url.split("://", 1)[1]
        self.host, port = host_port.split(":")
        self.port = int(port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        content_type: str = "",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        status, _, payload = await self.exchange(method, path, body=body, content_type=content_type, headers=headers)
        return status, payload

    async def exchange(
        self,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        content_type: str = "",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request; the status, the response's headers (lower-case names; the last of a repeated
        one, but every Set-Cookie joined by newlines) and the body."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}"]
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        found: dict[str, str] = {}
        for line in head.decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip()
            if name == "set-cookie" and name in found:
                value = found[name] + "\n" + value
            found[name] = value
        length = int(found.get("content-length", "0") or 0)
        payload = await self.reader.readexactly(length) if length else b""
        return status, found, payload

    async def close(self) -> None:
        """Close the connection (the next request opens a new one)."""
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
            self.reader = self.writer = None


class InstructionCounter:
    """Counts the instructions a server process runs between `start` and `stop`, under valgrind's
    callgrind: a figure that, unlike CPU seconds, does not move with what else the machine is doing
    (the same code and inputs give the same count within a fraction of a percent). Not a time:
    system calls and cache misses are not in it. Pass `wrapper` as the server's command prefix."""

    def __init__(self, workdir: Path, name: str) -> None:
        if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
            raise SystemExit("counting instructions needs valgrind (Debian package: valgrind)")
        self.out = workdir / f"callgrind-{name}.out"
        # Instrumentation starts off: the server starts at valgrind's plain speed and is only
        # counted between `start` and `stop`.
        self.wrapper = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={self.out}"]

    def start(self, pid: int) -> None:
        self._control("--instr=on", pid)
        self._control("--zero", pid)

    def stop(self, pid: int) -> int:
        """Instructions since `start` (callgrind dumps them to a file of its own)."""
        before = set(self.out.parent.glob(self.out.name + "*"))
        self._control("--dump", pid)
        self._control("--instr=off", pid)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            dumped = set(self.out.parent.glob(self.out.name + "*")) - before
            for path in dumped:
                for line in path.read_text().splitlines():
                    if line.startswith("totals:"):  # the file's last line: the dump is complete
                        return int(line.split()[1])
            time.sleep(0.1)
        raise RuntimeError(f"no complete callgrind dump appeared next to {self.out}")

    @staticmethod
    def _control(action: str, pid: int) -> None:
        subprocess.run(["callgrind_control", action, str(pid)], check=True, capture_output=True, timeout=60)

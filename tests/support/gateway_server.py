"""A real gateway: uvicorn serving create_app() on a free port, in a thread (in-process, fast to
start) or as a `qrgate serve` subprocess (for signals and kill -9)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from gateway.app import create_app
from gateway.cli import GatewayServer, add_person_record
from gateway.draining import Draining
from gateway.serving import ops_config, server_config
from gateway.settings import Settings

FAST_HASHING: dict[str, Any] = {"argon2_memory_kib": 1024, "argon2_time_cost": 1}
# Every captcha of a test gateway shows this text (the image and hashing path stay real; see captcha.py).
CAPTCHA_ANSWER = "T3ST"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_settings(tmp: Path, port: int, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "public_url": f"http://127.0.0.1:{port}",
        "database_url": f"sqlite+aiosqlite:///{tmp / 'qrgate.db'}",
        "keys_file": str(tmp / "keys.json"),
        **FAST_HASHING,
        "captcha_test_answer": CAPTCHA_ANSWER,
        "qr_mint_ip_max": 1_000_000,  # the tests mint from one address far faster than a hall would
        **overrides,
    }
    return Settings(**values)


class ThreadedGateway:
    def __init__(self, settings: Settings, port: int) -> None:
        self.settings = settings
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}"
        draining = Draining()
        app = create_app(settings, draining=draining)
        # The server `qrgate serve` runs (serving.py: its limits), and its operations port when one is set.
        config = server_config(
            app,
            settings,
            "127.0.0.1",
            port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=3,
            proxy_headers=False,  # the app's ForwardedMiddleware reads them, as under `qrgate serve`
        )
        ops = ops_config(app.state.ops_app, settings, "127.0.0.1") if settings.metrics_port else None
        self.ops_url = f"http://127.0.0.1:{settings.metrics_port}"
        self.server = GatewayServer(config, draining, drain_delay=0.0, ops=ops)
        self._thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> ThreadedGateway:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=15)

    def add_person(self, **person: str) -> str:
        """Add through the same code path as `qrgate admin person add` (on its own event loop, so it
        also works from inside an async test)."""
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, add_person_record(self.settings, **person)).result()


class AppServer:
    """Any ASGI app under a real uvicorn in a thread: `with AppServer(app) as base_url: ...`."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="auto")
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the app server did not start")
            time.sleep(0.01)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)


class GatewayProcess:
    """`qrgate serve` in a subprocess, configured through QRGATE_* variables."""

    def __init__(self, env: dict[str, str], port: int, log_path: Path) -> None:
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}"
        self.env = {**os.environ, **env}
        self.ops_url = f"http://127.0.0.1:{self.env.get('QRGATE_METRICS_PORT', '9100')}"
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def launch(self) -> subprocess.Popen[bytes]:
        """Popen `qrgate serve`, without waiting for it to answer (`start` waits)."""
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "serve", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self.proc

    def start(self) -> GatewayProcess:
        proc = self.launch()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"qrgate serve exited: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(self.base_url + "/healthz", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("qrgate serve did not become healthy")

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.terminate()


def oidc_gateway(tmp: Path) -> Iterator[ThreadedGateway]:
    """A gateway (memory store, SQLite, the units service mounted) that reads relying parties at once
    after a test registers them (no cache delay): the OpenID provider's browser tests' server."""
    port = free_port()
    server = ThreadedGateway(make_settings(tmp, port, oidc_clients_refresh=0), port).start()
    yield server
    server.stop()

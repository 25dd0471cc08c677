"""The `qrgate` command as people run it: subprocesses sharing QRGATE_* settings."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.clients import close_code, mint, next_message, open_events
from tests.support.gateway_server import GatewayProcess, free_port

pytestmark = pytest.mark.slow  # `qrgate` subprocesses, `qrgate serve` among them


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "QRGATE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        "QRGATE_KEYS_FILE": str(tmp_path / "keys.json"),
        "QRGATE_ARGON2_MEMORY_KIB": "1024",
        "QRGATE_ARGON2_TIME_COST": "1",
    }


def qrgate(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
        check=False,
    )


PERSON = [
    "admin", "person", "add", "--login-name", "wang_wu", "--phone", "13712345678", "--name", "王五",
    "--id-type", "resident_id", "--id-number", "11010519491231002X", "--password-stdin",
]  # fmt: skip


@pytest.fixture
def served(env: dict[str, str], tmp_path: Path) -> Iterator[GatewayProcess]:
    port = free_port()
    server = GatewayProcess({**env, "QRGATE_PUBLIC_URL": f"http://127.0.0.1:{port}"}, port, tmp_path / "serve.log")
    server.start()
    yield server
    server.stop()


def test_db_upgrade_then_person_add_then_login(env: dict[str, str], tmp_path: Path) -> None:
    upgraded = qrgate(env, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    added = qrgate(env, *PERSON, stdin="Secret-pass1\n")
    assert added.returncode == 0, added.stderr
    person_id = added.stdout.strip()
    assert person_id.startswith("p_")
    assert "Secret-pass1" not in added.stdout + added.stderr

    port = free_port()
    server = GatewayProcess({**env, "QRGATE_PUBLIC_URL": f"http://127.0.0.1:{port}"}, port, tmp_path / "serve.log")
    server.start()
    try:
        response = httpx.post(
            f"{server.base_url}/v1/login/password",
            json={"identifier": "wang_wu", "password": "Secret-pass1", "client_id": "web"},
        )
        assert response.status_code == 200
    finally:
        server.stop()
    keys = Path(env["QRGATE_KEYS_FILE"])
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    assert "Secret-pass1" not in (tmp_path / "serve.log").read_text()


def test_person_add_refuses_bad_input(env: dict[str, str]) -> None:
    weak = qrgate(env, *PERSON, stdin="simple\n")
    assert weak.returncode == 2
    assert "password_length" in weak.stderr
    assert qrgate(env, *PERSON, stdin="Secret-pass1\n").returncode == 0
    again = qrgate(env, *PERSON, stdin="Secret-pass1\n")
    assert again.returncode == 2
    assert "person_exists" in again.stderr


@pytest.mark.anyio
async def test_sigterm_closes_websockets_with_1001(served: GatewayProcess) -> None:
    async with httpx.AsyncClient(base_url=served.base_url) as http:
        minted = await mint(http)
    ws = await open_events(minted)
    assert (await next_message(ws))["state"] == "pending"
    assert served.proc is not None
    served.proc.terminate()
    assert await close_code(ws, timeout=10) == 1001
    # uvicorn finishes its graceful shutdown, then re-raises the signal it caught (exit by SIGTERM).
    assert served.proc.wait(timeout=20) in (0, -15)
    assert "Traceback" not in served.log_path.read_text()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"

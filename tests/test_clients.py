"""The terminal reference clients and `qrgate serve --demo`, driven as people run them: real
processes on a pseudo-terminal (pexpect), against real gateways."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.clients.phone import ScanFailed, qr_id_of
from tests.conftest import new_identity
from tests.support.gateway_server import ThreadedGateway, free_port, make_settings
from tests.support.qr_decode import decode, require, terminal_picture

pytestmark = pytest.mark.slow  # the clients and `qrgate serve --demo` as processes on pseudo-terminals

pexpect = require("pexpect", "pexpect")

Person = Callable[..., dict[str, str]]
ANSI = re.compile(r"\x1b\[[0-9;]*m")
QR_LINE = re.compile(r"^[█▀▄ ]+$")


def qrgate(*args: str, env: dict[str, str] | None = None) -> Any:  # a pexpect.spawn
    return pexpect.spawn(
        sys.executable,
        ["-m", "gateway.cli", *args],
        env={**os.environ, "NO_COLOR_TEST": "1", **(env or {})},
        encoding="utf-8",
        timeout=20,
        dimensions=(200, 200),
    )


def read_terminal_qr(child: Any) -> str:
    """Wait for the next code the client shows; return what a camera reads off the terminal."""
    child.expect(r"Scan with the tax app: (\S+)\r\n")
    content = child.match.group(1)
    drawn = [ANSI.sub("", line) for line in child.before.split("\r\n")]
    block = [line for line in drawn if line and QR_LINE.fullmatch(line)]
    assert block, child.before
    assert decode(terminal_picture("\n".join(block[-len(block) :]))) == [content]
    return str(content)


def qr_id(content: str) -> str:
    return content.rsplit("/", 1)[1]


@pytest.fixture
def api(gateway: ThreadedGateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.base_url, timeout=10) as client:
        yield client


def phone_token(api: httpx.Client, person: dict[str, str]) -> dict[str, str]:
    body = {"identifier": person["login_name"], "password": person["password"], "client_id": "mobile-app"}
    answer = api.post("/v1/login/password", json=body)
    assert answer.status_code == 200
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """`qrgate serve --demo` on a fresh database: its URL and what it printed."""
    port = free_port()
    env = {
        **os.environ,
        "QRGATE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}",
        "QRGATE_KEYS_FILE": str(tmp_path / "keys.json"),
        "QRGATE_ARGON2_MEMORY_KIB": "1024",
        "QRGATE_ARGON2_TIME_COST": "1",
        "QRGATE_LOG_LEVEL": "warning",
    }
    env.pop("QRGATE_PUBLIC_URL", None)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--demo", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            try:
                if httpx.get(base + "/healthz", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        printed = dict(re.findall(r"^  (password|person|unit) +(.+)$", log.read_text(), re.MULTILINE))
        yield base, printed
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_the_demo_and_both_terminal_clients_end_to_end(demo: tuple[str, dict[str, str]]) -> None:
    base, printed = demo
    assert printed["person"] == "王小明: phone 13800138000, login name demo_user"
    password = printed["password"]

    desktop = qrgate("login", "--url", base, "--json")
    content = read_terminal_qr(desktop)
    assert content.startswith(f"{base}/q/")

    phone = qrgate("scan", content, "--url", base)
    phone.expect("Account")
    phone.sendline("demo_user")
    phone.expect("Password")
    phone.sendline(password)
    phone.expect(r"\[y/N\]")
    context = phone.before
    assert "withholding-desktop" in context
    assert "qrgate-login/" in context  # the desktop's program, as the gateway recorded it
    assert "on the phone's network" in context
    desktop.expect("Scanned by 王\\*\\* — confirm on your phone")
    phone.sendline("y")
    phone.expect("Confirmed: the computer is logged in")
    phone.expect(pexpect.EOF)
    phone.close()
    assert phone.exitstatus == 0

    desktop.expect(r"(\{.*\})\r\n")
    tokens = json.loads(desktop.match.group(1))
    assert set(tokens) == {"access_token", "token_type", "expires_in", "refresh_token"}
    desktop.expect(pexpect.EOF)
    desktop.close()
    assert desktop.exitstatus == 0
    units = httpx.get(base + "/units/v1/units", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert units.status_code == 200
    assert {(u["name"], u["authorized"]) for u in units.json()["units"]} == {
        ("演示科技有限公司", True),
        ("演示商贸有限公司", False),
    }


def test_login_by_long_poll_and_a_cancel(gateway: ThreadedGateway, api: httpx.Client, make_person: Person) -> None:
    phone = phone_token(api, make_person())
    desktop = qrgate("login", "--url", gateway.base_url, "--transport", "poll")
    content = read_terminal_qr(desktop)
    assert api.post(f"/v1/qr/{qr_id(content)}/scan", headers=phone).status_code == 200
    desktop.expect("Scanned by 张\\*")
    assert api.post(f"/v1/qr/{qr_id(content)}/cancel", headers=phone).status_code == 204
    desktop.expect("cancelled on the phone")
    desktop.expect(pexpect.EOF)
    desktop.close()
    assert desktop.exitstatus == 1


def test_login_shows_a_new_code_when_one_expires(tmp_path: Path) -> None:
    port = free_port()
    quick = ThreadedGateway(make_settings(tmp_path, port, qr_ttl=5), port).start()
    try:
        person = new_identity()
        quick.add_person(**person)
        desktop = qrgate("login", "--url", quick.base_url, "--refreshes", "1")
        first = read_terminal_qr(desktop)
        desktop.expect("Expired — refreshing", timeout=10)
        second = read_terminal_qr(desktop)
        assert second != first
        with httpx.Client(base_url=quick.base_url) as api:
            phone = phone_token(api, person)
            api.post(f"/v1/qr/{qr_id(second)}/scan", headers=phone)
            api.post(f"/v1/qr/{qr_id(second)}/confirm", headers=phone)
        desktop.expect("Logged in")
        desktop.expect('amr +\\["qr"\\]')
        desktop.expect(pexpect.EOF)
        desktop.close()
        assert desktop.exitstatus == 0
    finally:
        quick.stop()


def test_scan_declines_by_default(gateway: ThreadedGateway, api: httpx.Client, make_person: Person) -> None:
    person = make_person()
    minted = api.post(
        "/v1/qr", json={"client_id": "withholding-desktop"}, headers={"X-Forwarded-For": "203.0.113.50"}
    ).json()
    phone = qrgate("scan", minted["qr_content"], "--url", gateway.base_url, "--identifier", person["phone"])
    phone.expect("Password")
    phone.sendline(person["password"])
    phone.expect(r"\[y/N\]")
    assert "NOT on the phone's network" in phone.before
    assert "Careful: the request comes from another network" in phone.before
    phone.sendline("")
    phone.expect("Declined")
    phone.expect(pexpect.EOF)
    phone.close()
    assert phone.exitstatus == 3
    waiter = {"Authorization": f"Bearer {minted['waiter_token']}"}
    assert api.get(f"/v1/qr/{minted['qr_id']}/state", headers=waiter).json()["state"] == "cancelled"


@pytest.mark.parametrize(
    "content",
    [
        "https://phish.example/q/AAAAAAAAAAAAAAAAAAAAAA",
        "http://127.0.0.1:8000/q/AAAAAAAAAAAAAAAAAAAAAA?next=x",
        "http://127.0.0.1:8000/q/AAAA",
        "http://127.0.0.1:8000.phish.example/q/AAAAAAAAAAAAAAAAAAAAAA",
        "http://127.0.0.1:8000/v1/qr/AAAAAAAAAAAAAAAAAAAAAA/confirm",
    ],
)
def test_scan_refuses_codes_of_another_site_before_any_call(content: str) -> None:
    with pytest.raises(ScanFailed, match="not a login code of"):
        qr_id_of(content, "http://127.0.0.1:8000")
    assert qr_id_of("http://127.0.0.1:8000/q/AAAAAAAAAAAAAAAAAAAAAA", "http://127.0.0.1:8000") == "A" * 22

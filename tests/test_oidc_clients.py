"""`qrgate admin client add/list/remove`: the relying parties of the OpenID provider, registered with
the real command (a subprocess, or `cli.main` in-process for the fast tier) against a SQLite file, and
seen by a running gateway without a restart."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from gateway import cli
from gateway.oidc.requests import s256
from tests.support.gateway_server import ThreadedGateway, free_port, make_settings

SECRET = "crm-" + "k" * 40
VERIFIER = "v" * 43


def env_of(tmp_path: Path) -> dict[str, str]:
    return {
        "QRGATE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'qrgate.db'}",
        "QRGATE_KEYS_FILE": str(tmp_path / "keys.json"),
    }


def qrgate(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "admin", "client", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
        check=False,
    )


def authorize(base_url: str, client_id: str, redirect_uri: str) -> httpx.Response:
    params = {
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "response_type": "code",
        "scope": "openid",
        "code_challenge": s256(VERIFIER),
        "code_challenge_method": "S256",
        "state": "xyz",
    }
    return httpx.get(base_url + "/authorize", params=params)


def wait_for(check: object, timeout: float = 8.0) -> float:
    """Seconds until `check()` is true (fails after `timeout`)."""
    started = time.monotonic()
    while not check():  # type: ignore[operator]
        assert time.monotonic() - started < timeout, "the gateway did not see the change in time"
        time.sleep(0.1)
    return time.monotonic() - started


@pytest.mark.slow  # `qrgate` subprocesses
def test_add_list_remove_with_the_real_command(tmp_path: Path) -> None:
    env = env_of(tmp_path)
    added = qrgate(
        env, "add", "crm", "--name", "客户关系 CRM", "--redirect-uri", "https://crm.example/cb",
        "--redirect-uri", "http://localhost:8080/cb", "--secret-stdin",
        "--post-logout-redirect-uri", "https://crm.example/bye", "--backchannel-logout-uri", "https://crm.example/bc",
        "--scope", "openid", "--scope", "phone", stdin=SECRET + "\n",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "client crm added"
    public = qrgate(env, "add", "shop", "--name", "Shop", "--redirect-uri", "https://shop.example/cb", "--public")
    assert public.returncode == 0, public.stderr

    listed = qrgate(env, "list")
    assert listed.returncode == 0, listed.stderr
    assert SECRET not in listed.stdout + listed.stderr + added.stdout + added.stderr
    assert listed.stdout.splitlines() == [
        "crm  confidential  '客户关系 CRM'  scopes: openid phone",
        "  redirect_uri: https://crm.example/cb",
        "  redirect_uri: http://localhost:8080/cb",
        "  post_logout_redirect_uri: https://crm.example/bye",
        "  backchannel_logout_uri: https://crm.example/bc",
        "shop  public  'Shop'  scopes: offline_access openid profile",
        "  redirect_uri: https://shop.example/cb",
    ]

    again = qrgate(env, "add", "shop", "--name", "Shop 2", "--redirect-uri", "https://shop.example/cb", "--public")
    assert again.returncode == 2
    assert "client_exists" in again.stderr
    replaced = qrgate(
        env, "add", "shop", "--name", "Shop 2", "--redirect-uri", "https://shop.example/cb", "--public", "--replace"
    )
    assert replaced.stdout.strip() == "client shop replaced", replaced.stderr

    assert qrgate(env, "remove", "shop").stdout.strip().startswith("client shop removed; its sessions are in the")
    gone = qrgate(env, "remove", "shop")
    assert gone.returncode == 2
    assert "client_not_found" in gone.stderr
    assert "shop" not in qrgate(env, "list").stdout


@pytest.mark.slow  # `qrgate` subprocesses
def test_the_command_refuses_what_the_rules_forbid(tmp_path: Path) -> None:
    env = env_of(tmp_path)
    base = ["add", "app", "--name", "App"]
    plain_http = qrgate(env, *base, "--redirect-uri", "http://app.example/cb", "--public")
    assert plain_http.returncode == 2
    assert "invalid_client_metadata" in plain_http.stderr
    short = qrgate(env, *base, "--redirect-uri", "https://app.example/cb", "--secret-stdin", stdin="short\n")
    assert short.returncode == 2
    assert "32 characters" in short.stderr
    both = qrgate(env, *base, "--redirect-uri", "https://app.example/cb", "--public", "--secret-stdin")
    assert both.returncode == 2  # argparse: exactly one of the two
    neither = qrgate(env, *base, "--redirect-uri", "https://app.example/cb")
    assert neither.returncode == 2
    assert "--public, --secret-stdin, or --jwks-file/--jwks-uri" in neither.stderr
    no_secret_on_argv = qrgate(env, *base, "--redirect-uri", "https://app.example/cb", "--secret", SECRET)
    assert no_secret_on_argv.returncode == 2
    assert qrgate(env, "list").stdout.strip() == "no relying parties are registered"


@pytest.mark.slow  # `qrgate` subprocesses
def test_a_running_gateway_sees_a_new_client_without_a_restart(tmp_path: Path) -> None:
    port = free_port()
    server = ThreadedGateway(make_settings(tmp_path, port), port).start()
    try:
        before = authorize(server.base_url, "late-app", "https://late.example/cb")
        assert before.status_code == 400  # the error page: an unknown client is never redirected to
        assert "invalid_client" in before.text
        env = env_of(tmp_path)
        late = ["--name", "Late", "--redirect-uri", "https://late.example/cb", "--public"]
        added = qrgate(env, "add", "late-app", *late)
        assert added.returncode == 0, added.stderr

        def signs_in() -> bool:
            answer = authorize(server.base_url, "late-app", "https://late.example/cb")
            return answer.status_code == 303 and answer.headers["location"].startswith(server.base_url + "/signin?")

        # within oidc_clients_refresh (2 s) of the change, plus a poll
        assert wait_for(signs_in) <= server.settings.oidc_clients_refresh + 1
        assert qrgate(env, "remove", "late-app").returncode == 0
        wait_for(lambda: authorize(server.base_url, "late-app", "https://late.example/cb").status_code == 400)
    finally:
        server.stop()


def test_the_command_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same command through `cli.main` (the fast tier's view): add, list, remove."""
    for name, value in env_of(tmp_path).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "stdin", io.StringIO(SECRET + "\n"))
    args = ["admin", "client", "add", "crm", "--name", "CRM", "--redirect-uri", "https://crm.example/cb"]
    assert cli.main([*args, "--secret-stdin", "--scope", "openid"]) == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert cli.main([*args, "--secret-stdin", "--replace"]) == 2
    assert "invalid_client_metadata: --secret-stdin: standard input gave no secret." in capsys.readouterr().err
    assert cli.main(["admin", "client", "list"]) == 0
    listed = capsys.readouterr().out
    assert listed.startswith("crm  confidential  'CRM'  scopes: openid\n")
    assert SECRET not in listed
    assert cli.main(["admin", "client", "remove", "crm"]) == 0
    assert cli.main(["admin", "client", "remove", "crm"]) == 2
    assert "client_not_found" in capsys.readouterr().err

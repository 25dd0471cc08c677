"""qrgate-verify (verify/), the package downstream services install instead of the server: it imports
nothing from `gateway`, and alone in a fresh virtualenv it verifies a running gateway's access tokens
and unit tokens, refuses tampered ones, and its middleware answers 401 problem+json."""

from __future__ import annotations

import ast
import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway import errors
from qrgate_verify import AccessTokenVerifier, InvalidToken, StaticKeys
from qrgate_verify.problem import problem_json
from qrgate_verify.verifier import unverified_header
from tests.support.accounts import access_token, grant_staff
from tests.support.gateway_server import ThreadedGateway
from tests.support.units import DECLARATION_PASSWORD, Person, new_unit

ROOT = Path(__file__).resolve().parent.parent
VERIFY = ROOT / "verify"
SOURCE = VERIFY / "src" / "qrgate_verify"
# What a downstream service may import through the package: its declared dependencies and the stdlib.
ALLOWED_IMPORTS = {"qrgate_verify", "joserfc", "cryptography", "httpx", "starlette"}
# The server's own dependencies, which the package must not bring along.
SERVER_ONLY = ("gateway", "sqlalchemy", "alembic", "redis", "hiredis", "argon2", "pydantic", "orjson", "uvicorn")


def clean_env() -> dict[str, str]:
    """The environment without anything that could put the repository on sys.path."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def test_the_source_imports_only_its_dependencies_and_the_stdlib() -> None:
    # Every import statement, including lazy ones inside functions, which the runtime check below cannot see.
    found: set[str] = set()
    for path in SOURCE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    assert found - ALLOWED_IMPORTS - sys.stdlib_module_names - {"__future__"} == set()
    assert {"qrgate_verify", "joserfc"} <= found


PROBE = """
import json, sys
import qrgate_verify
core = {name.split(".")[0] for name in sys.modules}
from qrgate_verify import TokenAuthMiddleware
print(json.dumps({"core": sorted(core), "all": sorted({name.split(".")[0] for name in sys.modules})}))
"""


def test_importing_it_loads_nothing_of_the_server(tmp_path: Path) -> None:
    """In this environment the server is importable too: the package must still not load it, and
    the core must not load Starlette (a service without it can verify tokens)."""
    probe = subprocess.run(
        [sys.executable, "-I", "-c", PROBE], cwd=tmp_path, env=clean_env(), capture_output=True, text=True, check=True
    )
    loaded = json.loads(probe.stdout)
    assert not [name for name in loaded["all"] if name.startswith(SERVER_ONLY)], loaded["all"]
    assert "starlette" not in loaded["core"]
    assert "starlette" in loaded["all"]


@pytest.mark.anyio
async def test_a_deeply_nested_header_is_a_malformed_token() -> None:
    # The stdlib parser raises RecursionError here, not ValueError: it must still be an InvalidToken (401), not a 500.
    header = base64.urlsafe_b64encode(b"[" * 6000).rstrip(b"=").decode()
    token = f"{header}.e30.c2ln"
    with pytest.raises(InvalidToken, match="malformed"):
        unverified_header(token)
    verifier = AccessTokenVerifier(StaticKeys(lambda: pytest.fail("no key lookup")), issuer="i", audience="a")
    with pytest.raises(InvalidToken, match="malformed"):
        await verifier.verify(token)


@pytest.mark.parametrize(
    "problem",
    [
        errors.Unauthorized("令牌无效: the access token is not valid.", code="invalid_token", attempts_left=2),
        errors.ServiceUnavailable("The login gateway's keys cannot be fetched.", code="gateway_unavailable"),
    ],
)
def test_the_middleware_renders_problems_as_the_gateway_does(problem: errors.GatewayError) -> None:
    """The middleware's plain-ASGI responder (stdlib json) and the gateway's (orjson) write the same bytes."""
    rendered = errors.problem_response(problem)
    assert problem_json(problem) == rendered.body
    assert all(rendered.headers[name] == value for name, value in problem.response_headers().items())
    assert problem.response_headers() in ({"WWW-Authenticate": "Bearer"}, {"Retry-After": "2"})


def test_the_image_copies_every_source_root_the_server_packages() -> None:
    """deploy/Dockerfile installs the server from copied sources: without verify/src the image's
    gateway could not import qrgate_verify."""
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    copied = {
        source
        for line in (ROOT / "deploy" / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ") and "--from" not in line
        for source in line.split()[1:-1]
    }
    assert {"pyproject.toml", "gateway"} <= copied
    assert set(find["where"]) - {"."} <= copied


# --- the package alone, in a fresh virtualenv, against a running gateway -------------------------------

SCRIPT = r'''
"""Runs in the fresh virtualenv, where only qrgate-verify[starlette] and its dependencies are installed."""
import asyncio, base64, json, sys
from importlib import resources

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.routing import Route

import qrgate_verify
from qrgate_verify import AccessTokenVerifier, InvalidToken, RemoteJwks, TokenAuthMiddleware, require_claims


def tampered(token):
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "p_someone_else"
    return header + "." + base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode() + "." + signature


async def refusal(verifier, token):
    try:
        await verifier.verify(token)
    except InvalidToken as exc:
        return str(exc)
    return None


async def main(gateway, access_token, unit_token):
    gateway_keys = RemoteJwks(gateway + "/.well-known/jwks.json")
    units_keys = RemoteJwks(gateway + "/units/.well-known/jwks.json")
    access = AccessTokenVerifier(gateway_keys, issuer=gateway, audience="qrgate-sso")
    unit = AccessTokenVerifier(units_keys, issuer=gateway + "/units", audience="qrgate-units", typ="unit+jwt")

    async def whoami(request):
        return JSONResponse({"sub": require_claims(request)["sub"]})

    service = Starlette(
        routes=[Route("/whoami", whoami)], middleware=[Middleware(TokenAuthMiddleware, verifier=access)]
    )
    try:
        access_claims = await access.verify(access_token)
        unit_claims = await unit.verify(unit_token)
        refused = {
            "tampered access token": await refusal(access, tampered(access_token)),
            "tampered unit token": await refusal(unit, tampered(unit_token)),
            "unit token as access token": await refusal(access, unit_token),
            "access token as unit token": await refusal(unit, access_token),
        }
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=service), base_url="http://service") as client:
            answers = [
                await client.get("/whoami", headers={"Authorization": "Bearer " + token})
                for token in (access_token, tampered(access_token))
            ]
    finally:
        await gateway_keys.aclose()
        await units_keys.aclose()
    return {
        "installed_at": qrgate_verify.__file__,
        "typed": resources.files("qrgate_verify").joinpath("py.typed").is_file(),
        "access_sub": access_claims["sub"],
        "unit_sub": unit_claims["sub"],
        "unit": unit_claims["unit"],
        "refused": refused,
        "middleware": [[a.status_code, a.headers["content-type"], a.json()] for a in answers],
    }


print(json.dumps(asyncio.run(main(*json.load(sys.stdin)))))
'''


def run(args: list[str], cwd: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=clean_env(), input=stdin, capture_output=True, text=True, timeout=540)


@pytest.fixture(scope="module")
def verify_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv holding `pip install ./verify[starlette]` and nothing else of ours (built
    from a copy, so the build leaves nothing in the checkout)."""
    tmp = tmp_path_factory.mktemp("verify-venv")
    source = shutil.copytree(
        VERIFY, tmp / "verify", ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    venv = tmp / "venv"
    created = run([sys.executable, "-m", "venv", str(venv)], tmp)
    assert created.returncode == 0, created.stderr
    python = venv / "bin" / "python"
    installed = run([str(python), "-m", "pip", "install", "-q", f"{source}[starlette]"], tmp)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return python


async def tokens(gateway: ThreadedGateway, make_person: Callable[..., dict[str, str]]) -> tuple[str, str, str, str]:
    """A person's gateway access token, and their unit token for a unit they are tax staff of."""
    staff_identity, clerk_identity = make_person(), make_person()
    grant_staff(gateway, staff_identity["login_name"])
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=20) as http:
        staff_token, clerk_token = await access_token(http, staff_identity), await access_token(http, clerk_identity)
    async with httpx.AsyncClient(base_url=gateway.base_url + "/units", timeout=20) as units:
        clerk = Person(clerk_identity, clerk_token, units)
        tin = await new_unit(Person(staff_identity, staff_token, units), ("tax_staff", clerk))
        verified = await clerk.post(f"/v1/units/{tin}/verify", {"declaration_password": DECLARATION_PASSWORD})
    assert verified.status_code == 200, verified.text
    return clerk_token, verified.json()["unit_token"], clerk.id, tin


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_package_alone_verifies_a_running_gateways_tokens(
    verify_venv: Path, gateway: ThreadedGateway, make_person: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    python = str(verify_venv)
    no_server = run([python, "-I", "-c", "import gateway"], tmp_path)
    assert "ModuleNotFoundError: No module named 'gateway'" in no_server.stderr, no_server.stderr
    listed = run([python, "-m", "pip", "list", "--format=json"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    dists = {str(dist["name"]).lower() for dist in json.loads(listed.stdout)}
    assert "qrgate-verify" in dists
    assert not [name for name in dists if name == "qrgate" or name.startswith(SERVER_ONLY)], dists

    access, unit, person, tin = asyncio.run(tokens(gateway, make_person))
    (tmp_path / "check.py").write_text(SCRIPT)
    checked = run([python, "-I", "check.py"], tmp_path, stdin=json.dumps([gateway.base_url, access, unit]))
    assert checked.returncode == 0, checked.stderr
    result: dict[str, Any] = json.loads(checked.stdout)

    assert result["installed_at"].startswith(str(verify_venv.parent.parent))  # the venv's copy, not the checkout
    assert result["typed"] is True
    assert result["access_sub"] == result["unit_sub"] == person
    assert result["unit"] == {"tin": tin, "role": "tax_staff", "via": "declaration_password"}
    refused = result["refused"]
    assert all(refused.values()), refused
    assert refused["tampered access token"] == refused["tampered unit token"] == "token signature is not valid"
    assert refused["unit token as access token"] == "token type must be at+jwt"
    assert refused["access token as unit token"] == "token type must be unit+jwt"
    (ok, ok_type, ok_body), (no, no_type, no_body) = result["middleware"]
    assert (ok, ok_type, ok_body) == (200, "application/json", {"sub": person})
    assert (no, no_type, no_body["code"], no_body["status"]) == (401, "application/problem+json", "invalid_token", 401)

"""The contract in protocols/ against the real gateway.

The documents themselves are checked first (valid OpenAPI 3.1, AsyncAPI 3.0 naming every message,
JSON Schema 2020-12 files whose references resolve, every served route documented). Then real flows
run through a real server, and every response body, WebSocket message and access token they produce
is held against its schema in protocols/schemas/, and every HTTP answer against what openapi.yaml
documents for its operation (status, media type, required headers, body).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import jsonschema_rs
import pytest
import schemathesis
from joserfc import jwt
from joserfc.jwk import ECKey
from schemathesis.core.result import Ok
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gateway.app import create_app
from gateway.errors import PROBLEM_TYPE_BASE
from gateway.qr import ws as qr_ws
from gateway.qr.render import MEDIA_TYPES
from tests.conftest import new_identity
from tests.support.dpop import DpopKey
from tests.support.gateway_server import ThreadedGateway, free_port, make_settings
from tests.support.schemas import (
    DRAFT_2020_12,
    SCHEMAS,
    assert_valid,
    asyncapi,
    errors,
    jwt_parts,
    load_schema,
    openapi,
    openapi_schema_errors,
    pointer,
    refs,
    schema_files,
    validator,
)
from tests.support.sso import SERVICE_KEY, SERVICE_SECRET, start_sso_gateway

WS_MESSAGES = ("hello", "state", "scanned", "confirmed", "cancelled", "expired")
CLOSE_CODES = {1000, 1001, 1009, 1013, 4400, 4401, 4404, 4409}
DESKTOP = "withholding-desktop"
JKT = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"  # an RFC 7638 thumbprint: 43 base64url characters
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"
ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


# --- helpers -------------------------------------------------------------------------------------


def documented_response(method: str, path: str, status: int) -> dict[str, Any]:
    """The response object openapi.yaml gives `method path` for `status` (fails if undocumented)."""
    document = openapi()
    operation = document["paths"][path][method.lower()]
    response = operation["responses"].get(str(status))
    assert response is not None, f"{method} {path} does not document {status}"
    if "$ref" in response:
        response = pointer(document, response["$ref"])
    assert isinstance(response, dict)
    return response


def assert_documented(response: httpx.Response, method: str, path: str) -> Any:
    """The answer is one openapi.yaml documents for `method path`: its status, its media type, the
    headers it requires (with their constant values), and a body valid against the documented schema
    (the operation's own narrowing included, e.g. its enum of problem codes). Returns the JSON body
    (None when the documented answer has no content)."""
    document = openapi()
    documented = documented_response(method, path, response.status_code)
    for name, header in documented.get("headers", {}).items():
        header = pointer(document, header["$ref"]) if "$ref" in header else header
        if header.get("required"):
            assert name.lower() in response.headers, f"{method} {path}: {response.status_code} lacks {name}"
        if "const" in header["schema"] and name.lower() in response.headers:
            assert response.headers[name.lower()] == header["schema"]["const"], name
    content = documented.get("content")
    if not content:
        assert response.content == b"", f"{method} {path}: {response.status_code} has an undocumented body"
        return None
    media = response.headers["content-type"].split(";")[0].strip()
    assert media in content, f"{method} {path}: {response.status_code} as {media} is not documented"
    if not media.endswith("json"):
        return None
    body = response.json()
    found = openapi_schema_errors(content[media]["schema"], body)
    assert not found, f"{method} {path} {response.status_code}: {body!r}\n  " + "\n  ".join(found)
    return body


def assert_problem(
    response: httpx.Response,
    status: int,
    code: str,
    *,
    operation: tuple[str, str] | None = None,
    error: str | None = None,
    challenge: str = "Bearer",
) -> None:
    """An RFC 9457 problem with this status and code, valid against problem.json (and, when the
    operation is named, documented by openapi.yaml for it: content type, headers, code). On the OAuth
    endpoints `error` is the OAuth error code the problem carries too."""
    assert response.status_code == status, response.text
    # An OAuth endpoint's error is the same problem as application/json (RFC 6749 5.2).
    media_type = "application/json" if error is not None else "application/problem+json"
    assert response.headers["content-type"] == media_type
    body = response.json()
    assert_valid("problem.json", body)
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == PROBLEM_TYPE_BASE + code
    assert body.get("error") == error, body
    if status == 401:
        expected = "Basic" if code == "invalid_client" else challenge  # a client authenticates by Basic
        assert response.headers["www-authenticate"].startswith(expected)
    if operation is not None:
        documented = documented_response(*operation, status)
        assert media_type in documented["content"]
        assert_documented(response, *operation)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def check_access_token(token: str, *, gateway: ThreadedGateway, sub: str, client_id: str, amr: list[str]) -> None:
    """The access token's header and claims, decoded without a signature check, against their schemas."""
    header, claims = jwt_parts(token)
    assert_valid("access-token-header.json", header)
    assert_valid("access-token-claims.json", claims)
    assert header["alg"] == gateway.settings.signing_alg
    assert claims["iss"] == gateway.base_url
    assert claims["aud"] == gateway.settings.token_audience
    assert claims["sub"] == sub
    assert claims["client_id"] == client_id
    assert claims["amr"] == amr
    assert claims["exp"] - claims["iat"] == gateway.settings.access_token_ttl
    assert abs(claims["iat"] - time.time()) < 60
    assert claims["auth_time"] <= claims["iat"]
    jwks = httpx.get(gateway.base_url + "/.well-known/jwks.json").json()
    assert header["kid"] in {key["kid"] for key in jwks["keys"]}


async def next_message(ws: ClientConnection, schema: str, timeout: float = 10) -> dict[str, Any]:
    """The next server message, valid against `schema`."""
    with anyio.fail_after(timeout):
        raw = await ws.recv()
    message: dict[str, Any] = json.loads(raw)
    assert_valid(schema, message)
    return message


async def closed_with(ws: ClientConnection, timeout: float = 10) -> int | None:
    """Wait for the server to close; the close code (no further message may arrive)."""
    with anyio.fail_after(timeout):
        try:
            extra = await ws.recv()
        except ConnectionClosed:
            return ws.close_code
    raise AssertionError(f"expected the server to close, got {extra!r}")


class Phone:
    """A person logged in to the mobile app, scanning over HTTP."""

    def __init__(self, client: httpx.AsyncClient, person: dict[str, str], token: str) -> None:
        self.client = client
        self.person = person
        self.headers = bearer(token)

    async def scan(self, qr_id: str) -> httpx.Response:
        return await self.client.post(f"/v1/qr/{qr_id}/scan", headers=self.headers)

    async def confirm(self, qr_id: str) -> httpx.Response:
        return await self.client.post(f"/v1/qr/{qr_id}/confirm", headers=self.headers)

    async def cancel(self, qr_id: str) -> httpx.Response:
        return await self.client.post(f"/v1/qr/{qr_id}/cancel", headers=self.headers)


async def login_phone(client: httpx.AsyncClient, server: ThreadedGateway) -> Phone:
    person = new_identity()
    person["id"] = server.add_person(**person)
    answer = await client.post(
        "/v1/login/password",
        json={"identifier": person["phone"], "password": person["password"], "client_id": "mobile-app"},
    )
    assert answer.status_code == 200, answer.text
    return Phone(client, person, answer.json()["access_token"])


async def mint(client: httpx.AsyncClient, **extra: str) -> dict[str, Any]:
    answer = await client.post("/v1/qr", json={"client_id": DESKTOP, "device_name": "财务室电脑", **extra})
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    assert_valid("mint-response.json", body)
    return body


async def hello(server: ThreadedGateway, minted: dict[str, Any], token: str | None = None) -> ClientConnection:
    ws = await connect(f"{server.ws_url}/v1/qr/{minted['qr_id']}/events", open_timeout=10)
    await ws.send(json.dumps({"type": "hello", "waiter_token": token or minted["waiter_token"]}))
    return ws


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
async def client(gateway: ThreadedGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=40) as http:
        yield http


@pytest.fixture(scope="module")
def quick_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedGateway]:
    """A gateway whose QR codes live 5 s (the minimum) and whose WebSockets wait 1 s for hello."""
    port = free_port()
    settings = make_settings(tmp_path_factory.mktemp("quick"), port, qr_ttl=5, hello_timeout=1.0)
    server = ThreadedGateway(settings, port).start()
    yield server
    server.stop()


# --- the documents -------------------------------------------------------------------------------


def test_schema_files_are_json_schema_2020_12_and_resolve() -> None:
    names = {path.name for path in schema_files()}
    expected = {f"ws-{name}.json" for name in WS_MESSAGES} | {
        "access-token-claims.json",
        "access-token-header.json",
        "token-response.json",
        "problem.json",
        "mint-request.json",
        "mint-response.json",
        "scan-response.json",
        "state-view.json",
        "password-login-request.json",
        "jwks.json",
        "openid-configuration.json",
        "captcha.json",
        "token-request.json",
        "token-exchange-response.json",
        "signin-form.json",
        "signin-password-request.json",
        "signin-qr-complete-request.json",
        "signin-redirect.json",
        "signin-unit-step.json",
        "signin-unit-verify-request.json",
        "signin-unit-enter-request.json",
        "revoke-request.json",
        "introspect-request.json",
        "introspection.json",
        "sessions.json",
        "readiness.json",
        # OpenID Connect (tests/test_oidc_protocol.py holds real answers and tokens against them)
        "authorization-request.json",
        "par-response.json",
        "oidc-token-response.json",
        "id-token-claims.json",
        "userinfo.json",
        "logout-request.json",
        "logout-token-claims.json",
    }
    assert expected <= names
    for name in sorted(names):
        schema = load_schema(name)
        assert schema["$schema"] == DRAFT_2020_12, name
        assert schema.get("title"), name
        jsonschema_rs.meta.validate(schema)
        for ref in refs(schema):
            target, _, fragment = ref.partition("#")
            if target:
                assert (SCHEMAS / target).is_file(), f"{name}: $ref {ref} names no file"
            if fragment:  # a JSON pointer into that file (or this one)
                pointer(load_schema(target) if target else schema, "#" + fragment)
        validator(name)  # every reference resolves


def test_schemas_reject_what_the_contract_forbids() -> None:
    """The schemas are strict enough to catch drift (spot checks)."""
    assert errors("ws-hello.json", {"type": "hello", "waiter_token": "x", "extra": 1})
    assert errors("ws-state.json", {"type": "state", "state": "delivered", "expires_in": 3})
    assert errors("access-token-header.json", {"alg": "HS256", "typ": "at+jwt", "kid": "k"})
    assert errors("access-token-header.json", {"alg": "ES256", "typ": "JWT", "kid": "k"})
    claims = {
        "iss": "https://login.example",
        "sub": "p_x",
        "aud": "qrgate-sso",
        "exp": 2,
        "iat": 1,
        "jti": "j" * 22,
        "client_id": "web",
        "sid": "s" * 22,
        "amr": ["pwd"],
        "auth_time": 1,
    }
    assert not errors("access-token-claims.json", claims)
    assert not errors("access-token-claims.json", {**claims, "cnf": {"jkt": JKT}})
    assert errors("access-token-claims.json", {**claims, "name": "张三"})  # no personal data
    assert errors("access-token-claims.json", {**claims, "sub": "11010519900101001X"})  # never the ID number
    assert errors("access-token-claims.json", {key: v for key, v in claims.items() if key != "sid"})
    assert errors("problem.json", {"type": "about:blank", "title": "t", "status": 400, "code": "x", "detail": "d"})
    # token exchange, introspection, sessions, readiness
    assert not errors(
        "access-token-claims.json", {**claims, "aud": "units", "scope": "units.read", "act": {"sub": "svc"}}
    )
    assert not errors("access-token-claims.json", {**claims, "roles": ["hall_staff"]})
    assert errors("access-token-claims.json", {**claims, "roles": ["Hall Staff"]})
    exchanged = {"access_token": "a.b.c", "issued_token_type": ACCESS, "token_type": "Bearer", "expires_in": 600}
    assert not errors("token-exchange-response.json", {**exchanged, "scope": "units.read"})
    assert errors("token-exchange-response.json", exchanged)  # scope is always said
    assert errors("token-exchange-response.json", {**exchanged, "scope": "x", "refresh_token": "r" * 43})
    assert not errors("introspection.json", {"active": False})
    assert errors("introspection.json", {"active": False, "sub": "p_x"})  # an inactive token reveals nothing
    active = {"active": True, "token_type": "access_token", **claims}
    assert not errors("introspection.json", active)
    assert errors("introspection.json", {**active, "name": "张三"})
    assert errors("introspection.json", {**active, "token_type": "refresh_token"})
    session = {
        "sid": "s" * 22,
        "client_id": "web",
        "device_name": "",
        "amr": ["pwd"],
        "created_at": 1,
        "last_used": 2,
        "current": True,
    }
    assert not errors("sessions.json", {"display_name": "张*", "sessions": [session]})
    assert errors("sessions.json", {"sessions": [session]})  # the name is always answered (maybe empty)
    assert errors("sessions.json", {"display_name": "张*", "sessions": [{**session, "ip": "127.0.0.1"}]})
    assert errors("sessions.json", [session])
    checks = {"store": "ok", "database": "ok", "keys": "ok", "draining": "no"}
    assert not errors("readiness.json", {"status": "ready", "checks": checks})
    assert not errors("readiness.json", {"status": "not_ready", "checks": {**checks, "draining": "yes"}})
    assert errors("readiness.json", {"status": "ready", "checks": {**checks, "store": "unavailable"}})
    assert errors("readiness.json", {"status": "not_ready", "checks": checks})  # says which part is not ready
    assert errors("readiness.json", {"status": "ready", "checks": {**checks, "detail": "connection refused"}})
    assert not errors("token-request.json", {"grant_type": "refresh_token", "refresh_token": "r", "client_id": "c"})
    assert errors("token-request.json", {"grant_type": "refresh_token", "refresh_token": "r"})
    asserted = {
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": "a.b.c",
    }
    assert not errors("token-request.json", {"grant_type": "refresh_token", "refresh_token": "r", **asserted})
    assert errors("token-request.json", {"grant_type": "password", "username": "u", "password": "p"})
    exchange = {"grant_type": EXCHANGE, "subject_token": "a.b.c", "subject_token_type": ACCESS, "audience": "units"}
    assert not errors("token-request.json", exchange)
    assert errors("token-request.json", {**exchange, "requested_token_type": "urn:ietf:params:oauth:token-type:jwt"})


def test_openapi_is_a_valid_openapi_3_1_document() -> None:
    document = openapi()
    assert document["openapi"].startswith("3.1.")
    loaded = schemathesis.openapi.from_path(SCHEMAS.parent / "openapi.yaml")
    loaded.validate()  # against the OpenAPI 3.1 meta-schema
    labels = set()
    for result in loaded.get_all_operations():
        assert isinstance(result, Ok), result
        labels.add(result.ok().label)
    assert labels >= {
        "POST /v1/qr",
        "GET /v1/qr/{qr_id}.svg",
        "GET /v1/qr/{qr_id}.png",
        "DELETE /v1/qr/{qr_id}",
        "GET /v1/qr/{qr_id}/state",
        "POST /v1/qr/{qr_id}/scan",
        "POST /v1/qr/{qr_id}/confirm",
        "POST /v1/qr/{qr_id}/cancel",
        "GET /q/{qr_id}",
        "POST /v1/login/password",
        "POST /v1/captcha",
        "GET /.well-known/jwks.json",
        "GET /.well-known/openid-configuration",
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
        # tokens and sessions
        "POST /v1/token",
        "POST /v1/revoke",
        "POST /v1/introspect",
        "POST /v1/logout",
        "GET /v1/session-ends",
        "GET /v1/sessions",
        "DELETE /v1/sessions/{sid}",
        # the browser sign-in page of the OpenID provider (tests/test_oidc_signin.py holds its answers)
        "GET /signin",
        "POST /signin/password",
        "POST /signin/qr",
        "POST /signin/qr/complete",
        "POST /signin/cancel",
        # OpenID Connect
        "GET /authorize",
        "POST /authorize",
        "POST /par",
        "GET /userinfo",
        "POST /userinfo",
        "GET /logout",
        "POST /logout",
        # accounts (tests/test_accounts_*.py hold their bodies against the schemas)
        "POST /v1/sms/challenges",
        "POST /v1/registrations",
        "POST /v1/registrations/{registration_id}/complete",
        "POST /v1/password/forgot",
        "POST /v1/password/reset",
        "POST /v1/admin/registration-codes",
        "POST /v1/admin/password-resets",
        "GET /v1/rare-chars/radicals",
        "GET /v1/rare-chars",
        "GET /v1/regions",
        "GET /register",
        "GET /forgot-password",
        "GET /change-password",
        # the units service, mounted at /units (tests/test_units_protocol.py holds its bodies against the schemas)
        "GET /units/.well-known/jwks.json",
        "POST /units/v1/captcha",
        "GET /units/v1/units",
        "POST /units/v1/units/link",
        "POST /units/v1/units/{tin}/verify",
        "POST /units/v1/units/{tin}/enter",
        "POST /units/v1/unit-token/renew",
        "POST /units/v1/units/{tin}/authorizations",
        "GET /units/v1/units/{tin}/authorizations",
        "DELETE /units/v1/units/{tin}/authorizations/{authorization_id}",
        "PUT /units/v1/units/{tin}/declaration-password",
        "POST /units/v1/units/{tin}/ca/challenge",
        "POST /units/v1/units/{tin}/ca/verify",
        "POST /units/v1/legacy/password-login",
        "POST /units/v1/legacy/ca-challenge",
        "POST /units/v1/legacy/ca-login",
        "POST /units/v1/admin/units",
        "PUT /units/v1/admin/units/{tin}/roles",
        "DELETE /units/v1/admin/units/{tin}/roles/{person_id}",
        "PUT /units/v1/admin/units/{tin}/declaration-password",
    }
    try:
        from openapi_spec_validator import validate  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        pass
    else:
        validate(document, base_uri=(SCHEMAS.parent / "openapi.yaml").as_uri())
    for ref in refs(document):
        if ref.startswith("#/"):
            pointer(document, ref)
        else:
            assert (SCHEMAS.parent / ref).is_file(), f"$ref {ref} names no file"


# The OpenID provider's browser endpoints answer the person, not a program, where a redirect would be
# unsafe or nothing is left to redirect to (Core 1.0 3.1.2.6, RP-Initiated Logout 1.0 4): an HTML page.
HTML_ERROR_PAGES = {("get", "/authorize", "400"), ("post", "/authorize", "400"), ("get", "/logout", "400"),
                    ("post", "/logout", "400")}  # fmt: skip


def test_openapi_documents_every_error_as_problem_json() -> None:
    """Every 4xx/5xx is a problem, except the readiness probe's 503 (a probe answer, same shape as its 200)
    and the OpenID provider's error pages for people."""
    document = openapi()
    not_ready = document["paths"]["/readyz"]["get"]["responses"]["503"]["content"]
    assert list(not_ready) == ["application/json"]
    assert refs(not_ready)[0] == "./schemas/readiness.json"
    # The sign-in page and its plain cancel form answer people: an unknown sign-in is a page, not a problem.
    pages = {("get", "/signin", "404"), ("post", "/signin/cancel", "404")}
    for method, path, status in pages:
        assert list(document["paths"][path][method]["responses"][status]["content"]) == ["text/html"]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                resolved = pointer(document, response["$ref"]) if "$ref" in response else response
                if (method, path, status) == ("get", "/readyz", "503") or (method, path, status) in pages:
                    continue
                if (method, path, status) in HTML_ERROR_PAGES:
                    assert list(resolved["content"]) == ["text/html"], (method, path, status)
                    continue
                if int(status) >= 400:
                    # OAuth endpoints' errors carry an RFC 6749 `error` and are served as application/json.
                    oauth = '"error"' in json.dumps(resolved["content"])
                    media_type = "application/json" if oauth else "application/problem+json"
                    assert list(resolved["content"]) == [media_type], (method, path, status)
                    assert refs(resolved["content"])[0] == "./schemas/problem.json", (method, path, status)


def test_openapi_request_bodies_match_the_schema_files() -> None:
    """Request bodies are closed (additionalProperties false) and carry the code's limits."""
    mint_request = load_schema("mint-request.json")
    login_request = load_schema("password-login-request.json")
    assert mint_request["additionalProperties"] is False
    assert login_request["additionalProperties"] is False
    assert mint_request["properties"]["client_id"]["maxLength"] == 64
    assert mint_request["properties"]["device_name"]["maxLength"] == 128
    assert login_request["properties"]["password"]["maxLength"] == 128
    document = openapi()
    bodies = {
        ("post", "/v1/qr"): "./schemas/mint-request.json",
        ("post", "/v1/login/password"): "./schemas/password-login-request.json",
        ("post", "/v1/qr/{qr_id}/confirm"): "./schemas/qr-confirm-request.json",
    }
    for (method, path), ref in bodies.items():
        body = document["paths"][path][method]["requestBody"]
        assert body["content"]["application/json"]["schema"] == {"$ref": ref}
    # The OAuth endpoints take forms (RFC 6749): string fields, unrecognised ones ignored (section 3.2).
    forms = {
        "/v1/token": "token-request.json",
        "/v1/revoke": "revoke-request.json",
        "/v1/introspect": "introspect-request.json",
        # the sign-in page's posts (gateway/oidc/signin.py) are forms too
        "/signin/password": "signin-password-request.json",
        "/signin/qr": "signin-form.json",
        "/signin/qr/complete": "signin-qr-complete-request.json",
        "/signin/cancel": "signin-form.json",
        "/signin/unit/list": "signin-form.json",
        "/signin/unit/verify": "signin-unit-verify-request.json",
        "/signin/unit/enter": "signin-unit-enter-request.json",
        "/signin/unit/cancel": "signin-form.json",
        "/authorize": "authorization-request.json",
        "/par": "authorization-request.json",
        "/logout": "logout-request.json",
    }
    for path, name in forms.items():
        content = document["paths"][path]["post"]["requestBody"]["content"]
        assert list(content) == ["application/x-www-form-urlencoded"], path
        media = content["application/x-www-form-urlencoded"]
        assert media["schema"] == {"$ref": f"./schemas/{name}"}
        schema = load_schema(name)
        for variant in schema.get("oneOf", [schema]):
            assert variant["additionalProperties"]["type"] == "string", name
            assert all(field.get("type", "string") == "string" for field in variant["properties"].values()), name
        examples = [media["example"]] if "example" in media else [e["value"] for e in media["examples"].values()]
        for example in examples:
            assert_valid(name, example)


# The parts of the HTTP surface this contract covers: QR login, password login (with its captcha),
# tokens and sessions (refresh, exchange, revocation, introspection, logout, session lists),
# discovery, liveness, readiness and metrics, the OpenID provider's endpoints and its sign-in page.
# Other parts are documented by their authors.
CONTRACT_PATHS = re.compile(
    r"^(/v1/qr(/|$)|/q/|/v1/login/password$|/v1/captcha$|/\.well-known/|/healthz$|/readyz$|/metrics$"
    r"|/v1/(token|revoke|introspect|logout)$|/v1/sessions(/|$)|/(authorize|par|userinfo|logout)$|/signin(/|$))"
)


def contract_routes(tmp_path: Path) -> list[BaseRoute]:
    app = create_app(make_settings(tmp_path, free_port()))
    return [route for route in app.routes if CONTRACT_PATHS.match(getattr(route, "path", ""))]


def test_every_documented_operation_is_served(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, free_port()))
    served = {(method, path) for path, method in served_operations(app.routes)}
    for path, item in openapi()["paths"].items():
        for method in item:
            assert (method.upper(), path) in served, f"{method.upper()} {path} is documented but not served"


def test_every_route_of_the_contract_is_documented(tmp_path: Path) -> None:
    """Each HTTP route of the covered parts is in openapi.yaml, each WebSocket route in asyncapi.yaml."""
    documented = {(method.upper(), path) for path, item in openapi()["paths"].items() for method in item}
    routes = contract_routes(tmp_path)
    assert len(routes) >= 19
    paths = {getattr(route, "path", "") for route in routes}
    for path in ("/v1/token", "/v1/revoke", "/v1/introspect", "/v1/logout", "/v1/sessions", "/v1/sessions/{sid}"):
        assert path in paths, f"{path} is no longer served: update CONTRACT_PATHS and openapi.yaml"
    assert {"/readyz", "/metrics"} <= paths  # /metrics: on the public port too when QRGATE_METRICS_PUBLIC (tests)
    for path, method in served_operations(routes):
        assert (method, path) in documented, f"{method} {path} is served but not in openapi.yaml"
    channels = {channel["address"] for channel in asyncapi()["channels"].values()}
    for route in routes:
        if isinstance(route, WebSocketRoute):
            assert route.path in channels, f"WebSocket {route.path} is not in asyncapi.yaml"


def served_operations(routes: list[BaseRoute], prefix: str = "") -> list[tuple[str, str]]:
    """(path, method) of each HTTP route, the image route spelled out as .svg and .png, the routes of
    mounted apps (the units service at /units) under their prefix."""
    found: list[tuple[str, str]] = []
    for route in routes:
        if isinstance(route, Mount):
            found.extend(served_operations(route.routes, prefix + route.path))
        elif isinstance(route, Route):
            paths = [prefix + route.path]
            if route.path.endswith(".{kind:str}"):
                paths = [prefix + route.path.replace(".{kind:str}", f".{kind}") for kind in MEDIA_TYPES]
            found.extend((path, method) for path in paths for method in sorted((route.methods or set()) - {"HEAD"}))
    return found


def test_asyncapi_names_every_message_and_close_code() -> None:
    document = asyncapi()
    assert document["asyncapi"].startswith("3.0.")
    channel = document["channels"]["qrEvents"]
    assert channel["address"] == "/v1/qr/{qr_id}/events"
    assert set(channel["parameters"]) == {"qr_id"}
    assert set(channel["messages"]) == set(WS_MESSAGES)
    messages = document["components"]["messages"]
    for name in WS_MESSAGES:
        assert channel["messages"][name] == {"$ref": f"#/components/messages/{name}"}
        message = messages[name]
        assert message["name"] == name
        ref = message["payload"]["$ref"]
        assert ref == f"./schemas/ws-{name}.json"
        assert load_schema(ref.removeprefix("./schemas/"))["properties"]["type"] == {"const": name}
        for example in message.get("examples", []):
            assert_valid(f"ws-{name}.json", example["payload"])
    operations = document["operations"]
    assert operations["receiveHello"]["action"] == "receive"
    assert operations["sendEvents"]["action"] == "send"
    sent = {pointer(document, ref["$ref"])["$ref"].rsplit("/", 1)[1] for ref in operations["sendEvents"]["messages"]}
    assert sent == set(WS_MESSAGES) - {"hello"}
    for ref in refs(document):
        if ref.startswith("#/"):
            pointer(document, ref)
    codes = {int(code) for code in channel["x-close-codes"]}
    assert codes == CLOSE_CODES
    description = document["info"]["description"]
    for code in CLOSE_CODES:
        assert f"| {code} |" in description, f"close code {code} is not in the description"
    # the codes the implementation uses are the documented ones
    used = {value for name, value in vars(qr_ws).items() if name.startswith("CLOSE_") and isinstance(value, int)}
    assert used <= CLOSE_CODES
    assert "always first" in description
    assert "reconnect" in description


# --- HTTP: QR login by long-poll -----------------------------------------------------------------


@pytest.mark.anyio
async def test_mint_image_and_landing_page(client: httpx.AsyncClient, gateway: ThreadedGateway) -> None:
    answer = await client.post("/v1/qr", json={"client_id": DESKTOP})
    assert answer.status_code == 201
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["cache-control"] == "no-store"
    minted = answer.json()
    assert_valid("mint-response.json", minted)
    assert minted["qr_content"] == f"{gateway.base_url}/q/{minted['qr_id']}"
    assert minted["events_url"] == f"{gateway.ws_url}/v1/qr/{minted['qr_id']}/events"
    assert minted["expires_in"] == gateway.settings.qr_ttl
    svg = await client.get(minted["image_url"])
    assert svg.status_code == 200
    assert svg.headers["content-type"] == "image/svg+xml"
    assert svg.text.startswith("<svg")
    png = await client.get(f"/v1/qr/{minted['qr_id']}.png")
    assert png.status_code == 200
    assert png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
    landing = await client.get(minted["qr_content"])
    assert landing.status_code == 200
    assert landing.headers["content-type"].startswith("text/html")
    assert "App" in landing.text
    assert "text/html" in documented_response("GET", "/q/{qr_id}", 200)["content"]


@pytest.mark.anyio
async def test_long_poll_flow_pending_scanned_confirmed_delivered(
    client: httpx.AsyncClient, gateway: ThreadedGateway
) -> None:
    phone = await login_phone(client, gateway)
    minted = await mint(client)
    qr_id, waiter = minted["qr_id"], bearer(minted["waiter_token"])

    pending = await client.get(f"/v1/qr/{qr_id}/state", params={"wait": 0}, headers=waiter)
    assert pending.status_code == 200
    assert pending.headers["cache-control"] == "no-store"
    assert_valid("state-view.json", pending.json())
    assert pending.json()["state"] == "pending"

    scanned = await phone.scan(qr_id)
    assert scanned.status_code == 200
    body = scanned.json()
    assert_valid("scan-response.json", body)
    assert body["qr_id"] == qr_id
    assert body["client_id"] == DESKTOP
    assert body["device_name"] == "财务室电脑"
    assert body["requester"]["ip"] == "127.0.0.1"
    assert body["proximity"] == "same_network"
    assert datetime.fromisoformat(body["requested_at"]).tzinfo is not None
    assert_problem(await phone.scan(qr_id), 409, "qr_already_scanned", operation=("POST", "/v1/qr/{qr_id}/scan"))

    view = (await client.get(f"/v1/qr/{qr_id}/state", headers=waiter)).json()
    assert_valid("state-view.json", view)
    assert view["state"] == "scanned"
    assert view["scanner"] == {"display_name": "张*"}

    # A long poll waiting on the scanned code answers when the person confirms, with the tokens.
    async def confirm_soon() -> None:
        await anyio.sleep(0.3)
        assert (await phone.confirm(qr_id)).status_code == 204

    async with anyio.create_task_group() as group:
        group.start_soon(confirm_soon)
        started = time.monotonic()
        answer = await client.get(f"/v1/qr/{qr_id}/state", params={"wait": 10}, headers=waiter)
    assert time.monotonic() - started < 5
    confirmed = answer.json()
    assert_valid("state-view.json", confirmed)
    assert confirmed["state"] == "confirmed"
    token = confirmed["token"]
    assert_valid("token-response.json", token)
    assert token["token_type"] == "Bearer"
    assert token["expires_in"] == gateway.settings.access_token_ttl
    check_access_token(token["access_token"], gateway=gateway, sub=phone.person["id"], client_id=DESKTOP, amr=["qr"])
    assert "cnf" not in jwt_parts(token["access_token"])[1]

    delivered = (await client.get(f"/v1/qr/{qr_id}/state", headers=waiter)).json()
    assert_valid("state-view.json", delivered)
    assert delivered["state"] == "delivered"
    assert "token" not in delivered

    assert_problem(await phone.confirm(qr_id), 409, "qr_wrong_state", operation=("POST", "/v1/qr/{qr_id}/confirm"))
    assert_problem(await phone.cancel(qr_id), 409, "qr_wrong_state", operation=("POST", "/v1/qr/{qr_id}/cancel"))
    assert_problem(
        await client.delete(f"/v1/qr/{qr_id}", headers=waiter),
        409,
        "qr_wrong_state",
        operation=("DELETE", "/v1/qr/{qr_id}"),
    )
    assert_problem(
        await client.get(f"/v1/qr/{qr_id}.svg"), 404, "qr_not_found", operation=("GET", "/v1/qr/{qr_id}.svg")
    )


@pytest.mark.anyio
async def test_qr_refusals_are_documented_problems(client: httpx.AsyncClient, gateway: ThreadedGateway) -> None:
    phone = await login_phone(client, gateway)
    other = await login_phone(client, gateway)
    minted = await mint(client)
    qr_id, waiter = minted["qr_id"], bearer(minted["waiter_token"])
    unknown = "A" * 22

    state = ("GET", "/v1/qr/{qr_id}/state")
    assert_problem(await client.get(f"/v1/qr/{qr_id}/state"), 401, "unauthorized", operation=state)
    wrong = bearer("w" * 43)
    assert_problem(
        await client.get(f"/v1/qr/{qr_id}/state", headers=wrong), 401, "invalid_waiter_token", operation=state
    )
    assert_problem(await client.get(f"/v1/qr/{unknown}/state", headers=waiter), 404, "qr_not_found", operation=state)
    for wait in ("31", "-1", "soon", "nan"):
        answer = await client.get(f"/v1/qr/{qr_id}/state", params={"wait": wait}, headers=waiter)
        assert_problem(answer, 400, "invalid_request", operation=state)

    scan = ("POST", "/v1/qr/{qr_id}/scan")
    assert_problem(await client.post(f"/v1/qr/{qr_id}/scan"), 401, "unauthorized", operation=scan)
    assert_problem(
        await client.post(f"/v1/qr/{qr_id}/scan", headers=bearer("a.b.c")), 401, "invalid_token", operation=scan
    )
    desktop_login = await client.post(
        "/v1/login/password",
        json={"identifier": phone.person["login_name"], "password": phone.person["password"], "client_id": DESKTOP},
    )
    desktop_token = bearer(desktop_login.json()["access_token"])
    answer = await client.post(f"/v1/qr/{qr_id}/scan", headers=desktop_token)
    assert_problem(answer, 403, "client_not_allowed", operation=scan)
    assert_problem(await phone.scan(unknown), 404, "qr_not_found", operation=scan)
    assert_problem(await phone.confirm(qr_id), 409, "qr_wrong_state", operation=("POST", "/v1/qr/{qr_id}/confirm"))

    assert (await phone.scan(qr_id)).status_code == 200
    assert_problem(await other.confirm(qr_id), 403, "not_scanner", operation=("POST", "/v1/qr/{qr_id}/confirm"))
    assert_problem(await other.cancel(qr_id), 403, "not_scanner", operation=("POST", "/v1/qr/{qr_id}/cancel"))

    abandon = ("DELETE", "/v1/qr/{qr_id}")
    assert_problem(await client.delete(f"/v1/qr/{qr_id}"), 401, "unauthorized", operation=abandon)
    assert_problem(
        await client.delete(f"/v1/qr/{qr_id}", headers=wrong), 401, "invalid_waiter_token", operation=abandon
    )
    assert_problem(await client.delete(f"/v1/qr/{unknown}", headers=waiter), 404, "qr_not_found", operation=abandon)
    assert (await client.delete(f"/v1/qr/{qr_id}", headers=waiter)).status_code == 204
    cancelled = (await client.get(f"/v1/qr/{qr_id}/state", headers=waiter)).json()
    assert_valid("state-view.json", cancelled)
    assert cancelled == {"state": "cancelled", "expires_in": cancelled["expires_in"]}


# --- WebSocket -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_websocket_flow_state_scanned_confirmed(client: httpx.AsyncClient, gateway: ThreadedGateway) -> None:
    phone = await login_phone(client, gateway)
    minted = await mint(client, dpop_jkt=JKT)
    qr_id = minted["qr_id"]
    ws = await hello(gateway, minted)
    first = await next_message(ws, "ws-state.json")
    assert first == {"type": "state", "state": "pending", "expires_in": first["expires_in"]}
    assert 0 < first["expires_in"] <= gateway.settings.qr_ttl

    assert (await phone.scan(qr_id)).status_code == 200
    scanned = await next_message(ws, "ws-scanned.json")
    assert scanned == {"type": "scanned", "scanner": {"display_name": "张*"}}

    # A second desktop connection (a reconnect) gets the current state first.
    again = await hello(gateway, minted)
    current = await next_message(again, "ws-state.json")
    assert current["state"] == "scanned"
    assert current["scanner"] == {"display_name": "张*"}

    assert (await phone.confirm(qr_id)).status_code == 204
    # Exactly one of the two connections receives the result; the other is told it was delivered.
    outcomes: dict[str, Any] = {}

    async def watch(name: str, conn: ClientConnection) -> None:
        with anyio.fail_after(10):
            try:
                raw = await conn.recv()
            except ConnectionClosed:
                outcomes[name] = conn.close_code
                return
        message = json.loads(raw)
        assert_valid("ws-confirmed.json", message)
        outcomes[name] = message
        outcomes[name + "-close"] = await closed_with(conn)

    async with anyio.create_task_group() as group:
        group.start_soon(watch, "first", ws)
        group.start_soon(watch, "second", again)
    results = [outcomes["first"], outcomes["second"]]
    confirmed = [result for result in results if isinstance(result, dict)]
    assert len(confirmed) == 1, outcomes
    assert 4409 in results
    winner = "first" if isinstance(outcomes["first"], dict) else "second"
    assert outcomes[winner + "-close"] == 1000
    token = confirmed[0]["token"]
    assert token["token_type"] == "DPoP"
    check_access_token(token["access_token"], gateway=gateway, sub=phone.person["id"], client_id=DESKTOP, amr=["qr"])
    assert jwt_parts(token["access_token"])[1]["cnf"] == {"jkt": JKT}

    # Once delivered: a new connection is refused with 4409, and the long poll reads `delivered`.
    late = await hello(gateway, minted)
    assert await closed_with(late) == 4409
    view = (await client.get(f"/v1/qr/{qr_id}/state", headers=bearer(minted["waiter_token"]))).json()
    assert view == {"state": "delivered", "expires_in": view["expires_in"]}


@pytest.mark.anyio
async def test_websocket_cancelled_by_phone_and_by_desktop(client: httpx.AsyncClient, gateway: ThreadedGateway) -> None:
    phone = await login_phone(client, gateway)
    by_phone = await mint(client)
    ws = await hello(gateway, by_phone)
    assert (await next_message(ws, "ws-state.json"))["state"] == "pending"
    assert (await phone.scan(by_phone["qr_id"])).status_code == 200
    await next_message(ws, "ws-scanned.json")
    assert (await phone.cancel(by_phone["qr_id"])).status_code == 204
    assert await next_message(ws, "ws-cancelled.json") == {"type": "cancelled"}
    assert await closed_with(ws) == 1000

    by_desktop = await mint(client)
    ws = await hello(gateway, by_desktop)
    await next_message(ws, "ws-state.json")
    abandoned = await client.delete(f"/v1/qr/{by_desktop['qr_id']}", headers=bearer(by_desktop["waiter_token"]))
    assert abandoned.status_code == 204
    assert await next_message(ws, "ws-cancelled.json") == {"type": "cancelled"}
    assert await closed_with(ws) == 1000

    # A desktop (re)connecting after the end gets the state first, then the terminal message.
    ws = await hello(gateway, by_desktop)
    assert (await next_message(ws, "ws-state.json"))["state"] == "cancelled"
    await next_message(ws, "ws-cancelled.json")
    assert await closed_with(ws) == 1000


@pytest.mark.anyio
async def test_websocket_refusals_close_with_documented_codes(
    client: httpx.AsyncClient, gateway: ThreadedGateway
) -> None:
    minted = await mint(client)
    ws = await hello(gateway, minted, token="not-the-waiter-token")
    assert await closed_with(ws) == 4401

    ws = await hello(gateway, {"qr_id": "A" * 22, "waiter_token": minted["waiter_token"]})
    assert await closed_with(ws) == 4404

    for bad in ("not json", '{"type": "hullo", "waiter_token": "x"}', '{"type": "hello"}', "[1, 2]"):
        ws = await connect(f"{gateway.ws_url}/v1/qr/{minted['qr_id']}/events")
        await ws.send(bad)
        assert await closed_with(ws) == 4400, bad

    ws = await connect(f"{gateway.ws_url}/v1/qr/{minted['qr_id']}/events", max_size=None)
    await ws.send(json.dumps({"type": "hello", "waiter_token": "x" * (gateway.settings.ws_max_message + 1)}))
    assert await closed_with(ws) == 1009

    # The code was never used: it still reads `pending` and a proper hello still works.
    ws = await hello(gateway, minted)
    assert (await next_message(ws, "ws-state.json"))["state"] == "pending"
    await ws.close()


@pytest.mark.slow  # waits for 5 s QR codes to expire
@pytest.mark.anyio
async def test_missing_hello_and_expiry(quick_gateway: ThreadedGateway) -> None:
    """On a gateway with 5 s QR codes: no hello within the timeout is 4400; an open code expires
    on the WebSocket and on the long poll alike; then scanning it is 410 and its image 404."""
    async with httpx.AsyncClient(base_url=quick_gateway.base_url, timeout=20) as client:
        phone = await login_phone(client, quick_gateway)
        silent = await connect(f"{quick_gateway.ws_url}/v1/qr/{'A' * 22}/events")
        assert await closed_with(silent) == 4400

        waited = await mint(client)
        polled = await mint(client)
        ws = await hello(quick_gateway, waited)
        first = await next_message(ws, "ws-state.json")
        assert first["state"] == "pending"
        assert first["expires_in"] <= 5

        poll = await client.get(
            f"/v1/qr/{polled['qr_id']}/state", params={"wait": 15}, headers=bearer(polled["waiter_token"])
        )
        assert poll.status_code == 200
        assert_valid("state-view.json", poll.json())
        assert poll.json() == {"state": "expired", "expires_in": 0}

        assert await next_message(ws, "ws-expired.json", timeout=10) == {"type": "expired"}
        assert await closed_with(ws) == 1000

        again = await hello(quick_gateway, waited)
        assert (await next_message(again, "ws-state.json")) == {"type": "state", "state": "expired", "expires_in": 0}
        await next_message(again, "ws-expired.json")
        assert await closed_with(again) == 1000

        assert_problem(await phone.scan(waited["qr_id"]), 410, "qr_expired", operation=("POST", "/v1/qr/{qr_id}/scan"))
        abandon = await client.delete(f"/v1/qr/{waited['qr_id']}", headers=bearer(waited["waiter_token"]))
        assert_problem(abandon, 410, "qr_expired", operation=("DELETE", "/v1/qr/{qr_id}"))
        image = await client.get(f"/v1/qr/{waited['qr_id']}.png")
        assert_problem(image, 404, "qr_not_found", operation=("GET", "/v1/qr/{qr_id}.png"))


@pytest.mark.anyio
async def test_server_shutdown_closes_with_1001(tmp_path_factory: pytest.TempPathFactory) -> None:
    port = free_port()
    server = ThreadedGateway(make_settings(tmp_path_factory.mktemp("draining"), port), port).start()
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            minted = await mint(client)
        ws = await hello(server, minted)
        await next_message(ws, "ws-state.json")
        await asyncio.get_running_loop().run_in_executor(None, server.stop)
        assert await closed_with(ws) == 1001
    finally:
        server.stop()


# --- password login, problems, discovery ---------------------------------------------------------


@pytest.mark.anyio
async def test_password_login_success_and_wrong_password(client: httpx.AsyncClient, gateway: ThreadedGateway) -> None:
    person = new_identity()
    person_id = gateway.add_person(**person)
    login = ("POST", "/v1/login/password")
    # Successes first: after a wrong password the next attempt needs a captcha.
    for identifier in (person["phone"], person["login_name"], person["id_number"]):
        answer = await client.post(
            "/v1/login/password", json={"identifier": identifier, "password": person["password"], "client_id": "web"}
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["cache-control"] == "no-store"
        tokens = answer.json()
        assert_valid("token-response.json", tokens)
        assert tokens["token_type"] == "Bearer"
        check_access_token(tokens["access_token"], gateway=gateway, sub=person_id, client_id="web", amr=["pwd"])
        claims = jwt_parts(tokens["access_token"])[1]
        assert person["id_number"] not in str(claims)
        assert person["phone"] not in str(claims)

    wrong = await client.post(
        "/v1/login/password", json={"identifier": person["login_name"], "password": "Wrong0ne!", "client_id": "web"}
    )
    assert_problem(wrong, 401, "invalid_credentials", operation=login)
    assert wrong.json()["attempts_left"] == gateway.settings.password_max_failures - 1
    assert wrong.json()["captcha_required"] is True
    nobody = {"identifier": f"nobody_{uuid.uuid4().hex[:8]}", "password": "Wrong0ne!", "client_id": "web"}
    unknown = await client.post("/v1/login/password", json=nobody)
    assert_problem(unknown, 401, "invalid_credentials", operation=login)
    assert unknown.json().keys() == wrong.json().keys()

    # After a wrong password the next attempt needs a captcha: 400 without one, 400 with a wrong one.
    right = {"identifier": person["phone"], "password": person["password"], "client_id": "web"}
    assert_problem(await client.post("/v1/login/password", json=right), 400, "captcha_required", operation=login)
    issued = await client.post("/v1/captcha")
    assert issued.status_code == 201
    assert issued.headers["cache-control"] == "no-store"
    assert_valid("captcha.json", issued.json())
    guess = {**right, "captcha_id": issued.json()["captcha_id"], "captcha_answer": "????"}
    assert_problem(await client.post("/v1/login/password", json=guess), 400, "captcha_invalid", operation=login)
    text = gateway.settings.captcha_test_answer
    if text:  # a test gateway's captchas all show this text
        solved = {
            **right,
            "captcha_id": (await client.post("/v1/captcha")).json()["captcha_id"],
            "captcha_answer": text,
        }
        success = await client.post("/v1/login/password", json=solved)
        assert success.status_code == 200, success.text
        assert_valid("token-response.json", success.json())


@pytest.mark.anyio
async def test_problem_bodies(client: httpx.AsyncClient) -> None:
    mint_op = ("POST", "/v1/qr")
    assert_problem(await client.get("/no/such/thing"), 404, "not_found")
    assert_problem(
        await client.get(f"/v1/qr/{'A' * 22}.svg"), 404, "qr_not_found", operation=("GET", "/v1/qr/{qr_id}.svg")
    )
    assert_problem(await client.get("/v1/qr"), 405, "method_not_allowed")
    assert_problem(await client.put("/healthz"), 405, "method_not_allowed")
    json_headers = {"Content-Type": "application/json"}
    assert_problem(
        await client.post("/v1/qr", content=b"{", headers=json_headers), 400, "malformed_json", operation=mint_op
    )
    assert_problem(await client.post("/v1/qr", json=["client_id"]), 400, "invalid_request", operation=mint_op)
    assert_problem(await client.post("/v1/qr", json={"client_id": 5}), 400, "invalid_request", operation=mint_op)
    answer = await client.post("/v1/qr", json={"client_id": DESKTOP, "colour": "red"})
    assert_problem(answer, 400, "invalid_request", operation=mint_op)
    assert "colour" in answer.json()["detail"]
    answer = await client.post("/v1/qr", json={"client_id": DESKTOP, "dpop_jkt": "short"})
    assert_problem(answer, 400, "invalid_request", operation=mint_op)
    assert_problem(await client.post("/v1/qr", json={"client_id": "nobody"}), 400, "unknown_client", operation=mint_op)
    assert_problem(
        await client.post("/v1/qr", json={"client_id": "mobile-app"}), 403, "client_not_allowed", operation=mint_op
    )
    big = b'{"client_id": "' + b"x" * 17 * 1024 + b'"}'
    assert_problem(
        await client.post("/v1/qr", content=big, headers=json_headers), 413, "body_too_large", operation=mint_op
    )
    answer = await client.post("/v1/login/password", content=big, headers=json_headers)
    assert_problem(answer, 413, "body_too_large", operation=("POST", "/v1/login/password"))
    form = await client.post("/v1/qr", data={"client_id": DESKTOP})
    assert_problem(form, 415, "unsupported_media_type", operation=mint_op)
    answer = await client.post("/v1/login/password", content=b"{}", headers={"Content-Type": "text/plain"})
    assert_problem(answer, 415, "unsupported_media_type", operation=("POST", "/v1/login/password"))


@pytest.mark.anyio
async def test_discovery_documents(client: httpx.AsyncClient, gateway: ThreadedGateway) -> None:
    jwks = await client.get("/.well-known/jwks.json")
    assert jwks.status_code == 200
    assert jwks.headers["content-type"] == "application/jwk-set+json"
    assert "application/jwk-set+json" in documented_response("GET", "/.well-known/jwks.json", 200)["content"]
    assert_valid("jwks.json", jwks.json())

    config = await client.get("/.well-known/openid-configuration")
    assert config.status_code == 200
    assert config.headers["content-type"] == "application/json"
    metadata = config.json()
    assert_valid("openid-configuration.json", metadata)
    assert metadata["issuer"] == gateway.base_url
    assert metadata["jwks_uri"] == gateway.base_url + "/.well-known/jwks.json"
    assert gateway.settings.signing_alg in metadata["id_token_signing_alg_values_supported"]
    required_claims = set(load_schema("access-token-claims.json")["required"])
    assert required_claims <= set(metadata["claims_supported"])
    # The token endpoint's documented grants are the advertised ones; introspection is where documented.
    grants = {variant["properties"]["grant_type"]["const"] for variant in load_schema("token-request.json")["oneOf"]}
    assert set(metadata["grant_types_supported"]) == grants
    assert metadata["introspection_endpoint"] == gateway.base_url + "/v1/introspect"

    health = await client.get("/healthz")
    assert health.status_code == 200
    assert_valid("health.json", health.json())


def test_problem_codes_are_snake_case() -> None:
    pattern = re.compile(load_schema("problem.json")["properties"]["code"]["pattern"])
    for code in load_schema("problem.json")["properties"]["code"]["examples"]:
        assert pattern.fullmatch(code), code


# --- tokens and sessions -------------------------------------------------------------------------

TOKEN = ("POST", "/v1/token")
REVOKE = ("POST", "/v1/revoke")
INTROSPECT = ("POST", "/v1/introspect")
LOGOUT = ("POST", "/v1/logout")
SESSIONS = ("GET", "/v1/sessions")
END_SESSION = ("DELETE", "/v1/sessions/{sid}")


@pytest.fixture(scope="module")
def sso_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedGateway]:
    server = start_sso_gateway(tmp_path_factory.mktemp("sso"))
    yield server
    server.stop()


@pytest.fixture
async def sso(sso_gateway: ThreadedGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sso_gateway.base_url, timeout=20) as http:
        yield http


async def password_tokens(client: httpx.AsyncClient, server: ThreadedGateway) -> tuple[Phone, dict[str, Any]]:
    """A new person logged in to the mobile app: the phone, and its token response."""
    person = new_identity()
    person["id"] = await asyncio.to_thread(server.add_person, **person)
    answer = await client.post(
        "/v1/login/password",
        json={"identifier": person["phone"], "password": person["password"], "client_id": "mobile-app"},
    )
    assert answer.status_code == 200, answer.text
    tokens: dict[str, Any] = answer.json()
    return Phone(client, person, tokens["access_token"]), tokens


async def qr_tokens(client: httpx.AsyncClient, phone: Phone, **extra: str) -> dict[str, Any]:
    """A desktop logged in by QR code (scanned and confirmed by `phone`): its token response."""
    minted = await mint(client, **extra)
    assert (await phone.scan(minted["qr_id"])).status_code == 200
    assert (await phone.confirm(minted["qr_id"])).status_code == 204
    view = (await client.get(f"/v1/qr/{minted['qr_id']}/state", headers=bearer(minted["waiter_token"]))).json()
    assert view["state"] == "confirmed", view
    token: dict[str, Any] = view["token"]
    return token


def refresh_form(refresh_token: str, client_id: str = "mobile-app") -> dict[str, str]:
    return {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id}


def exchange_form(subject_token: str, audience: str = "units", **extra: str) -> dict[str, str]:
    return {
        "grant_type": EXCHANGE,
        "subject_token": subject_token,
        "subject_token_type": ACCESS,
        "audience": audience,
        **extra,
    }


def client_assertion(audience: str, key: ECKey = SERVICE_KEY, **overrides: Any) -> dict[str, str]:
    """private_key_jwt (RFC 7523) form fields of audit-service."""
    claims = {
        "iss": "audit-service",
        "sub": "audit-service",
        "aud": audience,
        "exp": int(time.time()) + 60,
        "jti": uuid.uuid4().hex,
        **overrides,
    }
    signed = jwt.encode({"alg": "ES256", "kid": key.kid}, claims, key, algorithms=["ES256"])
    return {"client_assertion_type": ASSERTION, "client_assertion": signed}


def dpop(key: DpopKey, method: str, url: str, access_token: str) -> dict[str, str]:
    return {"Authorization": f"DPoP {access_token}", "DPoP": key.proof(method, url, access_token)}


@pytest.mark.anyio
async def test_refresh_rotates_and_reuse_ends_the_session(sso: httpx.AsyncClient, sso_gateway: ThreadedGateway) -> None:
    phone, tokens = await password_tokens(sso, sso_gateway)
    sid = jwt_parts(tokens["access_token"])[1]["sid"]
    answer = await sso.post("/v1/token", data=refresh_form(tokens["refresh_token"]))
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["pragma"] == "no-cache"
    refreshed = assert_documented(answer, *TOKEN)
    assert_valid("token-response.json", refreshed)
    assert refreshed["token_type"] == "Bearer"
    assert refreshed["refresh_token"] != tokens["refresh_token"]
    sub = phone.person["id"]
    check_access_token(refreshed["access_token"], gateway=sso_gateway, sub=sub, client_id="mobile-app", amr=["pwd"])
    assert jwt_parts(refreshed["access_token"])[1]["sid"] == sid  # the same session

    # Another client may not use it; then the spent token comes back: the whole session ends.
    other = await sso.post("/v1/token", data=refresh_form(refreshed["refresh_token"], client_id="web"))
    assert_problem(other, 400, "invalid_grant", operation=TOKEN, error="invalid_grant")
    reused = await sso.post("/v1/token", data=refresh_form(tokens["refresh_token"]))
    assert_problem(reused, 400, "refresh_token_reused", operation=TOKEN, error="invalid_grant")
    current = await sso.post("/v1/token", data=refresh_form(refreshed["refresh_token"]))
    assert_problem(current, 400, "invalid_grant", operation=TOKEN, error="invalid_grant")
    ended = await sso.get("/v1/sessions", headers=bearer(refreshed["access_token"]))
    assert_problem(ended, 401, "session_ended", operation=SESSIONS)

    # Malformed requests.
    for junk in ("x", "a" * 22 + "." + "b" * 43):
        malformed = await sso.post("/v1/token", data=refresh_form(junk))
        assert_problem(malformed, 400, "invalid_grant", operation=TOKEN, error="invalid_grant")
    missing = await sso.post("/v1/token", data={"grant_type": "refresh_token", "refresh_token": "x"})
    assert_problem(missing, 400, "invalid_request", operation=TOKEN, error="invalid_request")
    password = await sso.post("/v1/token", data={"grant_type": "password", "username": "u", "password": "p"})
    assert_problem(password, 400, "unsupported_grant_type", operation=TOKEN, error="unsupported_grant_type")
    twice = await sso.post("/v1/token", content=b"grant_type=refresh_token&grant_type=refresh_token", headers=FORM)
    assert_problem(twice, 400, "invalid_request", operation=TOKEN, error="invalid_request")
    as_json = await sso.post("/v1/token", json=refresh_form(refreshed["refresh_token"]))
    assert_problem(as_json, 415, "unsupported_media_type", operation=TOKEN)
    big = b"grant_type=refresh_token&refresh_token=" + b"x" * 17 * 1024
    assert_problem(await sso.post("/v1/token", content=big, headers=FORM), 413, "body_too_large", operation=TOKEN)


@pytest.mark.anyio
async def test_dpop_bound_refresh_and_session_list(sso: httpx.AsyncClient, sso_gateway: ThreadedGateway) -> None:
    """The `dpopToken` scheme: a desktop whose QR code named its key refreshes and calls with proofs."""
    for operation, scopes in ((SESSIONS, ["sessions"]), (LOGOUT, []), (END_SESSION, ["sessions"])):
        security = openapi()["paths"][operation[1]][operation[0].lower()]["security"]
        assert {"dpopToken": scopes} in security, operation
    assert {"dpopToken": []} in openapi()["paths"]["/v1/qr/{qr_id}/scan"]["post"]["security"]
    key = DpopKey()
    phone, _ = await password_tokens(sso, sso_gateway)
    desktop = await qr_tokens(sso, phone, dpop_jkt=key.jkt)
    assert desktop["token_type"] == "DPoP"
    access = desktop["access_token"]
    assert jwt_parts(access)[1]["cnf"] == {"jkt": key.jkt}
    token_url = f"{sso_gateway.base_url}/v1/token"
    sessions_url = f"{sso_gateway.base_url}/v1/sessions"

    unproven = await sso.post("/v1/token", data=refresh_form(desktop["refresh_token"], DESKTOP))
    assert_problem(unproven, 400, "invalid_dpop_proof", operation=TOKEN, error="invalid_dpop_proof")
    stolen = await sso.post(
        "/v1/token",
        data=refresh_form(desktop["refresh_token"], DESKTOP),
        headers={"DPoP": DpopKey().proof("POST", token_url)},
    )
    assert_problem(stolen, 400, "invalid_dpop_proof", operation=TOKEN, error="invalid_dpop_proof")
    proven = await sso.post(
        "/v1/token",
        data=refresh_form(desktop["refresh_token"], DESKTOP),
        headers={"DPoP": key.proof("POST", token_url)},
    )
    assert proven.status_code == 200, proven.text
    refreshed = assert_documented(proven, *TOKEN)
    assert refreshed["token_type"] == "DPoP"
    access = refreshed["access_token"]
    check_access_token(access, gateway=sso_gateway, sub=phone.person["id"], client_id=DESKTOP, amr=["qr"])
    assert jwt_parts(access)[1]["cnf"] == {"jkt": key.jkt}
    # An exchanged token stays bound to the same key.
    exchanged = assert_documented(await sso.post("/v1/token", data=exchange_form(access, client_id=DESKTOP)), *TOKEN)
    assert exchanged["token_type"] == "DPoP"
    assert jwt_parts(exchanged["access_token"])[1]["cnf"] == {"jkt": key.jkt}

    as_bearer = await sso.get(
        "/v1/sessions", headers={**bearer(access), "DPoP": key.proof("GET", sessions_url, access)}
    )
    assert_problem(as_bearer, 401, "invalid_dpop_proof", operation=SESSIONS, challenge="DPoP")
    no_proof = await sso.get("/v1/sessions", headers={"Authorization": f"DPoP {access}"})
    assert_problem(no_proof, 401, "invalid_dpop_proof", operation=SESSIONS, challenge="DPoP")
    listed = await sso.get("/v1/sessions", headers=dpop(key, "GET", sessions_url, access))
    assert listed.status_code == 200, listed.text
    sessions = assert_documented(listed, *SESSIONS)["sessions"]
    assert [s["client_id"] for s in sessions if s["current"]] == [DESKTOP]
    # An unbound token under the DPoP scheme claims a binding it does not have (issue 15): refused.
    unbound = phone.headers["Authorization"].removeprefix("Bearer ")
    claimed = await sso.get("/v1/sessions", headers={"Authorization": f"DPoP {unbound}"})
    assert_problem(claimed, 401, "invalid_token", operation=SESSIONS)
    logout = await sso.post("/v1/logout", headers=dpop(key, "POST", f"{sso_gateway.base_url}/v1/logout", access))
    assert logout.status_code == 204
    assert_documented(logout, *LOGOUT)


@pytest.mark.anyio
async def test_token_exchange(sso: httpx.AsyncClient, sso_gateway: ThreadedGateway) -> None:
    phone, _ = await password_tokens(sso, sso_gateway)
    desktop = await qr_tokens(sso, phone)
    subject = jwt_parts(desktop["access_token"])[1]
    form = exchange_form(desktop["access_token"], client_id=DESKTOP)
    answer = await sso.post("/v1/token", data=form)
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    exchanged = assert_documented(answer, *TOKEN)
    assert_valid("token-exchange-response.json", exchanged)
    assert exchanged["issued_token_type"] == ACCESS
    assert exchanged["token_type"] == "Bearer"
    assert exchanged["scope"] == "units.read units.verify"
    assert exchanged["expires_in"] == sso_gateway.settings.access_token_ttl
    header, claims = jwt_parts(exchanged["access_token"])
    assert_valid("access-token-header.json", header)
    assert_valid("access-token-claims.json", claims)
    assert claims["aud"] == "units"
    assert claims["scope"] == "units.read units.verify"
    assert "act" not in claims
    for same in ("sub", "sid", "amr", "auth_time", "client_id"):
        assert claims[same] == subject[same], same

    narrower = await sso.post("/v1/token", data={**form, "scope": "units.read", "requested_token_type": ACCESS})
    assert assert_documented(narrower, *TOKEN)["scope"] == "units.read"
    assert jwt_parts(narrower.json()["access_token"])[1]["scope"] == "units.read"

    # A confidential client exchanges on the person's behalf (HTTP Basic, or the secret in the form): `act`.
    service = exchange_form(desktop["access_token"], "payroll")
    by_basic = await sso.post("/v1/token", data=service, auth=("payroll-service", SERVICE_SECRET))
    by_form = await sso.post(
        "/v1/token", data={**service, "client_id": "payroll-service", "client_secret": SERVICE_SECRET}
    )
    for answer in (by_basic, by_form):
        acting = assert_documented(answer, *TOKEN)
        assert acting["scope"] == "payroll.read"
        acted = jwt_parts(acting["access_token"])[1]
        assert_valid("access-token-claims.json", acted)
        assert acted["act"] == {"sub": "payroll-service"}
        assert (acted["aud"], acted["sub"]) == ("payroll", phone.person["id"])

    # Refusals, each with its OAuth error.
    refusals: list[tuple[dict[str, str], int, str]] = [
        ({**form, "audience": "nowhere"}, 400, "invalid_target"),
        ({**form, "scope": "units.admin"}, 400, "invalid_scope"),
        ({**form, "audience": "payroll"}, 403, "unauthorized_client"),  # not for public clients
        ({**form, "client_id": "mobile-app"}, 400, "invalid_grant"),  # the subject token is the desktop's
        ({**form, "subject_token": "a.b.c"}, 400, "invalid_grant"),
        ({**form, "subject_token": exchanged["access_token"]}, 400, "invalid_grant"),  # not for the gateway
        ({**form, "subject_token_type": "urn:ietf:params:oauth:token-type:jwt"}, 400, "invalid_request"),
        ({**form, "requested_token_type": "urn:ietf:params:oauth:token-type:refresh_token"}, 400, "invalid_request"),
        ({key: value for key, value in form.items() if key != "subject_token"}, 400, "invalid_request"),
        ({**form, "client_id": "nosy-service", "client_secret": "nosy-secret"}, 403, "unauthorized_client"),
        ({**form, "client_id": "payroll-service", "client_secret": "wrong"}, 401, "invalid_client"),
    ]
    for data, status, code in refusals:
        assert_problem(await sso.post("/v1/token", data=data), status, code, operation=TOKEN, error=code)

    # A token of an ended session exchanges for nothing.
    assert (await sso.post("/v1/logout", headers=bearer(desktop["access_token"]))).status_code == 204
    after = await sso.post("/v1/token", data=form)
    assert_problem(after, 400, "invalid_grant", operation=TOKEN, error="invalid_grant")


@pytest.mark.anyio
async def test_introspection_and_revocation(sso: httpx.AsyncClient, sso_gateway: ThreadedGateway) -> None:
    phone, tokens = await password_tokens(sso, sso_gateway)
    service = ("payroll-service", SERVICE_SECRET)
    introspect_url = f"{sso_gateway.base_url}/v1/introspect"

    answer = await sso.post("/v1/introspect", data={"token": tokens["access_token"]}, auth=service)
    assert answer.headers["cache-control"] == "no-store"
    active = assert_documented(answer, *INTROSPECT)
    assert_valid("introspection.json", active)
    claims = jwt_parts(tokens["access_token"])[1]
    assert active == {"active": True, "token_type": "access_token", **claims}

    by_key = await sso.post(
        "/v1/introspect", data={"token": tokens["refresh_token"], **client_assertion(introspect_url)}
    )
    refresh = assert_documented(by_key, *INTROSPECT)
    assert refresh["token_type"] == "refresh_token"
    assert (refresh["sub"], refresh["sid"], refresh["client_id"]) == (phone.person["id"], claims["sid"], "mobile-app")
    assert refresh["iss"] == sso_gateway.base_url
    assert refresh["exp"] > time.time()

    # An exchanged token (another audience) is recognised too, with its scope and actor.
    desktop = await qr_tokens(sso, phone)
    exchanged = await sso.post("/v1/token", data=exchange_form(desktop["access_token"], "payroll"), auth=service)
    form = {"token": exchanged.json()["access_token"], "client_id": service[0], "client_secret": service[1]}
    seen = assert_documented(await sso.post("/v1/introspect", data=form), *INTROSPECT)
    assert (seen["aud"], seen["scope"], seen["act"]) == ("payroll", "payroll.read", {"sub": "payroll-service"})

    # Revoking the refresh token ends the session: both tokens are inactive, and nothing more is said.
    revoked = await sso.post("/v1/revoke", data={"token": tokens["refresh_token"], "token_type_hint": "refresh_token"})
    assert revoked.status_code == 200
    assert revoked.headers["cache-control"] == "no-store"
    assert assert_documented(revoked, *REVOKE) is None
    for token in (tokens["refresh_token"], tokens["access_token"], "not-a-token", ""):
        inactive = await sso.post("/v1/introspect", data={"token": token}, auth=service)
        assert assert_documented(inactive, *INTROSPECT) == {"active": False}, token
    # Revoking by access token ends its session just as well; an unknown token is no error (RFC 7009).
    assert (await sso.post("/v1/revoke", data={"token": desktop["access_token"]})).status_code == 200
    gone = await sso.post("/v1/token", data=refresh_form(desktop["refresh_token"], DESKTOP))
    assert_problem(gone, 400, "invalid_grant", operation=TOKEN, error="invalid_grant")
    assert assert_documented(await sso.post("/v1/revoke", data={"token": "nothing"}), *REVOKE) is None
    missing = await sso.post("/v1/revoke", data={"token_type_hint": "refresh_token"})
    assert_problem(missing, 400, "invalid_request", operation=REVOKE, error="invalid_request")
    twice = await sso.post("/v1/revoke", content=b"token=a&token=b", headers=FORM)
    assert_problem(twice, 400, "invalid_request", operation=REVOKE, error="invalid_request")
    as_json = await sso.post("/v1/revoke", json={"token": "a"})
    assert_problem(as_json, 415, "unsupported_media_type", operation=REVOKE)

    # Who may introspect.
    anonymous = await sso.post("/v1/introspect", data={"token": "x"})
    assert_problem(anonymous, 401, "invalid_client", operation=INTROSPECT, error="invalid_client")
    bad_clients: list[dict[str, Any]] = [
        {"auth": ("payroll-service", "wrong")},
        {"auth": ("nobody", SERVICE_SECRET)},
        {"headers": {"Authorization": "Basic not-base64!"}},
        {"headers": {"Authorization": b"Basic \xe9t\xe9"}},  # not ASCII (was a 500)
        {"data": {"token": "x", **client_assertion(introspect_url, key=ECKey.generate_key("P-256", auto_kid=True))}},
        {"data": {"token": "x", **client_assertion("https://elsewhere.example")}},
        {"data": {"token": "x", **client_assertion(introspect_url, aud=5)}},  # was a 500
        {
            "data": {"token": "x", "client_assertion_type": ASSERTION, "client_assertion": "e30.WzFd.c2ln"}
        },  # [1]: was a 500
        {"data": {"token": "x", "client_assertion_type": "basic", "client_assertion": "a.b.c"}},
    ]
    for request in bad_clients:
        refused = await sso.post("/v1/introspect", **{"data": {"token": "x"}, **request})
        assert_problem(refused, 401, "invalid_client", operation=INTROSPECT, error="invalid_client")
    replay = {"token": "x", **client_assertion(introspect_url)}
    assert (await sso.post("/v1/introspect", data=replay)).status_code == 200
    replayed = await sso.post("/v1/introspect", data=replay)
    assert_problem(replayed, 401, "invalid_client", operation=INTROSPECT, error="invalid_client")
    nosy = await sso.post("/v1/introspect", data={"token": "x"}, auth=("nosy-service", "nosy-secret"))
    assert_problem(nosy, 403, "unauthorized_client", operation=INTROSPECT, error="unauthorized_client")
    as_json = await sso.post("/v1/introspect", json={"token": "x"}, auth=service)
    assert_problem(as_json, 415, "unsupported_media_type", operation=INTROSPECT)


@pytest.mark.anyio
async def test_session_list_end_session_and_logout(sso: httpx.AsyncClient, sso_gateway: ThreadedGateway) -> None:
    phone, tokens = await password_tokens(sso, sso_gateway)
    desktop = await qr_tokens(sso, phone)
    listed = await sso.get("/v1/sessions", headers=phone.headers)
    assert listed.status_code == 200
    assert listed.headers["cache-control"] == "no-store"
    body = assert_documented(listed, *SESSIONS)
    assert_valid("sessions.json", body)
    assert body["display_name"] == "张*"  # the person's masked real name, for the phone app's greeting
    sessions = body["sessions"]
    assert [s["created_at"] for s in sessions] == sorted(s["created_at"] for s in sessions)  # oldest first (to 1 s)
    mobile, pc = sorted(sessions, key=lambda s: s["client_id"] != "mobile-app")
    assert (mobile["client_id"], pc["client_id"]) == ("mobile-app", DESKTOP)
    assert (mobile["current"], mobile["amr"], mobile["device_name"]) == (True, ["pwd"], "")
    assert (pc["current"], pc["amr"], pc["device_name"]) == (False, ["qr"], "财务室电脑")
    assert pc["sid"] == jwt_parts(desktop["access_token"])[1]["sid"]
    assert abs(pc["created_at"] - time.time()) < 60
    assert pc["last_used"] >= pc["created_at"]

    # The phone signs out the desktop; nobody else can, and an unknown sid is the same 404.
    stranger, _ = await password_tokens(sso, sso_gateway)
    refused = await sso.delete(f"/v1/sessions/{pc['sid']}", headers=stranger.headers)
    assert_problem(refused, 404, "session_not_found", operation=END_SESSION)
    unknown = await sso.delete(f"/v1/sessions/{'s' * 22}", headers=phone.headers)
    assert_problem(unknown, 404, "session_not_found", operation=END_SESSION)
    ended = await sso.delete(f"/v1/sessions/{pc['sid']}", headers=phone.headers)
    assert ended.status_code == 204
    assert assert_documented(ended, *END_SESSION) is None
    assert_problem(
        await sso.get("/v1/sessions", headers=bearer(desktop["access_token"])), 401, "session_ended", operation=SESSIONS
    )
    again = await sso.delete(f"/v1/sessions/{pc['sid']}", headers=phone.headers)
    assert_problem(again, 404, "session_not_found", operation=END_SESSION)
    remaining = (await sso.get("/v1/sessions", headers=phone.headers)).json()["sessions"]
    assert [s["sid"] for s in remaining] == [mobile["sid"]]

    # Logout ends the caller's session: its access token and its refresh token.
    assert_problem(await sso.post("/v1/logout"), 401, "unauthorized", operation=LOGOUT)
    assert_problem(await sso.post("/v1/logout", headers=bearer("a.b.c")), 401, "invalid_token", operation=LOGOUT)
    assert_problem(await sso.get("/v1/sessions"), 401, "unauthorized", operation=SESSIONS)
    assert_problem(await sso.delete(f"/v1/sessions/{mobile['sid']}"), 401, "unauthorized", operation=END_SESSION)
    logout = await sso.post("/v1/logout", headers=phone.headers)
    assert logout.status_code == 204
    assert assert_documented(logout, *LOGOUT) is None
    assert_problem(await sso.post("/v1/logout", headers=phone.headers), 401, "session_ended", operation=LOGOUT)
    assert_problem(await sso.get("/v1/sessions", headers=phone.headers), 401, "session_ended", operation=SESSIONS)
    refresh = await sso.post("/v1/token", data=refresh_form(tokens["refresh_token"]))
    assert_problem(refresh, 400, "invalid_grant", operation=TOKEN, error="invalid_grant")


@pytest.mark.anyio
async def test_readiness_and_metrics(client: httpx.AsyncClient) -> None:
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.headers["content-type"] == "application/json"
    body = assert_documented(ready, "GET", "/readyz")
    assert_valid("readiness.json", body)
    assert body == {"status": "ready", "checks": {"store": "ok", "database": "ok", "keys": "ok", "draining": "no"}}

    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain; version=")
    assert_documented(metrics, "GET", "/metrics")
    assert "# TYPE qrgate_http_request_duration_seconds histogram" in metrics.text
    for name in ("qrgate_qr_events_total", "qrgate_tokens_issued_total", "qrgate_refreshes_total"):
        assert f"# HELP {name} " in metrics.text, name


@pytest.mark.slow  # a shutdown with a 2 s drain
@pytest.mark.anyio
async def test_readiness_fails_first_while_draining(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Shutdown begins with 503 `not_ready` (still served, same shape) before the server stops."""
    port = free_port()
    server = ThreadedGateway(make_settings(tmp_path_factory.mktemp("readiness"), port), port).start()
    server.server.drain_delay = 2.0
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
            assert (await http.get("/readyz")).status_code == 200
            stopping = asyncio.get_running_loop().run_in_executor(None, server.stop)
            for _ in range(75):  # the drain begins within the first moments of the shutdown
                answer = await http.get("/readyz")
                if answer.status_code != 200:
                    break
                await anyio.sleep(0.02)
            assert answer.status_code == 503
            assert answer.headers["content-type"] == "application/json"
            body = assert_documented(answer, "GET", "/readyz")
            assert_valid("readiness.json", body)
            assert body == {
                "status": "not_ready",
                "checks": {"store": "ok", "database": "ok", "keys": "ok", "draining": "yes"},
            }
            await stopping
    finally:
        server.stop()

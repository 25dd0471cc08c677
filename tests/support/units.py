"""The units service under test: a `qrgate serve` gateway process (with the service mounted at /units)
and a `qrgate serve-units` process trusting it over HTTP, on one SQLite database; a test PKI; and
small clients for the journeys. The `units_stack` fixture is in tests/support/units_fixtures.py.

The gateway's mounted service accepts legacy logins (its cut-over is in the future); the separate
service keeps the default cut-over (2020-01-01), so its legacy logins answer 410.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from stdnum.cn import uscc

from gateway import cli
from gateway.settings import Settings
from gateway.tokens.issuer import TokenIssuer
from gateway.tokens.keys import KeyFile
from tests.conftest import new_identity
from tests.support.accounts import fresh_ip
from tests.support.gateway_server import CAPTCHA_ANSWER

LEGACY_OPEN_UNTIL = "2999-01-01"
DECLARATION_PASSWORD = "Decl-0001"
_tins = itertools.count(1)


def new_tin() -> str:
    """A fresh, valid unified social credit code (91 = enterprise, 110000 = Beijing)."""
    body = f"91110000{next(_tins):09d}"
    return body + str(uscc.calc_check_digit(body))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return decoded


def header_of(token: str) -> dict[str, Any]:
    segment = token.split(".")[0]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return decoded


# --- a test PKI --------------------------------------------------------------------------------


def _name(common_name: str, **attributes: str) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"), x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    parts += [x509.NameAttribute(getattr(NameOID, oid), value) for oid, value in attributes.items()]
    return x509.Name(parts)


def _usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass
class Issuer:
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()


@dataclass
class UnitCertificate:
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    chain: list[str]  # PEM, the unit's own first

    def sign(self, challenge: str) -> str:
        data = challenge.encode()
        if isinstance(self.key, rsa.RSAPrivateKey):
            from cryptography.hazmat.primitives.asymmetric import padding

            signature = self.key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        else:
            signature = self.key.sign(data, ec.ECDSA(hashes.SHA256()))
        return base64.urlsafe_b64encode(signature).rstrip(b"=").decode()


def make_ca(common_name: str, *, parent: Issuer | None = None) -> Issuer:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(parent.certificate.subject if parent else _name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if parent is not None:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(parent.key.public_key())
        builder = builder.add_extension(aki, critical=False)
    return Issuer(key, builder.sign(parent.key if parent else key, hashes.SHA256()))


def issue_unit_certificate(
    issuer: Issuer,
    tin: str,
    *,
    where: str = "SERIAL_NUMBER",
    valid_from: timedelta = timedelta(days=-1),
    valid_for: timedelta = timedelta(days=365),
    rsa_key: bool = False,
    chain: tuple[Issuer, ...] = (),
) -> UnitCertificate:
    """A unit certificate naming `tin` in the subject attribute `where` (SERIAL_NUMBER,
    ORGANIZATION_IDENTIFIER, or COMMON_NAME), issued by `issuer`; `chain` adds intermediates."""
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if rsa_key
        else ec.generate_private_key(ec.SECP256R1())
    )
    start = datetime.now(UTC) + valid_from
    attributes = {where: tin} if where != "COMMON_NAME" else {}
    subject = _name(tin if where == "COMMON_NAME" else "测试有限公司", **attributes)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + valid_for)
        .add_extension(_usage(ca=False), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False)
        .sign(issuer.key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    return UnitCertificate(key, [pem, *(link.pem for link in chain)])


@dataclass
class UnitPki:
    root: Issuer = field(default_factory=lambda: make_ca("qrgate test root CA"))
    rogue: Issuer = field(default_factory=lambda: make_ca("rogue CA"))

    def __post_init__(self) -> None:
        self.intermediate = make_ca("qrgate test enterprise CA", parent=self.root)

    def bundle(self, path: Path) -> Path:
        path.write_text(self.root.pem)
        return path


# --- processes -------------------------------------------------------------------------------------


class ServiceProcess:
    """A `qrgate` subcommand serving HTTP, configured through QRGATE_* variables."""

    def __init__(self, args: list[str], env: dict[str, str], port: int, log_path: Path) -> None:
        self.args = args
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", *self.args, "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + 30
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"qrgate {self.args[0]} exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(self.base_url + "/healthz", timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError(f"qrgate {self.args[0]} did not become healthy")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)


@dataclass
class UnitsStack:
    """The gateway process (`gateway_url`, its mounted service at `mounted_url`) and the separate
    units process (`units_url`), with the settings the test process uses to reach the database."""

    tmp: Path
    gateway: ServiceProcess
    units: ServiceProcess
    settings: Settings
    pki: UnitPki

    @property
    def gateway_url(self) -> str:
        return self.gateway.base_url

    @property
    def units_url(self) -> str:
        return self.units.base_url + "/units"

    @property
    def mounted_url(self) -> str:
        return self.gateway.base_url + "/units"

    def run(self, coroutine: Any) -> Any:
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, coroutine).result()

    def add_person(self, **overrides: str) -> dict[str, str]:
        identity = {**new_identity(), **overrides}
        identity["id"] = self.run(cli.add_person_record(self.settings, **identity))
        return identity

    def grant_staff(self, person: dict[str, str]) -> None:
        self.run(cli.grant_staff(self.settings, person["login_name"]))

    def gateway_issuer(self) -> TokenIssuer:
        """Signs with the gateway's own key file: tokens the gateway could have issued, with chosen claims."""
        return TokenIssuer(self.settings, KeyFile(self.settings.keys_file, self.settings.signing_alg))

    def qrgate(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env={**self.gateway.env},
            timeout=60,
            check=False,
        )


# --- clients -------------------------------------------------------------------------------------


@dataclass
class Person:
    """A person logged in to the gateway, talking to one units service."""

    identity: dict[str, str]
    access_token: str
    http: httpx.AsyncClient  # base URL: the units service (…/units)

    @property
    def id(self) -> str:
        return self.identity["id"]

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.access_token)

    async def get(self, path: str) -> httpx.Response:
        return await self.http.get(path, headers=self.headers)

    async def post(self, path: str, body: object = None, **headers: str) -> httpx.Response:
        return await self.http.post(path, json=body, headers={**self.headers, **headers})

    async def put(self, path: str, body: object) -> httpx.Response:
        return await self.http.put(path, json=body, headers=self.headers)

    async def delete(self, path: str) -> httpx.Response:
        return await self.http.delete(path, headers=self.headers)


async def gateway_login(stack: UnitsStack, identity: dict[str, str], client_id: str = "web") -> str:
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=20) as http:
        response = await http.post(
            "/v1/login/password",
            json={"identifier": identity["login_name"], "password": identity["password"], "client_id": client_id},
            headers=fresh_ip(),
        )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def new_person(stack: UnitsStack, http: httpx.AsyncClient, *, staff: bool = False) -> Person:
    identity = await asyncio.to_thread(stack.add_person)
    if staff:
        await asyncio.to_thread(stack.grant_staff, identity)
    return Person(identity, await gateway_login(stack, identity), http)


async def captcha(http: httpx.AsyncClient, headers: dict[str, str] | None = None) -> dict[str, str]:
    response = await http.post("/v1/captcha", headers=headers or {})
    assert response.status_code == 201, response.text
    return {"captcha_id": response.json()["captcha_id"], "captcha_answer": CAPTCHA_ANSWER}


async def new_unit(
    staff: Person, *roles: tuple[str, Person], password: str | None = DECLARATION_PASSWORD, name: str = ""
) -> str:
    """A unit created by hall staff, with a declaration password and `roles` ((role, person), ...)."""
    tin = new_tin()
    body: dict[str, object] = {"tin": tin, "name": name or f"测试单位{tin[-6:]}有限公司"}
    if password is not None:
        body["declaration_password"] = password
    created = await staff.post("/v1/admin/units", body)
    assert created.status_code == 201, created.text
    for role, person in roles:
        assignment = {"identifier": person.identity["login_name"], "role": role}
        assigned = await staff.put(f"/v1/admin/units/{tin}/roles", assignment)
        assert assigned.status_code == 200, assigned.text
    return tin

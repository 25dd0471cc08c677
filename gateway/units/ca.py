"""CA verification over HTTP: a single-use server challenge, then the chain and the signature.

    POST /units/v1/units/{tin}/ca/challenge -> 201 {challenge_id, challenge, expires_in}
    POST /units/v1/units/{tin}/ca/verify    {challenge_id, certificates: [PEM, ...], signature}
                                            -> 200 a unit token with `via: "ca"`

The client signs the UTF-8 bytes of `challenge` with the unit certificate's key and sends the
signature base64url-encoded. A challenge lives `units_ca_challenge_ttl` seconds in the state store,
bound to the unit and to the person who asked for it, and is taken (atomically) by the first
verify, right or wrong. What is checked is described in gateway/units/certificates.py.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import secrets
from functools import partial
from typing import Annotated

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway import errors
from gateway.inputs import StrictModel, read_json
from gateway.state import keys
from gateway.units.access import caller
from gateway.units.certificates import MAX_CERTIFICATE_CHARS, MAX_CHAIN, MAX_SIGNATURE_BYTES, CaTrust
from gateway.units.http import json_response, path_tin, require_member
from gateway.units.rules import UnitScope, Via
from gateway.units.service import UnitsService
from gateway.units.verification import entered

CHALLENGE_PREFIX = "qrgate-unit-ca-v1"
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}", re.ASCII)


class CaProof(StrictModel):
    challenge_id: str = Field(min_length=16, max_length=64)
    certificates: list[Annotated[str, Field(min_length=1, max_length=MAX_CERTIFICATE_CHARS)]] = Field(
        min_length=1, max_length=MAX_CHAIN
    )
    signature: str = Field(min_length=1, max_length=(MAX_SIGNATURE_BYTES * 4) // 3 + 4)


class ChallengeInvalid(errors.BadRequest):
    code = "challenge_invalid"


def trust_of(service: UnitsService) -> CaTrust:
    if service.ca_trust is None:
        raise errors.Forbidden(
            "This deployment verifies no CA certificates (QRGATE_UNITS_CA_TRUST_BUNDLE is not set).",
            code="ca_verification_disabled",
        )
    return service.ca_trust


async def issue_challenge(service: UnitsService, tin: str, holder: str) -> dict[str, object]:
    """A fresh challenge for `tin`, usable once by `holder` (a person id, or "legacy")."""
    ttl = service.settings.units_ca_challenge_ttl
    challenge_id = secrets.token_urlsafe(16)
    challenge = f"{CHALLENGE_PREFIX}.{tin}.{secrets.token_urlsafe(32)}"
    await service.store.put(
        keys.key(keys.Space.UNIT_CA_CHALLENGE, challenge_id),
        {"challenge": challenge, "tin": tin, "holder": holder},
        ttl,
    )
    return {"challenge_id": challenge_id, "challenge": challenge, "expires_in": ttl}


def _signature(value: str) -> bytes:
    if not _BASE64URL.fullmatch(value):
        raise errors.BadRequest("signature must be base64url-encoded.", code="invalid_signature_encoding")
    stripped = value.rstrip("=")
    try:
        return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except (binascii.Error, ValueError) as exc:
        raise errors.BadRequest("signature must be base64url-encoded.", code="invalid_signature_encoding") from exc


async def check_proof(service: UnitsService, proof: CaProof, *, holder: str, tin: str | None = None) -> str:
    """Take the challenge and check the certificate and signature; returns the unit's TIN."""
    trust = trust_of(service)
    record = await service.store.take(keys.key(keys.Space.UNIT_CA_CHALLENGE, proof.challenge_id))
    if (
        record is None
        or (tin is not None and record["tin"] != tin)
        or not hmac.compare_digest(record["holder"], holder)
    ):
        raise ChallengeInvalid("The challenge is unknown, used, expired or for another unit: request a new one.")
    trust.verify(
        tin=record["tin"],
        challenge=record["challenge"],
        certificates=list(proof.certificates),
        signature=_signature(proof.signature),
    )
    return record["tin"]


async def new_challenge(service: UnitsService, request: Request) -> Response:
    claims = caller(request, UnitScope.VERIFY)
    tin = path_tin(request)
    trust_of(service)
    await require_member(service, tin, claims["sub"])
    return json_response(await issue_challenge(service, tin, claims["sub"]), status=201)


async def verify_certificate(service: UnitsService, request: Request) -> Response:
    claims = caller(request, UnitScope.VERIFY)
    tin = path_tin(request)
    membership = await require_member(service, tin, claims["sub"])
    proof = await read_json(request, CaProof)
    await check_proof(service, proof, holder=claims["sub"], tin=tin)
    return await entered(service, claims, tin, membership.role, Via.CA)


def routes(service: UnitsService) -> list[BaseRoute]:
    return [
        Route("/v1/units/{tin}/ca/challenge", partial(new_challenge, service), methods=["POST"]),
        Route("/v1/units/{tin}/ca/verify", partial(verify_certificate, service), methods=["POST"]),
    ]

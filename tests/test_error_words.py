"""Problem details say what is wrong in our own words, never a library's class name (issue 15,
item 8: `BadSignatureError`, `MissingCritHeaderError` reached the client). Tokens that each library
refusal would answer, sent to the gateway and to the units service (qrgate_verify's middleware)."""

from __future__ import annotations

import base64
import json
import re
import time
from typing import Any

import httpx
import pytest

from gateway.tokens.jws import sign
from gateway.tokens.keys import KeyFile
from tests.support.clients import bearer, phone_login
from tests.support.gateway_server import ThreadedGateway

pytestmark = pytest.mark.anyio
LIBRARY_WORDS = re.compile(r"[A-Z][a-z]+(?:[A-Z][a-z]+)*(?:Error|Exception)\b|joserfc|Jose|Traceback")


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


def refused_tokens(gateway: ThreadedGateway, good: str) -> dict[str, str]:
    key = KeyFile(gateway.settings.keys_file, gateway.settings.signing_alg).ring.signing_key()
    header = {"alg": key.alg, "typ": "at+jwt", "kid": key.kid}
    claims = claims_of(good)
    head, payload, signature = good.split(".")
    flipped = signature[:-4] + ("AAAA" if signature[-4:] != "AAAA" else "BBBB")
    now = int(time.time())
    return {
        "bad signature": f"{head}.{payload}.{flipped}",
        "crit header": sign({**header, "crit": ["urn:example:unknown"], "urn:example:unknown": 1}, claims, key),
        "expired": sign(header, {**claims, "iat": now - 7200, "exp": now - 3600}, key),
        "wrong issuer": sign(header, {**claims, "iss": "https://elsewhere.example"}, key),
        "no subject": sign(header, {k: v for k, v in claims.items() if k != "sub"}, key),
        "not yet": sign(header, {**claims, "nbf": now + 3600}, key),
    }


async def test_refused_tokens_are_explained_in_our_words(gateway: ThreadedGateway, make_person: Any) -> None:
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=20) as http:
        good = await phone_login(http, make_person(), client_id="web")
        for name, token in refused_tokens(gateway, good).items():
            for path in ("/v1/sessions", "/units/v1/units"):
                answer = await http.get(path, headers=bearer(token))
                assert answer.status_code == 401, (name, path, answer.text)
                assert answer.headers["content-type"] == "application/problem+json"
                detail = answer.json()["detail"]
                assert not LIBRARY_WORDS.search(detail), (name, path, detail)
                assert "not valid" in detail or "expired" in detail or "lacks" in detail, (name, detail)

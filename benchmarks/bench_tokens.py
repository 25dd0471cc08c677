"""Refresh grants per second on one gateway process over Redis, and access-token checks per second
by the downstream verifier with a cached key; each against a floor measured in the same run.

    python benchmarks/bench_tokens.py [--seconds 10] [--sessions 32]

Refresh: `--sessions` refresh chains run side by side, each rotating its own token as fast as the
gateway answers (every grant = one atomic rotation in Redis + a new ES256 access token). Floor: a
bare Starlette app answering the same form POST with a token-sized JSON body. Goal: >= 1,000/s.
Verifier: `AccessTokenVerifier.verify` on one token, in this process; floor: the bare ECDSA P-256
signature check of the same token with `cryptography` (what no verifier can skip).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ROOT, RawHttp, add_person, bare_app, gateways, raise_open_files, redis_server

sys.path.insert(0, str(ROOT))
from gateway.settings import Settings
from gateway.tokens.issuer import TokenIssuer
from gateway.tokens.keys import KeyFile
from gateway.tokens.verifier import AccessTokenVerifier, StaticKeys

GOAL_REFRESHES = 1000.0


async def refresh_chains(base_url: str, tokens: list[str], seconds: float) -> int:
    deadline = time.perf_counter() + seconds

    async def chain(token: str) -> int:
        http = RawHttp(base_url)
        done = 0
        try:
            while time.perf_counter() < deadline:
                form = urlencode({"grant_type": "refresh_token", "refresh_token": token, "client_id": "mobile-app"})
                status, body = await http.request(
                    "POST", "/v1/token", body=form.encode(), content_type="application/x-www-form-urlencoded"
                )
                assert status == 200, body
                token = json.loads(body)["refresh_token"]
                done += 1
        finally:
            await http.close()
        return done

    return sum(await asyncio.gather(*(chain(t) for t in tokens)))


async def measure_refresh(seconds: float, sessions: int) -> tuple[float, float]:
    with (
        tempfile.TemporaryDirectory() as tmp,
        redis_server() as redis_url,
        gateways(Path(tmp), redis_url, 1) as [gateway],
    ):
        person = add_person(Path(tmp), redis_url)
        async with httpx.AsyncClient(base_url=gateway.base_url, timeout=30) as http:
            tokens = []
            for _ in range(sessions):
                login = await http.post(
                    "/v1/login/password",
                    json={"identifier": person["phone"], "password": person["password"], "client_id": "mobile-app"},
                )
                tokens.append(login.json()["refresh_token"])
        started = time.perf_counter()
        count = await refresh_chains(gateway.base_url, tokens, seconds)
        ours = count / (time.perf_counter() - started)
    with bare_app("flow") as (floor_url, _):
        started = time.perf_counter()
        count = await refresh_chains(floor_url, ["x" * 70] * sessions, seconds)
        floor = count / (time.perf_counter() - started)
    return ours, floor


def measure_verifier(seconds: float) -> tuple[float, float, float]:
    """Full checks/s (every token new to the verifier, key cached), checks/s of tokens it has seen
    before (its memory of checked tokens), and the bare ECDSA verify floor."""
    with tempfile.TemporaryDirectory() as tmp:
        keys = KeyFile(Path(tmp) / "keys.json", "ES256")
        settings = Settings(public_url="https://login.test")
        issuer = TokenIssuer(settings, keys)
        tokens = [
            issuer.access_token(subject=f"p_{i}", client_id="web", session_id="s" * 22, amr=["qr"], auth_time=0)
            for i in range(1000)
        ]

        def verifier(remember: int) -> AccessTokenVerifier:
            return AccessTokenVerifier(
                StaticKeys(lambda: keys.ring.verification_keys),
                issuer=settings.issuer,
                audience="qrgate-sso",
                remember=remember,
            )

        async def loop(check: AccessTokenVerifier) -> float:
            count, deadline = 0, time.perf_counter() + seconds
            started = time.perf_counter()
            while time.perf_counter() < deadline:
                for token in tokens[:100]:
                    await check.verify(token)
                count += 100
                tokens.append(tokens.pop(0))
            return count / (time.perf_counter() - started)

        full = asyncio.run(loop(verifier(0)))
        remembered = asyncio.run(loop(verifier(10_000)))
        public = keys.ring.signing_key().key.get_op_key("verify")
        assert isinstance(public, ec.EllipticCurvePublicKey)
        head, payload, signature = tokens[0].split(".")
        raw = base64.urlsafe_b64decode(signature + "==")
        der = utils.encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        message = f"{head}.{payload}".encode()
        count, deadline, started = 0, time.perf_counter() + seconds, time.perf_counter()
        while time.perf_counter() < deadline:
            for _ in range(100):
                public.verify(der, message, ec.ECDSA(hashes.SHA256()))
            count += 100
        floor = count / (time.perf_counter() - started)
    return full, remembered, floor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--sessions", type=int, default=32)
    args = parser.parse_args()
    raise_open_files()
    ours, floor = asyncio.run(measure_refresh(args.seconds, args.sessions))
    print(f"refresh grants: {ours:.0f}/s on one process over Redis; bare floor {floor:.0f}/s; ratio {ours / floor:.2f}")
    verdict = "met" if ours >= GOAL_REFRESHES else "NOT met"
    print(f"goal >= {GOAL_REFRESHES:.0f}/s: {ours / GOAL_REFRESHES:.2f} of it ({verdict})")
    checks, remembered, crypto = measure_verifier(min(args.seconds, 5))
    print(f"verifier: {checks:.0f} full checks/s with a cached key; bare ECDSA P-256 verify {crypto:.0f}/s", end="")
    print(f"; ratio {checks / crypto:.2f}")
    print(f"verifier, tokens seen before (remembered until they expire): {remembered:.0f} checks/s")


if __name__ == "__main__":
    main()

"""Signing the tokens we issue: JWS compact serialization (RFC 7515) with ES256 or EdDSA, straight
on `cryptography`.

joserfc remains the library for keys (JWK import and export, thumbprints), the published JWKS and
every verification (with its algorithm allow-list). Signing is the one operation on the hot path, once
per login and per refresh, and joserfc's generic encoder (claims registry, JSON through the standard
library, key-type dispatch) cost about as much again as the signature itself here. What comes out is
byte-for-byte the usual form: BASE64URL(header) "." BASE64URL(payload) "." BASE64URL(signature), the
ES256 signature as R || S (32 bytes each, RFC 7518 section 3.4). The tests verify tokens signed here
with joserfc, for both algorithms.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import orjson
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from gateway.tokens.keys import SigningKey

_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def sign(header: Mapping[str, Any], payload: Mapping[str, Any], key: SigningKey) -> str:
    """The compact JWS of `payload` under `header` (whose `alg` must be the key's)."""
    if header.get("alg") != key.alg:
        raise ValueError(f"the header's alg {header.get('alg')!r} is not the key's {key.alg!r}")
    signing_input = _b64(orjson.dumps(header)) + b"." + _b64(orjson.dumps(payload))
    private = key.key.private_key
    if key.alg == "ES256" and isinstance(private, ec.EllipticCurvePrivateKey):
        if private.curve.name != "secp256r1":
            raise ValueError("ES256 needs a P-256 key")
        r, s = decode_dss_signature(private.sign(signing_input, _ECDSA_SHA256))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    elif key.alg == "EdDSA" and isinstance(private, ed25519.Ed25519PrivateKey):
        signature = private.sign(signing_input)
    elif key.alg == "RS256" and isinstance(private, rsa.RSAPrivateKey):  # id_tokens of parties that ask for it
        signature = private.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    else:
        raise ValueError(f"cannot sign {key.alg} with this key")
    return (signing_input + b"." + _b64(signature)).decode("ascii")

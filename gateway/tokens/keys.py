"""Signing keys: a private JWKS file, generated on first start, published as a public JWKS.

The file holds a list of keys, each a private JWK plus `alg`, `created_at` and `active_from` (epoch
seconds). The newest active key signs; every key in the file is published, so tokens signed by an
older key keep verifying until that key is retired.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc.jwk import ECKey, KeySet, OKPKey

ALGORITHMS = ("ES256", "EdDSA")
_PUBLIC_MEMBERS = ("kty", "crv", "x", "y", "kid")


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    alg: str
    key: ECKey | OKPKey
    created_at: float
    active_from: float

    def public_jwk(self) -> dict[str, Any]:
        data = self.key.as_dict(private=False)
        public = {name: data[name] for name in _PUBLIC_MEMBERS if name in data}
        return {**public, "alg": self.alg, "use": "sig"}

    def to_file_entry(self) -> dict[str, Any]:
        return {
            **self.key.as_dict(private=True),
            "alg": self.alg,
            "use": "sig",
            "created_at": self.created_at,
            "active_from": self.active_from,
        }


def generate_key(alg: str, *, now: float | None = None, activation_delay: float = 0.0) -> SigningKey:
    created = time.time() if now is None else now
    key: ECKey | OKPKey
    if alg == "ES256":
        key = ECKey.generate_key("P-256", auto_kid=True)
    elif alg == "EdDSA":
        key = OKPKey.generate_key("Ed25519", auto_kid=True)
    else:
        raise ValueError(f"unsupported signing algorithm {alg!r}; choose one of {ALGORITHMS}")
    return SigningKey(str(key.kid), alg, key, created, created + activation_delay)


def _load_entry(entry: dict[str, Any]) -> SigningKey:
    alg = entry["alg"]
    jwk = {k: v for k, v in entry.items() if k not in ("alg", "use", "created_at", "active_from")}
    key: ECKey | OKPKey = ECKey.import_key(jwk) if entry["kty"] == "EC" else OKPKey.import_key(jwk)
    return SigningKey(str(entry["kid"]), alg, key, float(entry["created_at"]), float(entry["active_from"]))


class KeyRing:
    def __init__(self, keys: list[SigningKey]) -> None:
        if not keys:
            raise ValueError("a key ring needs at least one key")
        self.keys = sorted(keys, key=lambda k: k.active_from)

    def signing_key(self, now: float | None = None) -> SigningKey:
        moment = time.time() if now is None else now
        active = [k for k in self.keys if k.active_from <= moment]
        return active[-1] if active else self.keys[0]

    def public_jwks(self) -> dict[str, Any]:
        return {"keys": [k.public_jwk() for k in self.keys]}

    def verification_keys(self) -> KeySet:
        return KeySet.import_key_set(self.public_jwks())  # type: ignore[arg-type]

    def to_file(self) -> dict[str, Any]:
        return {"keys": [k.to_file_entry() for k in self.keys]}


def write_key_file(path: Path, ring: KeyRing) -> None:
    """Write atomically with mode 0600 (a temporary file renamed over the old one)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(ring.to_file(), handle, indent=2)
    os.replace(tmp, path)


def load_or_create(path: str | Path, alg: str) -> KeyRing:
    """Load the key file, or create it with one new key. Two processes starting at once agree on
    one file: creation links a complete temporary file into place, and the loser reads the winner's."""
    target = Path(path)
    if not target.exists():
        ring = KeyRing([generate_key(alg)])
        tmp = target.with_name(f".{target.name}.{os.getpid()}.new")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(ring.to_file(), handle, indent=2)
        try:
            os.link(tmp, target)
        except FileExistsError:
            pass
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    data = json.loads(target.read_text())
    return KeyRing([_load_entry(entry) for entry in data["keys"]])

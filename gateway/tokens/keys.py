"""Signing keys: a private JWKS file, generated on first start, published as a public JWKS.

The file holds a list of keys, each a private JWK plus `alg`, `created_at` and `active_from` (epoch
seconds). The newest active key signs; every key in the file is published, so tokens signed by an
older key keep verifying until that key is retired.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey

ALGORITHMS = ("ES256", "EdDSA")  # what access tokens (and everything but some id_tokens) are signed with
# RS256 only signs the id_tokens of relying parties registered for it: OpenID Connect's default and
# baseline algorithm (Discovery 1.0 3 asks every provider to offer it). A ring holds one beside the
# access-token keys, and `signing_key` picks it only when asked for it by name.
ID_TOKEN_ONLY = "RS256"  # noqa: S105 (an algorithm name)
RSA_BITS = 2048

# We sign Ed25519 keys with the JOSE name "EdDSA" (RFC 8037), which every verifier knows; joserfc
# warns that RFC 9864 prefers "Ed25519". Both are accepted by our verifier.
warnings.filterwarnings("ignore", message="EdDSA is deprecated via RFC 9864", category=SecurityWarning)
_PUBLIC_MEMBERS = ("kty", "crv", "x", "y", "n", "e", "kid")


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    alg: str
    key: ECKey | OKPKey | RSAKey
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
    key: ECKey | OKPKey | RSAKey
    if alg == "ES256":
        key = ECKey.generate_key("P-256", auto_kid=True)
    elif alg == "EdDSA":
        key = OKPKey.generate_key("Ed25519", auto_kid=True)
    elif alg == ID_TOKEN_ONLY:
        key = RSAKey.generate_key(RSA_BITS, auto_kid=True)
    else:
        raise ValueError(f"unsupported signing algorithm {alg!r}; choose one of {(*ALGORITHMS, ID_TOKEN_ONLY)}")
    return SigningKey(str(key.kid), alg, key, created, created + activation_delay)


def _load_entry(entry: dict[str, Any]) -> SigningKey:
    alg = entry["alg"]
    jwk = {k: v for k, v in entry.items() if k not in ("alg", "use", "created_at", "active_from")}
    key: ECKey | OKPKey | RSAKey
    if entry["kty"] == "EC":
        key = ECKey.import_key(jwk)
    elif entry["kty"] == "RSA":
        key = RSAKey.import_key(jwk)
    else:
        key = OKPKey.import_key(jwk)
    return SigningKey(str(entry["kid"]), alg, key, float(entry["created_at"]), float(entry["active_from"]))


class KeyRing:
    def __init__(self, keys: list[SigningKey]) -> None:
        if not keys:
            raise ValueError("a key ring needs at least one key")
        self.keys = sorted(keys, key=lambda k: k.active_from)
        self._access = [k for k in self.keys if k.alg != ID_TOKEN_ONLY] or self.keys

    def signing_key(self, now: float | None = None, alg: str | None = None) -> SigningKey:
        """The newest active key of `alg`, or (None) of the access-token algorithms."""
        moment = time.time() if now is None else now
        family = self._access if alg is None else self.family(alg)
        if not family:
            raise LookupError(f"no {alg} key in the ring")
        active = [k for k in family if k.active_from <= moment]
        return active[-1] if active else family[0]

    def family(self, alg: str | None) -> list[SigningKey]:
        """The keys of `alg`, or (None) of the access-token algorithms, oldest first."""
        if alg is None:
            return self._access
        return [k for k in self.keys if k.alg == alg]

    @functools.cached_property
    def algorithms(self) -> list[str]:
        return sorted({k.alg for k in self.keys})

    def public_jwks(self) -> dict[str, Any]:
        return {"keys": [k.public_jwk() for k in self.keys]}

    @functools.cached_property
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
        ring = KeyRing([generate_key(alg), generate_key(ID_TOKEN_ONLY)])
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
    ring = read_key_file(target)
    if not ring.family(ID_TOKEN_ONLY):  # a file from before RS256 id_tokens: add their key once
        ring = KeyRing([*ring.keys, generate_key(ID_TOKEN_ONLY)])
        write_key_file(target, ring)
    return ring


class KeyFile:
    """The key ring of a key file, re-read when the file changes (checked at most once a second), so
    a key added by `qrgate keys rotate` is published by every running process within a second."""

    def __init__(self, path: str | Path, alg: str, *, check_every: float = 1.0) -> None:
        self.path = Path(path)
        self._ring = load_or_create(self.path, alg)
        self._mtime = self.path.stat().st_mtime_ns
        self._checked = time.monotonic()
        self._check_every = check_every

    @property
    def ring(self) -> KeyRing:
        now = time.monotonic()
        if now - self._checked >= self._check_every:
            self._checked = now
            try:
                mtime = self.path.stat().st_mtime_ns
                if mtime != self._mtime:
                    self._ring = read_key_file(self.path)
                    self._mtime = mtime
            except (OSError, ValueError, KeyError):
                pass  # keep serving the keys we have; the file is being replaced or is broken
        return self._ring


def read_key_file(path: Path) -> KeyRing:
    data = json.loads(path.read_text())
    return KeyRing([_load_entry(entry) for entry in data["keys"]])


class RetireRefused(Exception):
    pass


def rotate(path: Path, alg: str, *, activation_delay: float, now: float | None = None) -> SigningKey:
    """Add a key: published at once, used for signing only after `activation_delay` seconds (longer
    than verifiers cache the JWKS, so every verifier has it before the first token it signs)."""
    ring = read_key_file(path)
    key = generate_key(alg, now=now, activation_delay=activation_delay)
    write_key_file(path, KeyRing([*ring.keys, key]))
    return key


def retire(path: Path, kid: str, *, access_token_ttl: int, leeway: int = 60, now: float | None = None) -> None:
    """Remove a key, refused while a token it signed may still be alive."""
    moment = time.time() if now is None else now
    ring = read_key_file(path)
    target = next((k for k in ring.keys if k.kid == kid), None)
    if target is None:
        raise RetireRefused(f"no key {kid!r} in {path}")
    family_alg = ID_TOKEN_ONLY if target.alg == ID_TOKEN_ONLY else None
    if ring.signing_key(moment, family_alg).kid == kid:
        raise RetireRefused(f"{kid} is the signing key now; rotate first and wait until its successor is active")
    family = ring.family(family_alg)
    later = [k.active_from for k in family if k.active_from > target.active_from]
    if not later and target.active_from <= moment:
        raise RetireRefused(f"{kid} still signs")
    if later:
        last_signed = min(later)
        safe_after = last_signed + access_token_ttl + leeway
        if moment < safe_after:
            raise RetireRefused(
                f"tokens signed by {kid} may live until {int(safe_after)} ({int(safe_after - moment)} s from now)"
            )
    write_key_file(path, KeyRing([k for k in ring.keys if k.kid != kid]))

"""Wire shapes of verified tokens (they match protocols/schemas/access-token-claims.json)."""

from __future__ import annotations

from typing import NotRequired, TypedDict


class Confirmation(TypedDict):
    jkt: str


class AccessTokenClaims(TypedDict):
    iss: str
    sub: str
    aud: str | list[str]
    exp: int
    iat: int
    jti: str
    client_id: str
    sid: str
    amr: list[str]
    auth_time: int
    cnf: NotRequired[Confirmation]
    roles: NotRequired[list[str]]  # staff roles only (e.g. hall_staff); never personal data
    scope: NotRequired[str]  # space-separated scopes (qrgate_verify.scopes)

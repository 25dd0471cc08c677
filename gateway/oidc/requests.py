"""Authorization requests (OpenID Connect Core 1.0 3.1.2, with the OAuth 2.1 rules), read and
checked with no I/O.

Two kinds of refusal. Until the client and its redirect URI are known to be right, an error must
never be redirected anywhere (it would make us an open redirector): `RefusedHere`, shown as an
error page. After that, errors go back to the relying party (`RefusedToClient`), with `state` and
our `iss` (RFC 9207).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode

from gateway.oidc.clients import RelyingParty

PROMPTS = frozenset({"none", "login", "consent", "select_account"})
UI_LOCALES = ("zh-CN", "en")
CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")
VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")  # RFC 7636 4.1
MAX_PARAM = 512
MAX_HINT = 64
PAR_PREFIX = "urn:ietf:params:oauth:request_uri:"


class RefusedHere(Exception):
    """Shown to the person as an error page: never redirected."""

    def __init__(self, description: str, *, error: str = "invalid_request") -> None:
        super().__init__(description)
        self.error = error
        self.description = description


class RefusedToClient(Exception):
    """Sent back to the relying party's redirect URI."""

    def __init__(self, error: str, description: str, *, redirect_uri: str, state: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.redirect_uri = redirect_uri
        self.state = state


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    code_challenge: str
    state: str = ""
    nonce: str = ""
    prompt: frozenset[str] = field(default_factory=frozenset)
    max_age: int | None = None
    login_hint: str = ""
    ui_locale: str = UI_LOCALES[0]

    @property
    def scope(self) -> str:
        return " ".join(self.scopes)

    def record(self) -> dict[str, str]:
        """As the state store keeps it (flat strings)."""
        return {
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": self.scope,
            "code_challenge": self.code_challenge,
            "state": self.state,
            "nonce": self.nonce,
            "prompt": " ".join(sorted(self.prompt)),
            "max_age": "" if self.max_age is None else str(self.max_age),
            "login_hint": self.login_hint,
            "ui_locale": self.ui_locale,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, str]) -> AuthorizationRequest:
        return cls(
            client_id=record["client_id"],
            redirect_uri=record["redirect_uri"],
            scopes=tuple(record["scope"].split()),
            code_challenge=record["code_challenge"],
            state=record["state"],
            nonce=record["nonce"],
            prompt=frozenset(record["prompt"].split()),
            max_age=int(record["max_age"]) if record["max_age"] else None,
            login_hint=record["login_hint"],
            ui_locale=record["ui_locale"],
        )


def single(params: Mapping[str, list[str]]) -> dict[str, str]:
    """Each parameter once (RFC 6749 3.1); a repeated one is refused, not guessed at."""
    values: dict[str, str] = {}
    for name, found in params.items():
        if len(found) > 1:
            raise RefusedHere(f"The parameter {name!r} was sent more than once.")
        values[name] = found[0]
    return values


def client_and_redirect(params: Mapping[str, str], party: RelyingParty | None) -> tuple[RelyingParty, str]:
    """The two checks after which errors may be redirected."""
    if party is None:
        raise RefusedHere("This application is not registered with qrgate (unknown client_id).", error="invalid_client")
    redirect_uri = params.get("redirect_uri", "")
    if redirect_uri not in party.redirect_uris:  # exact string match, no prefixes, no patterns
        raise RefusedHere("The redirect URI is not one registered for this application.")
    return party, redirect_uri


def parse(params: Mapping[str, str], party: RelyingParty | None) -> AuthorizationRequest:
    party, redirect_uri = client_and_redirect(params, party)
    state = params.get("state", "")

    def refuse(error: str, description: str) -> RefusedToClient:
        return RefusedToClient(error, description, redirect_uri=redirect_uri, state=state[:MAX_PARAM])

    if len(state) > MAX_PARAM:
        raise refuse("invalid_request", f"state is longer than {MAX_PARAM} characters.")
    if "request" in params:
        raise refuse("request_not_supported", "Request objects are not supported; use PAR (request_uri).")
    if params.get("response_type") != "code":
        raise refuse("unsupported_response_type", "Only response_type=code is supported.")
    if params.get("response_mode", "query") != "query":
        raise refuse("invalid_request", "Only response_mode=query is supported.")
    scopes = tuple(dict.fromkeys(params.get("scope", "").split()))
    if "openid" not in scopes:
        raise refuse("invalid_scope", "The scope must include openid.")
    if not set(scopes) <= party.scopes:
        raise refuse("invalid_scope", f"This application may ask for: {' '.join(sorted(party.scopes))}.")
    if params.get("code_challenge_method") != "S256":
        raise refuse("invalid_request", "PKCE is required: code_challenge with code_challenge_method=S256.")
    challenge = params.get("code_challenge", "")
    if not CHALLENGE.fullmatch(challenge):
        raise refuse("invalid_request", "code_challenge must be the 43-character BASE64URL of a SHA-256.")
    nonce = params.get("nonce", "")
    if len(nonce) > MAX_PARAM:
        raise refuse("invalid_request", f"nonce is longer than {MAX_PARAM} characters.")
    prompt = frozenset(params.get("prompt", "").split())
    if not prompt <= PROMPTS or ("none" in prompt and len(prompt) > 1):
        raise refuse("invalid_request", "prompt is none, or any of login, consent, select_account.")
    max_age: int | None = None
    if "max_age" in params:
        raw = params["max_age"]
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 9):
            raise refuse("invalid_request", "max_age is a whole number of seconds.")
        max_age = int(raw)
    hint = params.get("login_hint", "")
    if len(hint) > MAX_HINT:
        raise refuse("invalid_request", f"login_hint is longer than {MAX_HINT} characters.")
    return AuthorizationRequest(
        client_id=party.client_id,
        redirect_uri=redirect_uri,
        scopes=scopes,
        code_challenge=challenge,
        state=state,
        nonce=nonce,
        prompt=prompt,
        max_age=max_age,
        login_hint=hint,
        ui_locale=pick_locale(params.get("ui_locales", "")),
    )


def pick_locale(ui_locales: str) -> str:
    for wanted in ui_locales.split():
        for offered in UI_LOCALES:
            if wanted.lower() == offered.lower() or wanted.lower().split("-")[0] == offered.lower().split("-")[0]:
                return offered
    return UI_LOCALES[0]


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def verifier_matches(verifier: str, challenge: str) -> bool:
    """RFC 7636 4.6, S256 only, compared in constant time."""
    return bool(VERIFIER.fullmatch(verifier)) and hmac.compare_digest(s256(verifier), challenge)


def redirect_to(redirect_uri: str, values: Mapping[str, str]) -> str:
    """`redirect_uri` with `values` added to its query (a registered URI may carry a query of its own)."""
    present = {name: value for name, value in values.items() if value}
    return redirect_uri + ("&" if "?" in redirect_uri else "?") + urlencode(present)

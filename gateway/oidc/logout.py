"""RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0) at `GET` and `POST /logout`.

A relying party sends the browser here with `id_token_hint` (an id_token we issued to it, expired or
not), and optionally `client_id`, `post_logout_redirect_uri`, `state` and `ui_locales`. The browser
session is ended, which ends every relying party's session made from it (and so sends their
back-channel logout tokens), the cookie is cleared, and the browser goes back to the
`post_logout_redirect_uri` with `state` when that URI is registered for the client, or else sees a
"signed out" page.

Why a confirmation, and when. Any site can send a browser to /logout, so a request that does not
prove it comes from a relying party of *this* browser session would let any page sign the person out
(the spec's section 6 recommends asking). The proof is an id_token whose `sid` is this browser's
session: then the logout proceeds at once. Otherwise, while this browser has a session, the person is
asked, and the answer is a POST carrying a one-time request id that only our page knows, from a
browser holding the matching SameSite=Strict cookie. Without a browser session there is nothing a
forged request could end here: the hint's own session (which its `sid` names) is ended at once.

A relying party that POSTs the logout request from its own origin does not get our SameSite=Lax
session cookie sent along, so the browser session is found through the hint's `sid` instead.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from joserfc import jwt
from joserfc.errors import JoseError
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.oidc.http import NO_STORE, authorization_params
from gateway.oidc.provider import OidcProvider
from gateway.oidc.requests import RefusedHere, pick_locale, redirect_to
from gateway.state import keys
from gateway.state.base import StateStore
from gateway.tokens.keys import KeyRing
from gateway.web.pages import page_headers, render
from qrgate_verify.verifier import InvalidToken, unverified_header

ALGORITHMS = ["ES256", "EdDSA", "RS256"]  # every algorithm our id_tokens are signed with
MAX_HINT = 8192
CONFIRM_TTL = 600  # s a confirmation page stays good for


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class IdTokenHint:
    """What a valid `id_token_hint` tells: who, for which relying party, in which browser session."""

    client_id: str
    subject: str
    sid: str


def read_hint(token: str, ring: KeyRing, issuer: str) -> IdTokenHint | None:
    """An id_token this provider signed (with any key still published), expired or not: a relying
    party keeps the id_token of the sign-in, usually long expired when the person signs out. Anything
    else (another issuer's, an access or logout token, a forgery) is no hint at all."""
    if not token or len(token) > MAX_HINT:
        return None
    try:
        header = unverified_header(token)
        if header.get("typ") != "JWT" or header.get("alg") not in ALGORITHMS:
            return None  # our access tokens are at+jwt, our logout tokens logout+jwt
        claims = jwt.decode(token, ring.verification_keys, algorithms=ALGORITHMS).claims  # no exp check
    except (InvalidToken, JoseError, ValueError, TypeError):
        return None
    audience = claims.get("aud")
    if isinstance(audience, list) and len(audience) == 1:
        audience = audience[0]
    subject, sid = claims.get("sub"), claims.get("sid")
    if claims.get("iss") != issuer or not isinstance(audience, str):
        return None
    if not isinstance(subject, str) or not isinstance(sid, str) or not subject or not sid:
        return None
    return IdTokenHint(audience, subject, sid)


@dataclass(frozen=True, slots=True)
class SignedOut:
    """Done: to `target` (the post-logout redirect with `state`), or the signed-out page."""

    target: str | None
    locale: str


@dataclass(frozen=True, slots=True)
class ConfirmFirst:
    """Ask the person first: the page's request id, and this browser's binding for the cookie."""

    request_id: str
    binding: str
    target: str | None
    locale: str


class Logouts:
    def __init__(self, provider: OidcProvider, store: StateStore) -> None:
        self._provider = provider
        self._store = store
        secure = provider.secure_cookies
        self.confirm_cookie = "__Host-qrgate-logout" if secure else "qrgate-logout"

    async def request(self, params: Mapping[str, str], *, session_cookie: str | None) -> SignedOut | ConfirmFirst:
        """A logout request from a relying party (or from anyone: see the module's docstring)."""
        provider = self._provider
        locale = pick_locale(params.get("ui_locales", ""))
        hint = None
        if params.get("id_token_hint"):
            hint = read_hint(params["id_token_hint"], provider.ring, provider.settings.issuer)
        client_id = params.get("client_id", "")
        if hint is not None and client_id and client_id != hint.client_id:
            raise RefusedHere("client_id is not the audience of the id_token_hint.")
        target = await self._target(hint.client_id if hint else client_id, params)
        browser = await provider.browser_session(session_cookie)
        if browser is not None and (hint is None or hint.sid != browser.sid):
            binding, request_id = secrets.token_urlsafe(32), secrets.token_urlsafe(16)
            record = {
                "binding": _hash(binding),
                "target": target or "",
                "hint_sid": hint.sid if hint else "",
                "hint_sub": hint.subject if hint else "",
                "locale": locale,
            }
            await self._store.put(keys.key(keys.Space.OIDC_LOGOUT, request_id), record, CONFIRM_TTL)
            return ConfirmFirst(request_id, binding, target, locale)
        await self._sign_out(session_cookie, hint)
        return SignedOut(target, locale)

    async def confirmed(self, request_id: str, binding: str | None, *, session_cookie: str | None) -> SignedOut:
        """The person pressed "sign out" on the confirmation page (of this browser, once)."""
        key = keys.key(keys.Space.OIDC_LOGOUT, request_id[:64])
        record = await self._store.get(key)
        if record is None or not binding or not secrets.compare_digest(record["binding"], _hash(binding)):
            raise RefusedHere("This sign-out page has expired or belongs to another browser.")
        if await self._store.take(key) is None:  # taken once: checked first, so a forged post burns nothing
            raise RefusedHere("This sign-out page was used already.")
        hint = IdTokenHint("", record["hint_sub"], record["hint_sid"]) if record["hint_sid"] else None
        await self._sign_out(session_cookie, hint)
        return SignedOut(record["target"] or None, record["locale"])

    async def _target(self, client_id: str, params: Mapping[str, str]) -> str | None:
        """The post-logout redirect, only to a URI registered for the client exactly (no open redirect)."""
        uri = params.get("post_logout_redirect_uri", "")
        party = await self._provider.parties.get(client_id) if client_id and uri else None
        if party is None or uri not in party.post_logout_redirect_uris:
            return None
        return redirect_to(uri, {"state": params.get("state", "")[:512]})

    async def _sign_out(self, session_cookie: str | None, hint: IdTokenHint | None) -> None:
        await self._provider.forget_browser_session(session_cookie)
        if hint is not None:  # the session the relying party saw, if this browser's cookie did not name it
            await self._provider.end_browser_session(hint.sid, hint.subject)


def confirm_policy(request: Request, target: str | None) -> str:
    """The pages' policy, with the form allowed to post here, and (browsers apply `form-action` to the
    redirect that answers the post) to go on to the relying party's origin."""
    policy = page_headers(request)["Content-Security-Policy"]
    origins = ["'self'"]
    if target is not None:
        parts = urlsplit(target)
        origins.append(f"{parts.scheme}://{parts.netloc}")
    return policy.replace("form-action 'none'", "form-action " + " ".join(origins))


def routes(logouts: Logouts, provider: OidcProvider) -> list[BaseRoute]:
    secure = provider.secure_cookies

    def page(request: Request, name: str, *, status: int = 200, locale: str = "zh-CN", **values: str) -> HTMLResponse:
        body = render(name, lang=locale, **values)
        return HTMLResponse(body, status_code=status, headers={**page_headers(request), **NO_STORE})

    def signed_out(request: Request, done: SignedOut) -> Response:
        response: Response
        if done.target is not None:
            status = 303 if request.method == "POST" else 302
            response = RedirectResponse(done.target, status_code=status, headers=NO_STORE)
        else:
            response = page(request, "logged-out.html", locale=done.locale)
        response.delete_cookie(provider.session_cookie, path="/", secure=secure, httponly=True, samesite="lax")
        response.delete_cookie(logouts.confirm_cookie, path="/", secure=secure, httponly=True, samesite="strict")
        return response

    async def logout(request: Request) -> Response:
        session_cookie = request.cookies.get(provider.session_cookie)
        try:
            params = await authorization_params(request)
            if request.method == "POST" and "confirm" in params:
                binding = request.cookies.get(logouts.confirm_cookie)
                done = await logouts.confirmed(params["confirm"], binding, session_cookie=session_cookie)
                return signed_out(request, done)
            answer = await logouts.request(params, session_cookie=session_cookie)
        except RefusedHere as refused:
            return page(request, "logout-error.html", status=400, error=refused.error, description=refused.description)
        if isinstance(answer, SignedOut):
            return signed_out(request, answer)
        response = page(request, "logout-confirm.html", locale=answer.locale, request_id=answer.request_id)
        response.headers["Content-Security-Policy"] = confirm_policy(request, answer.target)
        binding = answer.binding  # Strict: only our own page's post carries it back
        response.set_cookie(
            logouts.confirm_cookie, binding, CONFIRM_TTL, path="/", secure=secure, httponly=True, samesite="strict"
        )
        return response

    return [Route("/logout", logout, methods=["GET", "POST"])]

"""The OpenID Connect provider: authorization requests, the browser's single sign-on session, codes,
the authorization_code grant, UserInfo.

Theory of operation.

    RP ──/authorize──▶ checked (requests.py) ──▶ a live browser session? ──yes──▶ code ──▶ RP
                                                      │no
                                                      ▼
                       pending request (state store) + a cookie binding it to this browser
                                                      ▼
                       /signin: QR or password (oidc/signin.py) ──▶ `complete` ──▶ code ──▶ RP
    RP ──/v1/token (code, verifier)──▶ the code taken once ──▶ a session of its own, child of the
                                       browser's, ──▶ access token, id_token, refresh token

The browser session is a gateway session (`sid`, listed by `GET /v1/sessions`, ended by `DELETE`),
kept behind an HttpOnly cookie whose hash names a small record: who signed in, when, and how, so a
second relying party gets the original `auth_time` and `amr`. Each relying party's session is made
from it (`parent`): ending the browser session ends theirs, and the id_tokens carry the browser
session's `sid`, as back-channel logout needs.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway import errors
from gateway.directory.persons import Person, PersonDirectory
from gateway.jsonutil import dumps, loads
from gateway.oidc import id_tokens
from gateway.oidc.client_keys import ClientKeys
from gateway.oidc.client_sessions import ClientSessions
from gateway.oidc.clients import RelyingParties, RelyingParty
from gateway.oidc.requests import (
    PAR_PREFIX,
    AuthorizationRequest,
    RefusedHere,
    RefusedToClient,
    client_and_redirect,
    parse,
    redirect_to,
    verifier_matches,
)
from gateway.settings import Settings
from gateway.state import keys
from gateway.state.base import StateStore
from gateway.tokens.assertions import ASSERTION_TYPE, ClientAssertions, claimed_client
from gateway.tokens.issuer import TokenIssuer
from gateway.tokens.keys import KeyRing
from gateway.tokens.sessions import SessionManager

BROWSER_CLIENT = "web"  # the browser session's client id (a built-in client)
PERSON_MEMORY = 30.0  # s UserInfo may answer from this process's memory of a person
PEOPLE_REMEMBERED = 10_000
SPENT_CODE_MEMORY = 3600  # s a used code is remembered, so a second use revokes what the first issued
UNIT_SCOPE = "unit"  # the relying party wants the unit step after the login (oidc/units_step.py)
UNIT_STEP_SCOPE = "units.read units.verify"  # the step lists, verifies and enters; it manages nothing
UNIT_STEP_TOKEN_TTL = 60  # s the gateway's own token for its calls to the units service lives


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class OAuthError(errors.BadRequest):
    """An RFC 6749 error at the token endpoint (`error` beside our `code`)."""

    def __init__(self, error: str, detail: str, *, status: int = 400) -> None:
        # A client that failed to authenticate is told how to (RFC 6749 5.2), as the gateway's services are.
        headers = {"WWW-Authenticate": 'Basic realm="qrgate"'} if status == 401 else None
        super().__init__(detail, code=error, status=status, headers=headers, error=error)


@dataclass(frozen=True, slots=True)
class SignedIn:
    """Who signed in on the sign-in page, and how."""

    subject: str
    amr: tuple[str, ...]
    auth_time: int
    display_name: str = ""


@dataclass(frozen=True, slots=True)
class BrowserSession:
    sid: str
    subject: str
    auth_time: int
    amr: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Redirect:
    """Send the browser to `url`; set the cookies named (value "" deletes one)."""

    url: str
    cookies: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Pending:
    """An authorization waiting for its sign-in, as the sign-in page needs it."""

    request_id: str
    request: AuthorizationRequest
    party: RelyingParty
    session: BrowserSession | None = None  # signed in already: the unit step is under way

    @property
    def wants_unit(self) -> bool:
        return UNIT_SCOPE in self.request.scopes


class OidcProvider:
    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        parties: RelyingParties,
        sessions: SessionManager,
        issuer: TokenIssuer,
        directory: PersonDirectory,
        client_keys: ClientKeys | None = None,
    ) -> None:
        self.settings = settings
        self._store = store
        self.parties = parties
        self._sessions = sessions
        self._issuer = issuer
        self._directory = directory
        self.client_keys = client_keys or ClientKeys()
        self.client_sessions = ClientSessions(settings, store, sessions)
        self._assertions = ClientAssertions(store)
        self._people: dict[str, tuple[float, Person]] = {}
        secure = settings.issuer.startswith("https://")
        # __Host- cookies must be Secure, with Path=/ and no Domain: only on https.
        self.session_cookie = "__Host-qrgate-sso" if secure else "qrgate-sso"
        self.binding_cookie = "__Host-qrgate-signin" if secure else "qrgate-signin"
        self.secure_cookies = secure

    @property
    def ring(self) -> KeyRing:
        return self._issuer.ring

    # The browser session ----------------------------------------------------------------------------
    async def browser_session(self, cookie: str | None) -> BrowserSession | None:
        if not cookie or len(cookie) > 128:
            return None
        record = await self._store.get(keys.key(keys.Space.SSO_SESSION, _hash(cookie)))
        if record is None or await self._sessions.alive(record["sid"]) is None:
            return None
        return BrowserSession(record["sid"], record["sub"], int(record["auth_time"]), tuple(record["amr"].split()))

    async def _start_browser_session(self, who: SignedIn) -> tuple[BrowserSession, str]:
        started = await self._sessions.start(
            subject=who.subject,
            client_id=BROWSER_CLIENT,
            amr=who.amr,
            device_name="browser single sign-on",
            display_name=who.display_name,
            auth_time=who.auth_time,
        )
        sid = started["refresh_token"].partition(".")[0]  # its tokens are never handed out
        cookie = secrets.token_urlsafe(32)
        record = {"sid": sid, "sub": who.subject, "auth_time": str(who.auth_time), "amr": " ".join(who.amr)}
        await self._store.put(keys.key(keys.Space.SSO_SESSION, _hash(cookie)), record, self.settings.sso_session_ttl)
        return BrowserSession(sid, who.subject, who.auth_time, who.amr), cookie

    async def forget_browser_session(self, cookie: str | None) -> BrowserSession | None:
        """The browser session behind `cookie`, ended (with every relying party's session made from it)."""
        found = await self.browser_session(cookie)
        if cookie:
            await self._store.delete(keys.key(keys.Space.SSO_SESSION, _hash(cookie)))
        if found is not None:
            await self._sessions.end(found.sid)
        return found

    async def end_browser_session(self, sid: str, subject: str) -> bool:
        """End the browser session an id_token names (its `sid`), if it is still one, of that person."""
        session = await self._sessions.alive(sid)
        if session is None or session["client_id"] != BROWSER_CLIENT or session["sub"] != subject:
            return False
        return await self._sessions.end(sid)

    # The authorization endpoint ---------------------------------------------------------------------
    async def authorize(self, params: Mapping[str, str], *, session_cookie: str | None) -> Redirect:
        """Raises RefusedHere (an error page) or RefusedToClient (an error redirect)."""
        params = await self._unpushed(params)
        request = parse(params, await self.parties.get(params.get("client_id", "")))
        session = None if "login" in request.prompt else await self.browser_session(session_cookie)
        if session is not None and request.max_age is not None and time.time() - session.auth_time > request.max_age:
            session = None
        if session is not None and UNIT_SCOPE in request.scopes:
            if "none" in request.prompt:  # the unit step needs the person
                raise RefusedToClient(
                    "interaction_required",
                    "The unit step needs the person.",
                    redirect_uri=request.redirect_uri,
                    state=request.state,
                )
            return await self._new_pending(request, session)
        if session is not None:
            return Redirect(await self._code_redirect(request, session))
        if "none" in request.prompt:
            raise RefusedToClient(
                "login_required",
                "The person is not signed in to qrgate here.",
                redirect_uri=request.redirect_uri,
                state=request.state,
            )
        return await self._new_pending(request, None)

    async def _new_pending(self, request: AuthorizationRequest, session: BrowserSession | None) -> Redirect:
        """A pending request and the cookie binding it to this browser: to the sign-in page (which starts
        at the unit step when `session`, the browser's live session, is given)."""
        request_id, binding = secrets.token_urlsafe(16), secrets.token_urlsafe(32)
        record = {**request.record(), "binding": _hash(binding), "qr_id": "", **_session_facts(session)}
        await self._store.put(keys.key(keys.Space.OIDC_REQUEST, request_id), record, self.settings.oidc_request_ttl)
        return Redirect(f"{self.settings.issuer}/signin?request={request_id}", {self.binding_cookie: binding})

    async def _unpushed(self, params: Mapping[str, str]) -> Mapping[str, str]:
        """A request by reference to a pushed one (RFC 9126 4) is that one, taken once."""
        request_uri = params.get("request_uri")
        if request_uri is None:
            return params
        client_id = params.get("client_id", "")
        if not request_uri.startswith(PAR_PREFIX) or len(request_uri) > 128:
            raise RefusedHere("The request_uri is not one this provider issued.", error="invalid_request_uri")
        pushed = await self._store.take(keys.key(keys.Space.OIDC_PAR, request_uri.removeprefix(PAR_PREFIX)))
        if pushed is None or pushed.get("client_id") != client_id:
            raise RefusedHere("The pushed request has expired or was used already.", error="invalid_request_uri")
        return pushed

    async def push(self, params: Mapping[str, str], party: RelyingParty) -> dict[str, Any]:
        """RFC 9126: the request checked now (errors answered to the client directly), kept briefly."""
        if "request_uri" in params:
            raise OAuthError("invalid_request", "A pushed request cannot itself refer to a request_uri.")
        if params.get("client_id", party.client_id) != party.client_id:
            raise OAuthError("invalid_request", "client_id does not match the authenticated client.")
        values = {**params, "client_id": party.client_id}
        try:
            parse(values, party)
        except RefusedHere as refused:
            raise OAuthError(refused.error, refused.description) from refused
        except RefusedToClient as refused:
            raise OAuthError(refused.error, refused.description) from refused
        reference = secrets.token_urlsafe(24)
        ttl = self.settings.oidc_par_ttl
        await self._store.put(keys.key(keys.Space.OIDC_PAR, reference), values, ttl)
        return {"request_uri": PAR_PREFIX + reference, "expires_in": ttl}

    # The sign-in page's side ------------------------------------------------------------------------
    async def pending(self, request_id: str, binding: str | None) -> Pending:
        """The authorization waiting in this browser (404 for any other browser)."""
        record = await self._store.get(keys.key(keys.Space.OIDC_REQUEST, request_id[:64]))
        if record is None or not binding or not secrets.compare_digest(record["binding"], _hash(binding)):
            raise errors.NotFound(
                "This sign-in has expired or belongs to another browser: go back to the application and try again.",
                code="signin_not_found",
            )
        request = AuthorizationRequest.from_record(record)
        party = await self.parties.get(request.client_id)
        if party is None:
            raise errors.NotFound("The application was removed meanwhile.", code="signin_not_found")
        session = None
        if record.get("browser_sid"):
            if await self._sessions.alive(record["browser_sid"]) is None:
                raise errors.NotFound("The sign-in ended meanwhile (logged out).", code="signin_not_found")
            session = BrowserSession(
                record["browser_sid"], record["sub"], int(record["auth_time"]), tuple(record["amr"].split())
            )
        return Pending(request_id, request, party, session)

    async def remember_qr(self, pending: Pending, qr_id: str) -> None:
        """The QR code minted for this sign-in: only its result may complete it."""
        key = keys.key(keys.Space.OIDC_REQUEST, pending.request_id)
        record = await self._store.get(key)
        if record is not None:
            await self._store.put(key, {**record, "qr_id": qr_id}, self.settings.oidc_request_ttl)

    async def qr_of(self, pending: Pending) -> str:
        record = await self._store.get(keys.key(keys.Space.OIDC_REQUEST, pending.request_id))
        return record["qr_id"] if record is not None else ""

    async def complete(self, pending: Pending, who: SignedIn) -> Redirect:
        """The person signed in for `pending`: a browser session, and the code back to the relying party."""
        if await self._store.take(keys.key(keys.Space.OIDC_REQUEST, pending.request_id)) is None:
            raise errors.NotFound("This sign-in was completed already.", code="signin_not_found")
        session, cookie = await self._start_browser_session(who)
        url = await self._code_redirect(pending.request, session)
        return Redirect(url, {self.session_cookie: cookie, self.binding_cookie: ""})

    async def begin_unit_step(self, pending: Pending, who: SignedIn) -> Redirect:
        """The person signed in for a request with scope `unit`: the browser session starts now, and the
        pending request remembers it until the unit step completes it (`complete_unit`) or is cancelled.
        The answer's URL is empty: the page stays, with the binding cookie, for the unit step."""
        key = keys.key(keys.Space.OIDC_REQUEST, pending.request_id)
        record = await self._store.get(key)
        if record is None or record.get("browser_sid"):
            raise errors.NotFound("This sign-in was completed already.", code="signin_not_found")
        session, cookie = await self._start_browser_session(who)
        await self._store.put(key, {**record, **_session_facts(session)}, self.settings.oidc_request_ttl)
        return Redirect("", {self.session_cookie: cookie})

    def unit_step_token(self, session: BrowserSession) -> str:
        """A short-lived gateway access token of the browser session, for the gateway's own calls to the
        units service on the person's behalf. It never leaves the server."""
        return self._issuer.access_token(
            subject=session.subject,
            client_id=BROWSER_CLIENT,
            session_id=session.sid,
            amr=session.amr,
            auth_time=session.auth_time,
            ttl=UNIT_STEP_TOKEN_TTL,
            extra={"scope": UNIT_STEP_SCOPE},
        )

    async def complete_unit(self, pending: Pending, unit: Mapping[str, str]) -> Redirect:
        """The unit step done: the code, whose tokens carry `unit`, back to the relying party."""
        if pending.session is None:
            raise errors.Conflict("The person has not signed in yet.", code="unit_step_not_started")
        if await self._store.take(keys.key(keys.Space.OIDC_REQUEST, pending.request_id)) is None:
            raise errors.NotFound("This sign-in was completed already.", code="signin_not_found")
        url = await self._code_redirect(pending.request, pending.session, unit=unit)
        return Redirect(url, {self.binding_cookie: ""})

    async def cancel(self, pending: Pending) -> Redirect:
        """The person declined: `access_denied` to the relying party."""
        await self._store.delete(keys.key(keys.Space.OIDC_REQUEST, pending.request_id))
        request = pending.request
        url = redirect_to(
            request.redirect_uri,
            {"error": "access_denied", "error_description": "The person cancelled the sign-in.", **self._tail(request)},
        )
        return Redirect(url, {self.binding_cookie: ""})

    def _tail(self, request: AuthorizationRequest) -> dict[str, str]:
        return {"state": request.state, "iss": self.settings.issuer}

    def refused_url(self, refused: RefusedToClient) -> str:
        return redirect_to(
            refused.redirect_uri,
            {
                "error": refused.error,
                "error_description": refused.description,
                "state": refused.state,
                "iss": self.settings.issuer,
            },
        )

    async def _code_redirect(
        self, request: AuthorizationRequest, session: BrowserSession, *, unit: Mapping[str, str] | None = None
    ) -> str:
        code = secrets.token_urlsafe(32)
        record = {
            **request.record(),
            **_session_facts(session),
            "unit": dumps(dict(unit)).decode() if unit else "",
        }
        await self._store.put(keys.key(keys.Space.OIDC_CODE, _hash(code)), record, self.settings.oidc_code_ttl)
        return redirect_to(request.redirect_uri, {"code": code, **self._tail(request)})

    # The token endpoint's authorization_code grant --------------------------------------------------
    async def client_of(
        self, form: Mapping[str, str], basic: tuple[str, str] | None, *, endpoint: str = "/v1/token"
    ) -> RelyingParty | None:
        """The relying party making a request at `endpoint` (the token endpoint, /par, /v1/revoke),
        authenticated as it registered: its secret (Basic or form), a `private_key_jwt` assertion, or
        nothing for a public client. None when the client is not a relying party (the gateway's own
        clients use other grants)."""
        assertion = form.get("client_assertion")
        if assertion is not None or "client_assertion_type" in form:
            if basic is not None or "client_secret" in form:
                raise OAuthError("invalid_client", "Use one client authentication method, not two.", status=401)
            return await self._asserted_client(form, endpoint)
        client_id = basic[0] if basic is not None else form.get("client_id", "")
        party = await self.parties.get(client_id)
        if party is None:
            return None
        secret = basic[1] if basic is not None else form.get("client_secret")
        if party.uses_keys:
            raise OAuthError("invalid_client", "This client authenticates with private_key_jwt.", status=401)
        if party.public:
            if secret:
                raise OAuthError("invalid_client", "This client is public: it has no secret.", status=401)
        elif secret is None or not party.secret_matches(secret):
            raise OAuthError("invalid_client", "Client authentication failed.", status=401)
        return party

    async def _asserted_client(self, form: Mapping[str, str], endpoint: str) -> RelyingParty | None:
        """OpenID Connect Core 9 `private_key_jwt` (RFC 7523): the party the assertion names, if
        the assertion verifies with one of its keys (gateway/tokens/assertions.py)."""
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise OAuthError("invalid_client", f"client_assertion_type must be {ASSERTION_TYPE}.", status=401)
        assertion = form.get("client_assertion", "")
        client_id, header = claimed_client(assertion)
        if form.get("client_id", client_id) != client_id:
            raise OAuthError("invalid_client", "client_id differs from the client assertion's iss.", status=401)
        party = await self.parties.get(client_id)
        if party is None:
            return None
        if not party.uses_keys:
            raise OAuthError("invalid_client", "This client was registered without keys (private_key_jwt).", status=401)
        kid = header.get("kid")
        key_set = await self.client_keys.key_set(party, kid if isinstance(kid, str) else None)
        issuer = self.settings.issuer
        audiences = (issuer, issuer + "/v1/token", issuer + endpoint)
        await self._assertions.verify(
            assertion, client_id=client_id, key_set=key_set, header=header, audiences=audiences
        )
        return party

    async def exchange_code(self, form: Mapping[str, str], party: RelyingParty, *, jkt: str | None) -> dict[str, Any]:
        code = form.get("code", "")
        if not code or len(code) > 128:
            raise OAuthError("invalid_request", "code is required.")
        record = await self._store.take(keys.key(keys.Space.OIDC_CODE, _hash(code)))
        if record is None:
            spent = await self._store.take(keys.key(keys.Space.OIDC_CODE_SPENT, _hash(code)))
            if spent is not None:  # RFC 6749 4.1.2: a code used twice revokes what it issued
                await self._sessions.end(spent["sid"])
                raise OAuthError("invalid_grant", "This code was used already; what it issued is revoked.")
            raise OAuthError("invalid_grant", "The code is not valid or has expired.")
        request = AuthorizationRequest.from_record(record)
        if request.client_id != party.client_id:
            raise OAuthError("invalid_grant", "The code was issued to another client.")
        if form.get("redirect_uri") != request.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri differs from the authorization request's.")
        if not verifier_matches(form.get("code_verifier", ""), request.code_challenge):
            raise OAuthError("invalid_grant", "The PKCE code_verifier does not match the code_challenge.")
        amr = tuple(record["amr"].split())
        auth_time = int(record["auth_time"])
        unit = {"unit": loads(record["unit"])} if record.get("unit") else None  # kept by the session: refreshes too
        tokens = await self._sessions.start(
            subject=record["sub"],
            client_id=party.client_id,
            amr=amr,
            device_name=party.name,
            jkt=jkt,
            auth_time=auth_time,
            parent=record["browser_sid"],
            scope=request.scope,
            claims=unit,
        )
        sid = tokens["refresh_token"].partition(".")[0]
        await asyncio.gather(  # independent writes: one round trip
            self._store.put(keys.key(keys.Space.OIDC_CODE_SPENT, _hash(code)), {"sid": sid}, SPENT_CODE_MEMORY),
            self.client_sessions.add(party.client_id, sid),  # so that removing the party ends it
        )
        answer: dict[str, Any] = {
            "access_token": tokens["access_token"],
            "token_type": tokens["token_type"],
            "expires_in": tokens["expires_in"],
            "scope": request.scope,
            "id_token": id_tokens.id_token(
                self._issuer.ring,
                issuer=self.settings.issuer,
                subject=record["sub"],
                client_id=party.client_id,
                session_id=record["browser_sid"],
                auth_time=auth_time,
                amr=amr,
                nonce=request.nonce,
                access_token=tokens["access_token"],
                ttl=self.settings.oidc_id_token_ttl,
                extra=unit,
                alg=party.id_token_alg,
            ),
        }
        if "offline_access" in request.scopes:
            answer["refresh_token"] = tokens["refresh_token"]
        return answer

    # UserInfo -------------------------------------------------------------------------------------------
    async def userinfo(self, subject: str, scope: str, unit: Any = None) -> dict[str, Any]:
        """`unit`: the access token's `unit` claim, returned when the scope has `unit`."""
        scopes = scope.split()
        if "openid" not in scopes:
            raise errors.Forbidden("This access token was not issued for OpenID Connect.", code="insufficient_scope")
        person = await self._person(subject)
        if person is None:
            raise errors.Unauthorized("The person of this access token no longer exists.", code="invalid_token")
        claims = {"sub": subject, **self.identity_claims(person, scopes)}
        if UNIT_SCOPE in scopes and isinstance(unit, dict):
            claims["unit"] = unit
        return claims

    async def _person(self, subject: str) -> Person | None:
        """The directory's record, remembered for `PERSON_MEMORY` seconds: a relying party asks for
        UserInfo after every sign-in and refresh, and a read through the database costs more than the
        rest of the request (names and phones change seldom; a change shows within that time)."""
        now = time.monotonic()
        kept = self._people.get(subject)
        if kept is not None and kept[0] > now:
            return kept[1]
        person = await self._directory.get(subject)
        if person is not None:
            if len(self._people) >= PEOPLE_REMEMBERED:
                self._people.clear()  # bounded; a rare refill is cheaper than an LRU on every hit
            self._people[subject] = (now + PERSON_MEMORY, person)
        return person

    @staticmethod
    def identity_claims(person: Any, scopes: tuple[str, ...] | list[str]) -> dict[str, Any]:
        """The claims `scopes` grant (Core 5.4): `profile` the real and the login name, `phone` the
        number registered (verified by SMS at registration)."""
        claims: dict[str, Any] = {}
        if person is None:
            return claims
        if "profile" in scopes:
            claims["name"] = person.name
            claims["preferred_username"] = person.login_name
        if "phone" in scopes:
            claims["phone_number"] = "+86" + person.phone
            claims["phone_number_verified"] = True
        return claims


def _session_facts(session: BrowserSession | None) -> dict[str, str]:
    """A browser session as the pending request and the code keep it (flat strings)."""
    if session is None:
        return {}
    return {
        "sub": session.subject,
        "browser_sid": session.sid,
        "auth_time": str(session.auth_time),
        "amr": " ".join(session.amr),
    }


__all__ = [
    "BrowserSession",
    "OAuthError",
    "OidcProvider",
    "Pending",
    "Redirect",
    "RefusedHere",
    "RefusedToClient",
    "SignedIn",
    "client_and_redirect",
]

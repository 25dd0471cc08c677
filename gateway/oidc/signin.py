"""The browser sign-in page of the OpenID Connect provider: `GET /signin?request=ID` and its posts.

    /authorize ──303──▶ /signin?request=ID (+ binding cookie) ──▶ the page: QR code (default) or password
      QR:       POST /signin/qr ──▶ a code for this sign-in (client `sso-signin`; the phone shows the
                relying party's name) ─ the page waits (WebSocket / long-poll) ─ `confirmed`, no token
                POST /signin/qr/complete ──▶ the server takes the result, once ──▶ {"redirect": code URL}
      password: POST /signin/password ──▶ the password login's checks, nothing issued ──▶ {"redirect": ...}
      cancel:   POST /signin/cancel (a plain form) ──303──▶ the relying party, error=access_denied
      scope `unit`: the sign-in answers {"unit_step": true} and the page goes on with the unit step
                (oidc/units_step.py, POST /signin/unit/...), which answers the {"redirect"}

Only the browser holding the binding cookie gets the page (any other: 404). Every post carries a CSRF
token: an HMAC of the request id keyed with that cookie's value, a 256-bit secret only this browser
holds. It needs no key shared between processes and no write to the store, and a page of another site
can neither read it (same-origin policy) nor compute it. The binding cookie is SameSite=Lax besides, so
a cross-site post does not even carry it.

The script's posts (password, QR) answer JSON, `{"redirect": url}`, and start the browser session by
the cookie of that same answer; the page then goes to `url`, the relying party's redirect URI with the
code. No token ever reaches the page.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from gateway import errors
from gateway.accounts.login import PasswordCredentials, PasswordLogins
from gateway.inputs import client_ip, parse_model, read_form
from gateway.jsonutil import dumps
from gateway.oidc import units_step
from gateway.oidc.http import NO_STORE, redirect, with_cookies
from gateway.oidc.provider import OidcProvider, Pending, Redirect, SignedIn
from gateway.qr.service import QrService
from gateway.rules import mask_name
from gateway.web.pages import login_panel_values, origin_source, page_headers, render

CSRF_CONTEXT = b"qrgate signin csrf\x00"
CREDENTIALS = ("identifier", "password", "captcha_id", "captcha_answer")
TITLES = {"zh-CN": "登录到 {name}", "en": "Sign in to {name}"}
RETURNS = {"zh-CN": "登录后将返回 {origin}", "en": "After signing in you return to {origin}"}


def csrf_token(binding: str, request_id: str) -> str:
    """The CSRF token of the sign-in `request_id` in the browser holding the binding cookie `binding`."""
    mac = hmac.new(binding.encode(), CSRF_CONTEXT + request_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def not_found_page(request: Request) -> Response:
    """An unknown, expired or finished sign-in, or another browser's: back to the application."""
    return HTMLResponse(render("signin-error.html"), status_code=404, headers={**page_headers(request), **NO_STORE})


class SignInPage:
    def __init__(self, provider: OidcProvider, logins: PasswordLogins, qr: QrService) -> None:
        self.provider = provider
        self.logins = logins
        self.qr = qr

    async def page(self, request: Request) -> Response:
        request_id = request.query_params.get("request", "")
        binding = request.cookies.get(self.provider.binding_cookie, "")
        try:
            pending = await self.provider.pending(request_id, binding)
        except errors.NotFound:
            return not_found_page(request)
        locale = pending.request.ui_locale if pending.request.ui_locale in TITLES else "zh-CN"
        name = pending.party.name
        back_to = origin_source(pending.request.redirect_uri)
        body = render(
            "signin.html",
            login_action="/signin/password",
            declaration_action="/signin/unit/verify",
            lang=locale,
            title=TITLES[locale].format(name=name),
            party=name,
            request=pending.request_id,
            csrf=csrf_token(binding, pending.request_id),
            return_to=back_to or "",
            return_hint=RETURNS[locale].format(origin=back_to) if back_to else "",
            login_hint=pending.request.login_hint,
            unit_step="true" if pending.session is not None else "false",
            **login_panel_values(self.provider.settings),
        )
        # The page posts its forms here, and the cancel form's answer redirects to the relying party.
        form_action = "'self'" + (f" {back_to}" if back_to else "")
        return HTMLResponse(body, headers=page_headers(request, "no-store", form_action=form_action))

    async def _checked(self, request: Request, form: dict[str, str]) -> Pending:
        """The pending sign-in a post is for, once its CSRF token is right (403 otherwise)."""
        binding = request.cookies.get(self.provider.binding_cookie, "")
        request_id = form.get("request", "")
        if binding and request_id:  # without them `pending` answers 404: not this browser's
            expected = csrf_token(binding, request_id).encode()
            cross_site = request.headers.get("sec-fetch-site") == "cross-site"
            if cross_site or not hmac.compare_digest(form.get("csrf", "").encode(), expected):
                raise errors.Forbidden(
                    "This form did not come from the sign-in page (missing or wrong CSRF token).",
                    code="invalid_csrf_token",
                )
        return await self.provider.pending(request_id, binding)

    def _go(self, target: Redirect) -> Response:
        """The script's answer: where to go, with the cookies that sign the browser in."""
        response = Response(dumps({"redirect": target.url}), media_type="application/json", headers=NO_STORE)
        return with_cookies(response, target, self.provider)

    async def _signed_in(self, pending: Pending, who: SignedIn) -> Response:
        """The code to the relying party, or first the unit step when it asked for scope `unit`."""
        if pending.wants_unit:
            return units_step.started(await self.provider.begin_unit_step(pending, who), self.provider)
        return self._go(await self.provider.complete(pending, who))

    async def password(self, request: Request) -> Response:
        form = await read_form(request)
        pending = await self._checked(request, form)
        credentials = parse_model(PasswordCredentials, {name: form[name] for name in CREDENTIALS if form.get(name)})
        person = await self.logins.authenticate(credentials, ip=client_ip(request))
        who = SignedIn(person.id, ("pwd",), int(time.time()), mask_name(person.name))
        return await self._signed_in(pending, who)

    async def mint_qr(self, request: Request) -> Response:
        pending = await self._checked(request, await read_form(request))
        minted = await self.qr.mint_signin(
            device_name=pending.party.name,
            ip=client_ip(request),
            user_agent=request.headers.get("user-agent", "")[:256],
        )
        await self.provider.remember_qr(pending, minted["qr_id"])  # only this code may complete the sign-in
        return Response(dumps(minted), status_code=201, media_type="application/json", headers=NO_STORE)

    async def complete_qr(self, request: Request) -> Response:
        form = await read_form(request)
        pending = await self._checked(request, form)
        qr_id = await self.provider.qr_of(pending)
        if not qr_id:
            raise errors.Conflict("No QR code was shown for this sign-in.", code="qr_wrong_state")
        # The waiter token must be that of the code remembered for this sign-in, not of any other.
        confirmer = await self.qr.take_signin(qr_id, form.get("waiter_token", "")[:128])
        who = SignedIn(confirmer.person_id, ("qr",), confirmer.auth_time, confirmer.display_name)
        return await self._signed_in(pending, who)

    async def cancel(self, request: Request) -> Response:
        """A plain form post (it works without the script): 303 to the relying party."""
        form = await read_form(request)
        try:
            pending = await self._checked(request, form)
        except errors.NotFound:
            return not_found_page(request)
        return redirect(await self.provider.cancel(pending), self.provider, status=303)


def routes(provider: OidcProvider, logins: PasswordLogins, qr: QrService) -> list[BaseRoute]:
    signin = SignInPage(provider, logins, qr)
    return [
        Route("/signin", signin.page, methods=["GET"]),
        Route("/signin/password", signin.password, methods=["POST"]),
        Route("/signin/qr", signin.mint_qr, methods=["POST"]),
        Route("/signin/qr/complete", signin.complete_qr, methods=["POST"]),
        Route("/signin/cancel", signin.cancel, methods=["POST"]),
        *units_step.routes(provider, signin._checked),
    ]

"""The unit step inside sign-in: a relying party that asks for scope `unit` gets, after the login, the
unit verification (docs/units.md) on the same sign-in page, and its tokens carry `unit: {tin, role, via}`.

    /signin/password or /signin/qr/complete ──▶ browser session started, pending request kept (with the
        session's facts) ──▶ {"unit_step": true}: the page shows the unit step
    POST /signin/unit/list    ──▶ GET  /units/v1/units                    (the units, as the service lists them)
    POST /signin/unit/verify  ──▶ POST /units/v1/units/{tin}/verify       (declaration password, captcha)
    POST /signin/unit/enter   ──▶ POST /units/v1/units/{tin}/enter        (an authorized person)
        200 ──▶ `unit` kept in the code ──▶ {"redirect": the relying party's redirect URI with the code}
    POST /signin/unit/cancel  ──▶ {"redirect": ... error=access_denied} (the browser session stays)

The gateway talks to the units service over HTTP like any client (it never imports gateway.units: the
service trusts the gateway only through its JWKS), with a gateway access token of the browser session
minted for these calls (60 s; it never reaches the page). The service's refusals (401 attempts_left,
400 captcha_required / captcha_invalid, 423 retry_after, 403, 409) are passed to the page as they are,
problem+json, so it shows the desktop's messages. Every post is checked like the other sign-in posts
(binding cookie and CSRF token, `SignInPage._checked`).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway import errors
from gateway.inputs import read_form
from gateway.jsonutil import dumps
from gateway.oidc.http import NO_STORE, with_cookies
from gateway.oidc.provider import BrowserSession, OidcProvider, Pending, Redirect

TIN = re.compile(r"[0-9A-Z]{18}")  # a unified social credit code, as the units service's paths take it
UNIT_FIELDS = ("tin", "role", "via")
PASSED_HEADERS = ("retry-after",)
TIMEOUT = 10.0

Checked = Callable[[Request, dict[str, str]], Awaitable[Pending]]


def started(target: Redirect, provider: OidcProvider) -> Response:
    """The sign-in's answer when the unit step follows: the browser session's cookie, no redirect yet."""
    response = Response(dumps({"unit_step": True}), media_type="application/json", headers=NO_STORE)
    return with_cookies(response, target, provider)


class UnitStep:
    def __init__(self, provider: OidcProvider, checked: Checked) -> None:
        self.provider = provider
        self._checked = checked
        settings = provider.settings
        self.base = (settings.units_gateway_url or settings.issuer).rstrip("/") + "/units"

    async def _session(self, request: Request) -> tuple[Pending, BrowserSession, dict[str, str]]:
        form = await read_form(request)
        pending = await self._checked(request, form)
        if pending.session is None or not pending.wants_unit:
            raise errors.Conflict("Sign in first: the unit step follows the login.", code="unit_step_not_started")
        return pending, pending.session, form

    async def _call(self, session: BrowserSession, method: str, path: str, body: Any = None) -> httpx.Response:
        """One call to the units service as the person. A client per call: the step is a few calls per
        sign-in, and nothing is left open at shutdown."""
        token = self.provider.unit_step_token(session)
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False) as http:
                return await http.request(
                    method, self.base + path, json=body, headers={"Authorization": f"Bearer {token}"}
                )
        except httpx.HTTPError as exc:
            raise errors.ServiceUnavailable(
                "The unit service cannot be reached; try again shortly.", code="units_unavailable"
            ) from exc

    @staticmethod
    def _passed(answer: httpx.Response) -> Response:
        """The units service's answer, as it is (its problem+json refusals, its unit list)."""
        headers = {**NO_STORE, **{name: answer.headers[name] for name in PASSED_HEADERS if name in answer.headers}}
        media_type = answer.headers.get("content-type", "application/problem+json")
        return Response(answer.content, status_code=answer.status_code, media_type=media_type, headers=headers)

    async def _entered(self, pending: Pending, answer: httpx.Response) -> Response:
        if answer.status_code != 200:
            return self._passed(answer)
        # The `unit` object of the service's answer is taken as it is, not read back from the unit token:
        # the gateway asked the service itself (loopback when mounted, TLS otherwise) with its own token,
        # so the answer is the service's, as trustworthy as the token's signature would be.
        unit = answer.json().get("unit")
        if not isinstance(unit, dict) or not all(isinstance(unit.get(name), str) for name in UNIT_FIELDS):
            raise errors.ServiceUnavailable("The unit service gave an unexpected answer.", code="units_unavailable")
        target = await self.provider.complete_unit(pending, {name: unit[name] for name in UNIT_FIELDS})
        response = Response(dumps({"redirect": target.url}), media_type="application/json", headers=NO_STORE)
        return with_cookies(response, target, self.provider)

    @staticmethod
    def _tin(form: Mapping[str, str]) -> str:
        tin = form.get("tin", "")
        if not TIN.fullmatch(tin):
            raise errors.BadRequest("tin is a unified social credit code (18 characters).", code="invalid_request")
        return tin

    async def list(self, request: Request) -> Response:
        _, session, _ = await self._session(request)
        return self._passed(await self._call(session, "GET", "/v1/units"))

    async def verify(self, request: Request) -> Response:
        pending, session, form = await self._session(request)
        tin = self._tin(form)
        body = {"declaration_password": form.get("declaration_password", "")[:128]}
        for name in ("captcha_id", "captcha_answer"):
            if form.get(name):
                body[name] = form[name][:128]
        return await self._entered(pending, await self._call(session, "POST", f"/v1/units/{tin}/verify", body))

    async def enter(self, request: Request) -> Response:
        pending, session, form = await self._session(request)
        tin = self._tin(form)
        return await self._entered(pending, await self._call(session, "POST", f"/v1/units/{tin}/enter"))

    async def cancel(self, request: Request) -> Response:
        """access_denied to the relying party; the browser session stays (the person did sign in)."""
        pending = await self._checked(request, await read_form(request))
        target = await self.provider.cancel(pending)
        response = Response(dumps({"redirect": target.url}), media_type="application/json", headers=NO_STORE)
        return with_cookies(response, target, self.provider)


def routes(provider: OidcProvider, checked: Checked) -> list[BaseRoute]:
    step = UnitStep(provider, checked)
    return [
        Route("/signin/unit/list", step.list, methods=["POST"]),
        Route("/signin/unit/verify", step.verify, methods=["POST"]),
        Route("/signin/unit/enter", step.enter, methods=["POST"]),
        Route("/signin/unit/cancel", step.cancel, methods=["POST"]),
    ]

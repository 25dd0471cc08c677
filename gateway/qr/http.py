"""HTTP adapter of the QR protocol: mint, image, long-poll state, scan, confirm, cancel, abandon.
Each endpoint parses the request, calls the QrService and serialises its answer."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from gateway import errors
from gateway.draining import Draining
from gateway.guard.guard import Attempt
from gateway.inputs import StrictModel, bearer_token, client_ip, read_json
from gateway.jsonutil import dumps
from gateway.qr.machine import QrState
from gateway.qr.render import DEFAULT_SIZE, MEDIA_TYPES, SIZES, QrImages
from gateway.qr.service import QrService
from gateway.qr.ws import QrSocket
from gateway.tokens.bearer import BearerAuth

NO_STORE = {"Cache-Control": "no-store"}
WAIT_PATTERN = re.compile(r"[0-9]{1,2}(\.[0-9]{1,3})?")


class MintRequest(StrictModel):
    client_id: str = Field(min_length=1, max_length=64)
    device_name: str | None = Field(default=None, max_length=128)
    dpop_jkt: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{43}$")


class ConfirmRequest(StrictModel):
    """An optional proof of fresh authentication for a confirm: the person's password, entered again
    (checked by the login's guard: throttle, lock, captcha rule)."""

    password: str = Field(min_length=1, max_length=128)
    captcha_id: str | None = Field(default=None, max_length=64)
    captcha_answer: str | None = Field(default=None, max_length=16)


# Checks a person's password as a login would (person id, password, what came with it); raises the refusal.
Reauthenticate = Callable[[str, str, Attempt], Awaitable[None]]


def json_response(body: object, status: int = 200) -> Response:
    return Response(dumps(body), status_code=status, media_type="application/json", headers=NO_STORE)


def parse_size(request: Request) -> int:
    """`?size=`: pixels per module (the SVG's width and height derive from it; it scales anyway)."""
    raw = request.query_params.get("size")
    if raw is None:
        return DEFAULT_SIZE
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 2 and int(raw) in SIZES):
        raise errors.BadRequest(
            f"size must be a whole number of pixels per module from {SIZES.start} to {SIZES.stop - 1}.",
            code="invalid_request",
        )
    return int(raw)


def parse_wait(request: Request, limit: int) -> float:
    raw = request.query_params.get("wait", "0")
    if not WAIT_PATTERN.fullmatch(raw):
        raise errors.BadRequest("wait must be a number of seconds.", code="invalid_request")
    wait = float(raw)
    if not 0 <= wait <= limit:
        raise errors.BadRequest(f"wait must be between 0 and {limit} seconds.", code="invalid_request")
    return wait


def parse_since(request: Request) -> QrState | None:
    """`?since=`: the state the client last saw (the `state` of its previous answer)."""
    raw = request.query_params.get("since")
    if raw is None:
        return None
    try:
        return QrState(raw)
    except ValueError:
        states = ", ".join(state.value for state in QrState)
        raise errors.BadRequest(
            f"since must be a state the client saw: one of {states}.", code="invalid_request"
        ) from None


class QrEndpoints:
    def __init__(self, qr: QrService, images: QrImages, bearer: BearerAuth, reauthenticate: Reauthenticate) -> None:
        self.qr = qr
        self.images = images
        self.bearer = bearer
        self.reauthenticate = reauthenticate

    # desktop ---------------------------------------------------------------------------------------
    async def mint(self, request: Request) -> Response:
        body = await read_json(request, MintRequest)
        minted = await self.qr.mint(
            client_id=body.client_id,
            device_name=body.device_name or "",
            dpop_jkt=body.dpop_jkt,
            ip=client_ip(request),
            user_agent=request.headers.get("user-agent", "")[:256],
        )
        return json_response(minted, 201)

    async def image(self, request: Request) -> Response:
        kind: str = request.path_params["kind"]
        if kind not in MEDIA_TYPES:
            raise errors.NotFound("Images are served as .svg or .png.", code="not_found")
        size = parse_size(request)
        shown = await self.qr.scannable(request.path_params["qr_id"])
        return Response(
            self.images.render(shown.content, kind, size, keep_until=shown.expires_at),
            media_type=MEDIA_TYPES[kind],
            headers={"Cache-Control": "private, max-age=60"},
        )

    async def long_poll(self, request: Request) -> Response:
        """Answer at once when there is a result to deliver, the QR is finished, or its state differs
        from `since` (what the client last saw); otherwise wait for the next change (or `wait` seconds)
        and answer the state then. Without `since`, the state found now is the one waited away from."""
        wait = parse_wait(request, self.qr.long_poll_max_wait)
        since = parse_since(request)
        qr_id: str = request.path_params["qr_id"]
        token = bearer_token(request)
        # Refuse a wrong token or an unknown code before subscribing: with the store down, subscribing
        # would wait for it, where a read fails at once.
        await self.qr.record_for_waiter(qr_id, token)
        async with self.qr.watch(qr_id, token, wait=wait) as watch:
            seen = await watch.first()
            baseline = since or seen.state
            # Confirmed: the next step takes the delivery at once (no waiting), whatever was seen.
            while not seen.final and (seen.state is baseline or seen.state is QrState.CONFIRMED):
                changed = await watch.next()
                if changed is None:  # `wait` is up, or shutdown: answer what was seen last
                    break
                seen = changed
        if seen.state is QrState.EXPIRED:
            await self.qr.note_expired(qr_id, seen.record)
        return json_response(seen.view(time.time()))

    async def abandon(self, request: Request) -> Response:
        await self.qr.abandon(request.path_params["qr_id"], bearer_token(request))
        return Response(status_code=204)

    # phone -----------------------------------------------------------------------------------------
    async def scan(self, request: Request) -> Response:
        phone = await self.bearer.caller(request)
        scanned = await self.qr.scan(request.path_params["qr_id"], phone, ip=client_ip(request))
        return json_response(scanned)

    async def confirm(self, request: Request) -> Response:
        """No body: the desktop keeps the phone session's auth_time. With `password`: checked first, and
        the desktop's session is a fresh password login (auth_time now, amr ["qr", "pwd"])."""
        phone = await self.bearer.caller(request)
        person_id = self.qr.confirming_person(phone)
        fresh_password_at = None
        if await request.body():
            body = await read_json(request, ConfirmRequest)
            attempt = Attempt(client_ip(request), body.captcha_id, body.captcha_answer)
            await self.reauthenticate(person_id, body.password, attempt)
            fresh_password_at = int(time.time())
        await self.qr.confirm(request.path_params["qr_id"], phone, fresh_password_at=fresh_password_at)
        return Response(status_code=204)

    async def cancel(self, request: Request) -> Response:
        await self.qr.cancel(request.path_params["qr_id"], await self.bearer.caller(request))
        return Response(status_code=204)


def routes(
    qr: QrService, *, images: QrImages, bearer: BearerAuth, draining: Draining, reauthenticate: Reauthenticate
) -> list[BaseRoute]:
    http = QrEndpoints(qr, images, bearer, reauthenticate)
    return [
        Route("/v1/qr", http.mint, methods=["POST"]),
        Route("/v1/qr/{qr_id}.{kind:str}", http.image, methods=["GET"]),
        Route("/v1/qr/{qr_id}", http.abandon, methods=["DELETE"]),
        Route("/v1/qr/{qr_id}/state", http.long_poll, methods=["GET"]),
        Route("/v1/qr/{qr_id}/scan", http.scan, methods=["POST"]),
        Route("/v1/qr/{qr_id}/confirm", http.confirm, methods=["POST"]),
        Route("/v1/qr/{qr_id}/cancel", http.cancel, methods=["POST"]),
        WebSocketRoute("/v1/qr/{qr_id}/events", QrSocket(qr, draining).events),
    ]

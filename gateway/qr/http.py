"""HTTP adapter of the QR protocol: mint, image, long-poll state, scan, confirm, cancel, abandon."""

from __future__ import annotations

import re
import time

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from gateway import errors
from gateway.components import Gateway, gateway_of
from gateway.inputs import StrictModel, bearer_token, client_ip, read_json
from gateway.jsonutil import dumps
from gateway.qr.machine import QrState
from gateway.qr.render import DEFAULT_SIZE, MEDIA_TYPES, SIZES
from gateway.qr.service import Scanner
from gateway.qr.ws import qr_events
from gateway.rules import mask_name
from gateway.tokens.bearer import Caller

NO_STORE = {"Cache-Control": "no-store"}
WAIT_PATTERN = re.compile(r"[0-9]{1,2}(\.[0-9]{1,3})?")


class MintRequest(StrictModel):
    client_id: str = Field(min_length=1, max_length=64)
    device_name: str | None = Field(default=None, max_length=128)
    dpop_jkt: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{43}$")


def json_response(body: object, status: int = 200) -> Response:
    return Response(dumps(body), status_code=status, media_type="application/json", headers=NO_STORE)


async def mint(request: Request) -> Response:
    gw = gateway_of(request)
    body = await read_json(request, MintRequest)
    policy = gw.clients.get(body.client_id)
    if policy is None:
        raise errors.UnknownClient(f"Unknown client_id {body.client_id!r}.")
    if not policy.may_mint_qr:
        raise errors.Forbidden(f"Client {body.client_id!r} may not mint QR codes.", code="client_not_allowed")
    result = await gw.qr.mint(
        client_id=body.client_id,
        device_name=body.device_name or "",
        dpop_jkt=body.dpop_jkt,
        ip=client_ip(request),
        user_agent=request.headers.get("user-agent", "")[:256],
    )
    return json_response(result, 201)


async def image(request: Request) -> Response:
    gw = gateway_of(request)
    qr_id: str = request.path_params["qr_id"]
    kind: str = request.path_params["kind"]
    if kind not in MEDIA_TYPES:
        raise errors.NotFound("Images are served as .svg or .png.", code="not_found")
    size = parse_size(request)
    record = await gw.qr.get(qr_id)
    if record.state_at(time.time()) is not QrState.PENDING:
        raise errors.NotFound("This QR code can no longer be scanned.", code="qr_not_found")
    return Response(
        gw.images.render(gw.qr.qr_content(qr_id), kind, size, keep_until=record.expires_at),
        media_type=MEDIA_TYPES[kind],
        headers={"Cache-Control": "private, max-age=60"},
    )


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


async def long_poll(request: Request) -> Response:
    """Answer at once when there is a result to deliver or the QR is finished; otherwise wait for
    the next change (or `wait` seconds) and answer the state then."""
    gw = gateway_of(request)
    wait = parse_wait(request, gw.settings.long_poll_max_wait)
    qr_id: str = request.path_params["qr_id"]
    token = bearer_token(request)
    # Refuse a wrong token or an unknown code before subscribing: with the store down, subscribing
    # would wait for it, where a read fails at once.
    await gw.qr.record_for_waiter(qr_id, token)
    async with gw.qr.watch(qr_id, token, wait=wait) as watch:
        first = seen = await watch.first()
        while not seen.final and seen.state is first.state:
            changed = await watch.next()
            if changed is None:  # `wait` is up, or shutdown: answer what was seen last
                break
            seen = changed
    return json_response(seen.view(time.time()))


async def abandon(request: Request) -> Response:
    gw = gateway_of(request)
    await gw.qr.abandon(request.path_params["qr_id"], bearer_token(request))
    return Response(status_code=204)


async def phone(request: Request, gw: Gateway) -> Caller:
    """The mobile app's caller (signature, live session, client checked)."""
    found = await gw.bearer.caller(request)
    policy = gw.clients.get(found.claims["client_id"])
    if policy is None or not policy.may_scan_qr:
        raise errors.Forbidden("Only the mobile app may scan QR codes.", code="client_not_allowed")
    return found


async def scanner_name(gw: Gateway, found: Caller) -> str:
    """The scanner's masked name, shown on the desktop: kept in the session since it began (sessions
    from before that was so: read from the directory)."""
    kept = found.session.get("display_name")
    if kept:
        return kept
    person = await gw.directory.get(found.claims["sub"])
    if person is None:
        raise errors.Unauthorized("The person of this token no longer exists.", code="invalid_token")
    return mask_name(person.name)


async def scan(request: Request) -> Response:
    gw = gateway_of(request)
    found = await phone(request, gw)
    name = await scanner_name(gw, found)
    scanner = Scanner(person_id=found.claims["sub"], display_name=name, ip=client_ip(request))
    return json_response(await gw.qr.scan(request.path_params["qr_id"], scanner))


async def confirm(request: Request) -> Response:
    gw = gateway_of(request)
    person_id = (await phone(request, gw)).claims["sub"]
    await gw.qr.confirm(request.path_params["qr_id"], person_id)
    return Response(status_code=204)


async def cancel(request: Request) -> Response:
    gw = gateway_of(request)
    person_id = (await phone(request, gw)).claims["sub"]
    await gw.qr.cancel(request.path_params["qr_id"], person_id)
    return Response(status_code=204)


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/qr", mint, methods=["POST"]),
        Route("/v1/qr/{qr_id}.{kind:str}", image, methods=["GET"]),
        Route("/v1/qr/{qr_id}", abandon, methods=["DELETE"]),
        Route("/v1/qr/{qr_id}/state", long_poll, methods=["GET"]),
        Route("/v1/qr/{qr_id}/scan", scan, methods=["POST"]),
        Route("/v1/qr/{qr_id}/confirm", confirm, methods=["POST"]),
        Route("/v1/qr/{qr_id}/cancel", cancel, methods=["POST"]),
        WebSocketRoute("/v1/qr/{qr_id}/events", qr_events),
    ]

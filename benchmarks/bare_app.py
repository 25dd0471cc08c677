"""The floor the gateway is measured against: bare Starlette apps under the same uvicorn settings.

    python benchmarks/bare_app.py echo PORT    # a WebSocket that echoes (idle-waiter memory floor)
    python benchmarks/bare_app.py flow PORT    # the QR login request mix with no logic behind it
    python benchmarks/bare_app.py sso PORT     # the single sign-on mix: authorize, token, userinfo

`flow` answers the same requests as a login (mint, WebSocket hello -> state, scan, confirm ->
`confirmed` pushed to the socket) from a dict in memory: no store, no tokens, no validation.
"""

from __future__ import annotations

import asyncio
import secrets
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

events: dict[str, asyncio.Queue[str]] = {}


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def echo(ws: WebSocket) -> None:
    await ws.accept()
    try:
        while True:
            await ws.send_text(await ws.receive_text())
    except Exception:
        return


async def mint(request: Request) -> Response:
    await request.json()
    qr_id = secrets.token_urlsafe(16)
    events[qr_id] = asyncio.Queue()
    return JSONResponse({"qr_id": qr_id, "waiter_token": secrets.token_urlsafe(32)}, status_code=201)


async def waiter(ws: WebSocket) -> None:
    await ws.accept()
    await ws.receive_text()
    queue = events[ws.path_params["qr_id"]]
    await ws.send_text('{"type":"state","state":"pending","expires_in":120}')
    while True:
        message = await queue.get()
        await ws.send_text(message)
        if '"confirmed"' in message:
            break
    await ws.close()
    events.pop(ws.path_params["qr_id"], None)


async def scan(request: Request) -> Response:
    events[request.path_params["qr_id"]].put_nowait('{"type":"scanned","scanner":{"display_name":"张*"}}')
    return JSONResponse({"qr_id": request.path_params["qr_id"], "proximity": "same_network"})


async def confirm(request: Request) -> Response:
    token = secrets.token_urlsafe(300)
    events[request.path_params["qr_id"]].put_nowait('{"type":"confirmed","token":{"access_token":"' + token + '"}}')
    return Response(status_code=204)


async def token(request: Request) -> Response:
    form = (await request.body()).decode()
    assert "grant_type=refresh_token" in form
    body = {"access_token": secrets.token_urlsafe(400), "token_type": "Bearer", "expires_in": 600,
            "refresh_token": secrets.token_urlsafe(48)}  # fmt: skip
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


async def authorize(request: Request) -> Response:
    redirect_uri = request.query_params["redirect_uri"]
    state = request.query_params["state"]
    location = f"{redirect_uri}?code={secrets.token_urlsafe(32)}&state={state}&iss=http%3A%2F%2Fop"
    return Response(status_code=302, headers={"Location": location, "Cache-Control": "no-store"})


async def code_token(request: Request) -> Response:
    form = (await request.body()).decode()
    assert "grant_type=authorization_code" in form
    body = {"access_token": secrets.token_urlsafe(400), "token_type": "Bearer", "expires_in": 600,
            "id_token": secrets.token_urlsafe(500), "scope": "openid profile"}  # fmt: skip
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


async def userinfo(request: Request) -> Response:
    assert request.headers["authorization"].startswith("Bearer ")
    return JSONResponse({"sub": "p_" + secrets.token_urlsafe(16), "name": "张三", "preferred_username": "zhang"})


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    routes = [Route("/healthz", healthz)]
    if kind == "echo":
        routes.append(WebSocketRoute("/v1/qr/{qr_id}/events", echo))
    elif kind == "sso":
        routes += [
            Route("/authorize", authorize, methods=["GET"]),
            Route("/v1/token", code_token, methods=["POST"]),
            Route("/userinfo", userinfo, methods=["GET"]),
        ]
    else:
        routes += [
            Route("/v1/qr", mint, methods=["POST"]),
            WebSocketRoute("/v1/qr/{qr_id}/events", waiter),
            Route("/v1/qr/{qr_id}/scan", scan, methods=["POST"]),
            Route("/v1/qr/{qr_id}/confirm", confirm, methods=["POST"]),
            Route("/v1/token", token, methods=["POST"]),
        ]
    uvicorn.run(
        Starlette(routes=routes),
        host="127.0.0.1",
        port=port,
        ws="websockets-sansio",
        http="httptools",
        ws_ping_interval=20,
        ws_max_size=4096,
        ws_per_message_deflate=False,
        log_level="warning",
        access_log=False,
        backlog=4096,
    )


if __name__ == "__main__":
    main()

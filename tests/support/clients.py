"""Small protocol clients for tests: the desktop and the phone, over httpx and websockets."""

from __future__ import annotations

import json
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect


async def phone_login(client: httpx.AsyncClient, person: dict[str, str], client_id: str = "mobile-app") -> str:
    response = await client.post(
        "/v1/login/password",
        json={"identifier": person["phone"], "password": person["password"], "client_id": client_id},
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def mint(client: httpx.AsyncClient, **extra: Any) -> dict[str, Any]:
    response = await client.post("/v1/qr", json={"client_id": "withholding-desktop", "device_name": "PC-01", **extra})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def open_events(minted: dict[str, Any], waiter_token: str | None = None) -> ClientConnection:
    ws = await connect(minted["events_url"])
    await ws.send(json.dumps({"type": "hello", "waiter_token": waiter_token or minted["waiter_token"]}))
    return ws


async def next_message(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    import asyncio

    raw = await asyncio.wait_for(ws.recv(), timeout)
    message: dict[str, Any] = json.loads(raw)
    return message


async def close_code(ws: ClientConnection, timeout: float = 5.0) -> int | None:
    """Drain until the server closes; the close code it sent."""
    import asyncio

    from websockets.exceptions import ConnectionClosed

    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None

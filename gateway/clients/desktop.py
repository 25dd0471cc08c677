"""`qrgate login`: the desktop side of QR login, as a reference client (docs/clients.md).

1. `POST /v1/qr` as `withholding-desktop`; show the code (here: half blocks in the terminal).
2. Open `events_url` and send `{"type": "hello", "waiter_token": ...}` at once (the gateway waits 5 s).
   The first message is always `state`; then `scanned`, then one of `confirmed` (the tokens),
   `cancelled` or `expired`, and the gateway closes with 1000.
3. On 1001 (server going away), 1013 (try again) or a dropped connection: reconnect; the new socket
   starts with the current state, so nothing is lost. On `expired`: mint a new code and show it.
4. Where WebSockets are blocked, long-poll `GET /v1/qr/{id}/state?wait=25` with the waiter token as
   a bearer token instead: same states, same single delivery.
The waiter token is a secret: it goes in the hello message or an Authorization header, never in a URL.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from gateway import __version__
from gateway.clients.terminal import half_blocks
from gateway.qr.symbol import encode

CLIENT_ID = "withholding-desktop"
POLL_WAIT = 25
RECONNECT_DELAYS = (0.2, 0.5, 1.0, 2.0, 4.0)
RETRY_CLOSE_CODES = {1001, 1006, 1011, 1012, 1013}


class LoginFailed(Exception):
    """The login ended without tokens (cancelled on the phone, a refusal, too many refreshes)."""


@dataclass
class Terminal:
    """Where the client talks to the person: the QR code and progress on `out`, the result on
    `result` (stdout; with --json only the token response goes there)."""

    out: TextIO = field(default_factory=lambda: sys.stderr)
    result: TextIO = field(default_factory=lambda: sys.stdout)
    colour: bool = False
    invert: bool = False

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)


def claims_of(access_token: str) -> dict[str, Any]:
    """The token's claims, decoded for display (the gateway is trusted here: it answered over TLS)."""
    payload = access_token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return decoded


class DesktopLogin:
    def __init__(self, base_url: str, terminal: Terminal, *, device_name: str, transport: str, refreshes: int) -> None:
        self.base_url = base_url.rstrip("/")
        self.terminal = terminal
        self.device_name = device_name
        self.transport = transport
        self.refreshes = refreshes
        self.http = httpx.AsyncClient(
            base_url=self.base_url, timeout=POLL_WAIT + 10, headers={"User-Agent": f"qrgate-login/{__version__}"}
        )
        self.minted: dict[str, Any] | None = None

    async def run(self) -> dict[str, Any]:
        try:
            for _ in range(self.refreshes + 1):
                await self.mint()
                tokens = await (self.wait_socket() if self.transport == "ws" else self.wait_poll())
                if tokens is not None:
                    self.minted = None
                    return tokens
                self.terminal.say("二维码已过期，正在刷新… / Expired — refreshing…")
            raise LoginFailed("the QR code expired too many times; run `qrgate login` again")
        finally:
            await self.abandon()
            await self.http.aclose()

    async def mint(self) -> None:
        answer = await self.http.post("/v1/qr", json={"client_id": CLIENT_ID, "device_name": self.device_name})
        if answer.status_code != 201:
            raise LoginFailed(f"could not mint a QR code: {problem(answer)}")
        self.minted = answer.json()
        content = self.minted["qr_content"]
        symbol = encode(content)
        self.terminal.say(half_blocks(symbol, colour=self.terminal.colour, invert=self.terminal.invert))
        self.terminal.say(f"请用个人所得税 App 扫码 / Scan with the tax app: {content}")
        self.terminal.say(f"有效期 / Expires in {self.minted['expires_in']} s")

    async def abandon(self) -> None:
        """Tell the gateway a code is no longer wanted (Ctrl-C, an error) so nobody can confirm it."""
        if self.minted is None:
            return
        minted, self.minted = self.minted, None
        with contextlib.suppress(httpx.HTTPError):
            await self.http.delete(f"/v1/qr/{minted['qr_id']}", headers=waiter(minted))

    def on_state(self, state: str, scanner: dict[str, str] | None) -> None:
        if state == "scanned" and scanner:
            self.terminal.say(f"已由 {scanner['display_name']} 扫描，请在手机上确认 / Scanned by "
                              f"{scanner['display_name']} — confirm on your phone")  # fmt: skip

    def cancelled(self) -> LoginFailed:
        self.minted = None
        return LoginFailed("已在手机上取消 / cancelled on the phone")

    async def wait_socket(self) -> dict[str, Any] | None:
        """The tokens, or None when the code expired. Long-polls instead when no socket opens at all."""
        assert self.minted is not None
        minted = self.minted
        opened = False
        retries = 0
        while True:
            try:
                async with connect(minted["events_url"], open_timeout=5) as ws:
                    opened = True
                    await ws.send(json.dumps({"type": "hello", "waiter_token": minted["waiter_token"]}))
                    async for raw in ws:
                        retries = 0
                        outcome = self.on_message(json.loads(raw))
                        if outcome is not None:
                            return outcome or None
                    code = ws.close_code or 1006
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else 1006
            except (OSError, InvalidHandshake, TimeoutError):
                if not opened:
                    self.terminal.say("WebSocket 不可用，改用轮询 / WebSocket unavailable, long-polling instead")
                    return await self.wait_poll()
                code = 1006
            if code == 4404:
                self.minted = None
                return None  # purged: as good as expired
            if code not in RETRY_CLOSE_CODES or retries >= len(RECONNECT_DELAYS):
                raise LoginFailed(f"the gateway closed the connection ({code})")
            await asyncio.sleep(RECONNECT_DELAYS[retries])
            retries += 1

    def on_message(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """None: keep waiting; the tokens; or {} when the code expired."""
        kind = message.get("type")
        if kind in ("state", "scanned"):
            self.on_state(message.get("state", "scanned"), message.get("scanner"))
        elif kind == "confirmed":
            self.minted = None
            return dict(message["token"])
        elif kind == "cancelled":
            raise self.cancelled()
        elif kind == "expired":
            self.minted = None
            return {}
        return None

    async def wait_poll(self) -> dict[str, Any] | None:
        assert self.minted is not None
        minted = self.minted
        announced = None
        while True:
            # `since`: the state last seen, so a change that came between two polls is answered at once.
            params: dict[str, str | int] = {"wait": POLL_WAIT}
            if announced is not None:
                params["since"] = announced
            try:
                answer = await self.http.get(f"/v1/qr/{minted['qr_id']}/state", params=params, headers=waiter(minted))
            except httpx.TransportError:
                await asyncio.sleep(1)
                continue
            if answer.status_code in (404, 410):
                self.minted = None
                return None
            if answer.status_code == 503:
                await asyncio.sleep(float(answer.headers.get("retry-after", "1")))
                continue
            if answer.status_code != 200:
                raise LoginFailed(f"long-poll refused: {problem(answer)}")
            view = answer.json()
            state = view["state"]
            if state != announced:
                self.on_state(state, view.get("scanner"))
                announced = state
            if state == "confirmed" and "token" in view:
                self.minted = None
                return dict(view["token"])
            if state == "cancelled":
                raise self.cancelled()
            if state == "expired":
                self.minted = None
                return None
            if state == "delivered":
                raise LoginFailed("the result was already delivered to another connection")


def waiter(minted: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {minted['waiter_token']}"}


def problem(answer: httpx.Response) -> str:
    try:
        body = answer.json()
        return f"{answer.status_code} {body.get('code')}: {body.get('detail')}"
    except ValueError:
        return f"{answer.status_code} {answer.text[:200]}"


def show_result(tokens: dict[str, Any], terminal: Terminal, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(tokens), file=terminal.result, flush=True)
        return
    claims = claims_of(tokens["access_token"])
    terminal.say("已登录 / Logged in")
    for name in ("sub", "amr", "client_id", "sid", "aud", "iss"):
        terminal.say(f"  {name:10} {json.dumps(claims.get(name), ensure_ascii=False)}")
    expires = datetime.fromtimestamp(claims["exp"], UTC).isoformat(timespec="seconds")
    terminal.say(f"  {'exp':10} {expires}")


async def login(
    base_url: str,
    terminal: Terminal,
    *,
    device_name: str = "qrgate login",
    transport: str = "ws",
    refreshes: int = 10,
    as_json: bool = False,
) -> int:
    client = DesktopLogin(base_url, terminal, device_name=device_name, transport=transport, refreshes=refreshes)
    try:
        tokens = await client.run()
    except LoginFailed as exc:
        terminal.say(f"qrgate login: {exc}")
        return 1
    except httpx.HTTPError as exc:
        terminal.say(f"qrgate login: cannot reach {base_url}: {exc}")
        return 2
    show_result(tokens, terminal, as_json=as_json)
    return 0

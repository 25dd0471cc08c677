"""Image captchas: `POST /v1/captcha` (and `/units/v1/captcha`), and the single-use check the guard calls.

The answer is kept only as a salted HMAC in the state store, under the captcha's id, for
`captcha_ttl` seconds. Checking takes the record (atomic get-and-delete), so every captcha is
answered at most once, right or wrong. Answers are case-insensitive and drawn from an alphabet
without look-alikes (no 0/O, 1/I/L).

`captcha_test_answer` (refused in production) fixes the text so tests can answer without OCR; the
image and the hashing path stay the real ones.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from concurrent.futures import ThreadPoolExecutor

from captcha.image import ImageCaptcha
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import errors
from gateway.guard.throttle import Throttle
from gateway.inputs import address_key, client_ip
from gateway.jsonutil import dumps
from gateway.settings import Settings
from gateway.state import keys
from gateway.state.attempts import CaptchaCheck
from gateway.state.base import StateStore

ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
MAX_ANSWER = 16


class CaptchaRequired(errors.BadRequest):
    code = "captcha_required"


class CaptchaInvalid(errors.BadRequest):
    code = "captcha_invalid"


def _digest(salt: bytes, answer: str) -> str:
    return hmac.new(salt, answer.strip().upper().encode(), hashlib.sha256).hexdigest()


class Captchas:
    def __init__(self, settings: Settings, store: StateStore) -> None:
        self._settings = settings
        self._store = store
        self._images = ImageCaptcha(width=160, height=60)
        # One renderer thread: ImageCaptcha caches fonts lazily and drawing is CPU work.
        self._pool: ThreadPoolExecutor | None = None
        self.throttle = Throttle(
            store,
            keys.Throttles.CAPTCHA_IP,
            settings.captcha_ip_max,
            settings.captcha_ip_window,
            what="captcha requests",
        )

    def _text(self) -> str:
        if self._settings.captcha_test_answer:
            return self._settings.captcha_test_answer
        return "".join(secrets.choice(ALPHABET) for _ in range(self._settings.captcha_length))

    def _render(self, text: str) -> bytes:
        return self._images.generate(text, format="png").getvalue()

    async def issue(self) -> dict[str, object]:
        text = self._text()
        if self._pool is None:  # made on first use (again after `close`, should the app start a second time)
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="captcha")
        png = await asyncio.get_running_loop().run_in_executor(self._pool, self._render, text)
        captcha_id = secrets.token_urlsafe(16)
        salt = secrets.token_bytes(16)
        record = {"salt": salt.hex(), "digest": _digest(salt, text)}
        await self._store.put(keys.key(keys.Space.CAPTCHA, captcha_id), record, self._settings.captcha_ttl)
        return {
            "captcha_id": captcha_id,
            "image": "data:image/png;base64," + base64.b64encode(png).decode(),
            "expires_in": self._settings.captcha_ttl,
        }

    async def solved(self, captcha_id: str | None, answer: str | None) -> bool:
        """Consume the captcha (whatever the answer) and say whether it was answered right."""
        if not captcha_id or len(captcha_id) > 64:
            return False
        record = await self._store.take(keys.key(keys.Space.CAPTCHA, captcha_id))
        if record is None or not answer or len(answer) > MAX_ANSWER:
            return False
        return hmac.compare_digest(record["digest"], _digest(bytes.fromhex(record["salt"]), answer))

    async def check(self, captcha_id: str | None, answer: str | None) -> CaptchaCheck:
        """Consume a presented captcha (answered or not) and say what it proves."""
        if not captcha_id:
            return CaptchaCheck.NONE
        if not answer:
            if len(captcha_id) <= 64:
                await self._store.delete(keys.key(keys.Space.CAPTCHA, captcha_id))
            return CaptchaCheck.NONE
        return CaptchaCheck.SOLVED if await self.solved(captcha_id, answer) else CaptchaCheck.WRONG

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def route(captchas: Captchas, path: str = "/v1/captcha") -> Route:
    """`POST {path}`: a new captcha (no body needed; anything sent is ignored, bounded by the body limit)."""

    async def new_captcha(request: Request) -> Response:
        await captchas.throttle.hit(address_key(client_ip(request)))
        body = await captchas.issue()
        return Response(
            dumps(body), status_code=201, media_type="application/json", headers={"Cache-Control": "no-store"}
        )

    return Route(path, new_captcha, methods=["POST"])

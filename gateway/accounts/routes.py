"""Every HTTP route of the accounts capability except password login (app.py mounts that itself)."""

from __future__ import annotations

from starlette.routing import BaseRoute

from gateway.accounts import admin, rare_chars, recovery, registration, sms
from gateway.guard import captcha
from gateway.guard.captcha import Captchas


def routes(captchas: Captchas) -> list[BaseRoute]:
    return [
        captcha.route(captchas),
        *sms.routes(),
        *registration.routes(),
        *recovery.routes(),
        *admin.routes(),
        *rare_chars.routes(),
    ]

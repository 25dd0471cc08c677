"""Every HTTP route of the accounts capability except password login (app.py mounts that itself)."""

from __future__ import annotations

from starlette.routing import BaseRoute

from gateway.accounts import admin, captcha, rare_chars, recovery, registration, sms


def routes() -> list[BaseRoute]:
    return [
        *captcha.routes(),
        *sms.routes(),
        *registration.routes(),
        *recovery.routes(),
        *admin.routes(),
        *rare_chars.routes(),
    ]

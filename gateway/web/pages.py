"""The pages people see: the desktop login page (`/`), the phone simulator (`/demo/app`), the camera
landing page (`/q/{qr_id}`), the app-download QR code of the login pages (`/app-download.svg`),
registration (`/register`), the forgotten password (`/forgot-password`) and the change of a hall
temporary password (`/change-password`), and their static files (`/web/...`). The browser sign-in page
(`/signin`) is served by gateway/oidc/signin.py from the same templates, scripts and headers.

Plain HTML, CSS and ES modules, no build step. Every page carries a strict Content-Security-Policy:
scripts and styles only from this origin (no inline code), images from here or `data:` (captchas),
connections only back to this origin (HTTP and WebSocket), no framing, no form posts (the sign-in page
alone posts forms: to this origin, redirected to the relying party's). The scripts keep tokens in
memory only, and nothing secret ever goes into a URL.
"""

from __future__ import annotations

import base64
import html
import re
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import errors
from gateway.accounts.registration import AGREEMENT_VERSION
from gateway.qr import render as qr_render
from gateway.qr.symbol import encode
from gateway.settings import Settings

HERE = Path(__file__).parent
PAGES = HERE / "pages"
STATIC = HERE / "static"
_HOST = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")

BASE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def content_security_policy(host: str, secure: bool, form_action: str = "'none'") -> str:
    # 'self' covers ws:/wss: of this origin in CSP 3; the explicit origin serves older browsers.
    socket = f" {'wss' if secure else 'ws'}://{host}" if _HOST.fullmatch(host) else ""
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self'{socket}; base-uri 'none'; form-action {form_action}; frame-ancestors 'none'"
    )


def origin_source(url: str) -> str | None:
    """The origin of `url` as a CSP source expression (scheme://host[:port]), None when it is not a
    plain http(s) origin: nothing of a URL but a checked host may reach a policy."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    if parts.scheme not in ("http", "https") or not _HOST.fullmatch(netloc):
        return None
    return f"{parts.scheme}://{netloc}"


def page_headers(request: Request, cache_control: str = "no-cache", *, form_action: str = "'none'") -> dict[str, str]:
    """`form_action`: where the page's forms may post, and be redirected after posting (browsers apply
    form-action to the redirects of a form submission); no forms at all unless a page says so."""
    return {
        **BASE_HEADERS,
        "Content-Security-Policy": content_security_policy(
            request.url.netloc, request.url.scheme == "https", form_action
        ),
        "Cache-Control": cache_control,
    }


@cache
def template(name: str) -> str:
    return (PAGES / name).read_text(encoding="utf-8")


INCLUDE = re.compile(r"\{\{> ([a-z0-9/_.-]+\.html)\}\}")


def render(name: str, **values: str) -> str:
    """The template with its `{{> partials/...}}` included (the pieces pages share: the login panels,
    the declaration-password form) and `{{key}}` replaced by escaped values."""
    text = INCLUDE.sub(lambda found: template(found.group(1)), template(name))
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", html.escape(value, quote=True))
    return text


@cache
def help_link(url: str) -> tuple[str, str]:
    """The 【忘记申报密码】 link and a QR code of it (our own renderer, an SVG `data:` URI: the pages'
    CSP allows images from `data:`). Anything but an http(s) URL shows as no link at all."""
    if origin_source(url) is None:
        return "", ""
    picture = qr_render.svg(encode(url), size=4)
    return url, "data:image/svg+xml;base64," + base64.b64encode(picture).decode()


async def landing(request: Request) -> Response:
    # The same page for every qr_id: it says nothing about a QR code's state, only what to do next.
    return HTMLResponse(render("landing.html"), headers=page_headers(request, "public, max-age=3600"))


class StaticAssets:
    """StaticFiles with the pages' protective headers, revalidated on every use (ETag) so a new
    release is picked up at once."""

    def __init__(self) -> None:
        self._files: ASGIApp = StaticFiles(directory=STATIC)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                headers = list(message.get("headers", []))
                headers += [(k.lower().encode(), v.encode()) for k, v in BASE_HEADERS.items()]
                headers.append((b"cache-control", b"no-cache"))
                message = {**message, "headers": headers}
            await send(message)

        await self._files(scope, receive, send_with_headers)


def login_panel_values(settings: Settings) -> dict[str, str]:
    """What partials/login-panels.html needs besides the page's own values (the desktop page and the
    sign-in page both include it)."""
    return {"hotline": settings.hotline, "app_download": "true" if settings.app_download_target else "false"}


@cache
def app_download_svg(url: str) -> bytes:
    """The QR code of the app's download address, drawn by the QR codes' own renderer."""
    return qr_render.svg(encode(url), size=4)


def routes(settings: Settings, *, units_mounted: bool) -> list[BaseRoute]:
    async def desktop(request: Request) -> Response:
        units = "true" if units_mounted else "false"
        # Its forms never submit without the script (form-action 'none'); posting keeps a password out of URLs.
        help_url, help_qr = help_link(settings.declaration_password_help_url)
        body = render(
            "desktop.html",
            units=units,
            public_url=settings.issuer,
            login_action="/",
            declaration_action="/",
            login_hint="",
            **login_panel_values(settings),
            declaration_help_url=help_url,
            declaration_help_qr=help_qr,
        )
        return HTMLResponse(body, headers=page_headers(request))

    async def app_download(request: Request) -> Response:
        target = settings.app_download_target
        if not target:
            raise errors.NotFound("No app download address is set here (QRGATE_APP_DOWNLOAD_URL).", code="not_found")
        return Response(
            app_download_svg(target),
            media_type=qr_render.MEDIA_TYPES["svg"],
            headers={**BASE_HEADERS, "Cache-Control": "public, max-age=3600"},
        )

    async def phone(request: Request) -> Response:
        if not settings.demo_app or settings.production:
            raise errors.NotFound("The phone simulator is a demo tool and is off here.", code="not_found")
        return HTMLResponse(render("phone.html", public_url=settings.issuer), headers=page_headers(request))

    async def register(request: Request) -> Response:
        # The agreement's text is the page's; its version is the one registration requires.
        return HTMLResponse(render("register.html", agreement_version=AGREEMENT_VERSION), headers=page_headers(request))

    async def forgot_password(request: Request) -> Response:
        body = render("forgot-password.html", page="forgot", title_key="forgot_title", title="忘记密码")
        return HTMLResponse(body, headers=page_headers(request))

    async def change_password(request: Request) -> Response:
        # Reached from the login page after a hall temporary password (403 password_change_required);
        # the ticket travels in the tab's sessionStorage, never in the URL.
        body = render("forgot-password.html", page="change", title_key="change_title", title="修改临时密码")
        return HTMLResponse(body, headers=page_headers(request))

    return [
        Route("/", desktop, methods=["GET"]),
        Route("/register", register, methods=["GET"]),
        Route("/forgot-password", forgot_password, methods=["GET"]),
        Route("/change-password", change_password, methods=["GET"]),
        Route("/demo/app", phone, methods=["GET"]),
        Route("/q/{qr_id}", landing, methods=["GET"]),
        Route("/app-download.svg", app_download, methods=["GET"]),
        Mount("/web", app=StaticAssets(), name="web"),
    ]

"""Reading requests: JSON bodies into typed models, bearer tokens, the client's address.

Every way a request can be malformed ends here as a 4xx problem that names what is wrong.
"""

from __future__ import annotations

import ipaddress
from typing import TypeVar
from urllib.parse import parse_qsl

from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import Request

from gateway import errors
from gateway.jsonutil import JSONDecodeError, loads

Model = TypeVar("Model", bound=BaseModel)


class StrictModel(BaseModel):
    """Request bodies: no unknown fields, no type coercion (\"5\" is not 5)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _describe(exc: ValidationError) -> str:
    parts = []
    for item in exc.errors()[:5]:
        where = ".".join(str(p) for p in item["loc"]) or "body"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def parse_model(model: type[Model], data: object) -> Model:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise errors.BadRequest(f"Invalid request body: {_describe(exc)}.", code="invalid_request") from exc


async def read_json(request: Request, model: type[Model]) -> Model:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise errors.UnsupportedMediaType("Send the body as application/json.")
    body = await request.body()  # bounded by BodyLimitMiddleware
    try:
        data = loads(body)
    except JSONDecodeError as exc:
        raise errors.BadRequest("The body is not valid JSON.", code="malformed_json") from exc
    if not isinstance(data, dict):
        raise errors.BadRequest("The body must be a JSON object.", code="invalid_request")
    if b"\\u0000" in body:
        # NUL is valid JSON but no database stores it in text (PostgreSQL refuses it outright).
        raise errors.BadRequest("Strings must not contain the NUL character.", code="invalid_request")
    return parse_model(model, data)


async def read_form(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body (OAuth endpoints), each field at most once."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        raise errors.UnsupportedMediaType("Send the body as application/x-www-form-urlencoded.")
    try:
        text = (await request.body()).decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), max_num_fields=32)
    except (UnicodeDecodeError, ValueError) as exc:
        raise errors.BadRequest("The form body is malformed.", code="invalid_request", error="invalid_request") from exc
    form: dict[str, str] = {}
    for name, value in pairs:
        if "\x00" in name or "\x00" in value:
            raise errors.BadRequest(
                "Fields must not contain the NUL character.", code="invalid_request", error="invalid_request"
            )
        if name in form:
            raise errors.BadRequest(f"{name} is given twice.", code="invalid_request", error="invalid_request")
        form[name] = value
    return form


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() not in ("bearer", "dpop") or not token.strip():
        raise errors.Unauthorized("Send the access token as 'Authorization: Bearer <token>'.")
    return token.strip()


def client_ip(request: Request) -> str:
    """The client's address, canonical (gateway/middleware.py `ForwardedMiddleware` has taken it from
    X-Forwarded-For when the peer is a trusted proxy, and written every address in one spelling)."""
    return request.client.host if request.client else ""


def canonical_address(text: str) -> str | None:
    """One spelling per address: IPv6 compressed and lower case, an IPv4-mapped IPv6 address as the
    IPv4 address; None when `text` is not an IP address (a bracketed IPv6 literal is accepted)."""
    value = text.strip()
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def address_key(ip: str) -> str:
    """What per-address limits count under: an IPv4 address itself, an IPv6 address by its /64 (one
    subscriber's network: its addresses are free to the holder, so each must not get a budget of its
    own). Anything else (no address at all) is counted as it is."""
    if ":" not in ip:
        return ip  # IPv4 (canonical already) or empty
    canonical = canonical_address(ip)
    if canonical is None:
        return ip
    if ":" not in canonical:
        return canonical  # an IPv4-mapped address
    return str(ipaddress.IPv6Network(f"{canonical}/64", strict=False))

"""Wire shapes of the QR protocol v1 (they match protocols/schemas/*.json)."""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

from gateway.tokens.claims import TokenResponse


class Scanner(TypedDict):
    display_name: str


class MintResponse(TypedDict):
    qr_id: str
    qr_content: str
    expires_in: int
    waiter_token: str
    events_url: str
    image_url: str


class Requester(TypedDict):
    ip: str
    user_agent: str


class ScanResponse(TypedDict):
    qr_id: str
    client_id: str
    device_name: str
    requested_at: str
    requester: Requester
    proximity: Literal["same_network", "different_network", "unknown"]
    expires_in: int


class StateView(TypedDict):
    """Long-poll answer, and the body of the WebSocket `state` message."""

    state: str
    expires_in: int
    scanner: NotRequired[Scanner]
    token: NotRequired[TokenResponse]


class StateMessage(StateView):
    type: Literal["state"]


class ScannedMessage(TypedDict):
    type: Literal["scanned"]
    scanner: Scanner


class ConfirmedMessage(TypedDict):
    type: Literal["confirmed"]
    token: NotRequired[TokenResponse]  # absent for codes of the browser sign-in page (kept for the server)


class FinalMessage(TypedDict):
    type: Literal["cancelled", "expired"]

"""QR login use cases: mint, scan, confirm, cancel, abandon, deliver. Stores and transports are
adapters around this; the legality of every step is decided by `machine`, atomically in the store."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import NamedTuple

from gateway import errors, logs, metrics
from gateway.directory.persons import PersonDirectory
from gateway.draining import Draining
from gateway.guard.buckets import TokenBuckets
from gateway.guard.throttle import TooManyRequests, key_part
from gateway.inputs import address_key
from gateway.qr import machine
from gateway.qr.machine import QrEvent, QrRecord, QrState
from gateway.qr.messages import MintResponse, ScanResponse
from gateway.qr.watch import QrWatch
from gateway.rules import mask_name
from gateway.settings import Settings
from gateway.state import keys
from gateway.state.base import StateStore, StoreUnavailable
from gateway.tokens.bearer import Caller
from gateway.tokens.claims import TokenResponse
from gateway.tokens.sessions import SessionManager

log = logging.getLogger("qrgate")

QR_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{22}")
# The built-in client of the browser sign-in page (gateway/oidc/signin.py). Its codes are minted only by
# the server for a pending authorization, and their result is kept for the server (`take_signin`): the
# waiting page is told "confirmed", never given tokens, and no session of this client is ever started.
SIGNIN_CLIENT = "sso-signin"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _ipv4_network(ip: str) -> str | None:
    """The /24 of a dotted-quad IPv4 address ("10.1.2"), None if `ip` is not one (fast path:
    `ipaddress` costs more than the rest of a scan's bookkeeping)."""
    parts = ip.split(".")
    if len(parts) != 4:
        return None
    for part in parts:
        if not (part.isascii() and part.isdigit() and len(part) <= 3 and int(part) <= 255):
            return None
        if len(part) > 1 and part[0] == "0":
            return None
    return ip.rpartition(".")[0]


def proximity(requester_ip: str, scanner_ip: str) -> str:
    """Same /24 (IPv4) or /64 (IPv6): probably the same office network. Anything unparsable: unknown."""
    a4, b4 = _ipv4_network(requester_ip), _ipv4_network(scanner_ip)
    if a4 is not None and b4 is not None:
        return "same_network" if a4 == b4 else "different_network"
    return proximity_by_ipaddress(requester_ip, scanner_ip)


def proximity_by_ipaddress(requester_ip: str, scanner_ip: str) -> str:
    """The same reading through `ipaddress` (any IPv6, and everything the fast path declines)."""
    try:
        a, b = ipaddress.ip_address(requester_ip), ipaddress.ip_address(scanner_ip)
    except ValueError:
        return "unknown"
    if a.version != b.version:
        return "different_network"
    prefix = 24 if a.version == 4 else 64
    net = ipaddress.ip_network(f"{a}/{prefix}", strict=False)
    return "same_network" if b in net else "different_network"


LIVE_RETRY_AFTER = 10  # seconds: a refused mint's Retry-After (codes finish or expire meanwhile)


def _outcome(outcome: str, record: QrRecord, **fields: object) -> None:
    """The `qr_outcome` event (no code id: it is what a phone needs to scan)."""
    logs.event("qr_outcome", outcome=outcome, client_id=record.client_id, **fields)


def _live_group(address: str) -> str:
    """The store's name for an address's live codes (hashed: no address in the clear in a key)."""
    return key_part(address)


class Scannable(NamedTuple):
    """What a QR image shows, and until when it may be cached."""

    content: str
    expires_at: float


class Confirmer(NamedTuple):
    """Who confirmed a browser sign-in code."""

    person_id: str
    display_name: str  # masked, as the page showed it
    auth_time: int  # when the person authenticated on the phone (scanning is not authenticating again)


class QrService:
    """The QR login use cases: the desktop mints and waits, the phone scans and confirms. Owns the
    records' keys and TTLs, which clients may do what, and the waiting limits."""

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        sessions: SessionManager,
        directory: PersonDirectory,
        draining: Draining,
    ) -> None:
        self._settings = settings
        self._store = store
        self._sessions = sessions
        self._directory = directory
        self._draining = draining
        # In this process's memory, not the store: it is on every login's path (docs/operations.md).
        self._mint_buckets = TokenBuckets(
            settings.qr_mint_ip_max, settings.qr_mint_ip_window, what="QR codes from this address"
        )
        self._clients = settings.client_policies()
        self._base = settings.public_url.rstrip("/")
        self.hello_timeout = settings.hello_timeout  # seconds a WebSocket has to say hello
        self.long_poll_max_wait = settings.long_poll_max_wait  # seconds, the bound of `?wait=`

    # desktop ---------------------------------------------------------------------------------------
    async def mint(
        self, *, client_id: str, device_name: str, dpop_jkt: str | None, ip: str, user_agent: str
    ) -> MintResponse:
        policy = self._clients.get(client_id)
        if client_id == SIGNIN_CLIENT:  # even if configured: only the sign-in page mints these
            raise errors.Forbidden("Sign-in codes are minted by the sign-in page only.", code="client_not_allowed")
        if policy is None:
            raise errors.UnknownClient(f"Unknown client_id {client_id!r}.")
        if not policy.may_mint_qr:
            raise errors.Forbidden(f"Client {client_id!r} may not mint QR codes.", code="client_not_allowed")
        return await self._mint(client_id, device_name, dpop_jkt, ip, user_agent)

    async def mint_signin(self, *, device_name: str, ip: str, user_agent: str) -> MintResponse:
        """A code for the browser sign-in page, whose result the server takes (`take_signin`);
        `device_name` is the relying party's name, so the phone shows where the sign-in goes."""
        return await self._mint(SIGNIN_CLIENT, device_name[:128], None, ip, user_agent)

    async def _mint(
        self, client_id: str, device_name: str, dpop_jkt: str | None, ip: str, user_agent: str
    ) -> MintResponse:
        address = address_key(ip)
        self._mint_buckets.take(address)  # every code is kept qr_ttl + qr_purge_after seconds
        qr_id = secrets.token_urlsafe(16)
        waiter_token = secrets.token_urlsafe(32)
        now = time.time()
        ttl = self._settings.qr_ttl
        await self._reserve_live(address, qr_id, now + ttl, now)
        record = QrRecord(
            state=QrState.PENDING,
            expires_at=now + ttl,
            created_at=now,
            client_id=client_id,
            device_name=device_name,
            dpop_jkt=dpop_jkt or "",
            waiter_hash=_hash(waiter_token),
            ip=ip,
            user_agent=user_agent,
            scanner_sub="",
            scanner_name="",
        )
        await self._store.create_qr(qr_id, record.fields(), ttl + self._settings.qr_purge_after)
        metrics.labelled(metrics.QR_EVENTS, "mint").inc()
        ws_base = "ws" + self._base.removeprefix("http")
        return {
            "qr_id": qr_id,
            "qr_content": self.qr_content(qr_id),
            "expires_in": ttl,
            "waiter_token": waiter_token,
            "events_url": f"{ws_base}/v1/qr/{qr_id}/events",
            "image_url": f"{self._base}/v1/qr/{qr_id}.svg",
        }

    async def _reserve_live(self, address: str, qr_id: str, expires_at: float, now: float) -> None:
        """Count the code as live for its address and in the store (atomically in the store): at most
        `qr_live_ip_max` per address and `qr_live_max` in all, until it expires or is finished."""
        outcome = await self._store.reserve_live(
            _live_group(address),
            qr_id,
            expires_at,
            now,
            group_max=self._settings.qr_live_ip_max,
            total_max=self._settings.qr_live_max,
        )
        if outcome == "group_full":
            metrics.labelled(metrics.QR_EVENTS, "refused_address").inc()
            raise TooManyRequests(
                "Too many QR codes from this address are waiting to be scanned; use or close some, or try "
                f"again in {LIVE_RETRY_AFTER} seconds.",
                retry_after=LIVE_RETRY_AFTER,
                code="too_many_live_codes",
            )
        if outcome == "store_full":
            metrics.labelled(metrics.QR_EVENTS, "refused_capacity").inc()
            raise errors.ServiceUnavailable(
                "The gateway holds as many QR codes as it may; try again in a moment.",
                code="qr_capacity",
                retry_after=LIVE_RETRY_AFTER,
            )

    async def note_expired(self, qr_id: str, record: QrRecord) -> None:
        """A waiter saw the code expire: counted once per code (an atomic count in the store; the
        desktop's socket and its long-poll may both see it), and written as a `qr_outcome` event."""
        key = keys.key(keys.Space.QR_EXPIRED, qr_id)
        if await self._store.hit(key, self._settings.qr_purge_after + 60, approximate=True) == 1:
            metrics.labelled(metrics.QR_EVENTS, "expire").inc()
            _outcome("expired", record)

    async def _release_live(self, record: QrRecord, qr_id: str) -> None:
        """A finished code (delivered, cancelled, abandoned) is no longer live."""
        await self._store.release_live(_live_group(address_key(record.ip)), qr_id)

    def qr_content(self, qr_id: str) -> str:
        """What the QR symbol encodes: a URL, so that a phone's own camera app opens our page."""
        return f"{self._base}/q/{qr_id}"

    async def scannable(self, qr_id: str) -> Scannable:
        """The image's content, while the code may still be scanned (afterwards no one needs it)."""
        record = await self.get(qr_id)
        if record.state_at(time.time()) is not QrState.PENDING:
            raise errors.NotFound("This QR code can no longer be scanned.", code="qr_not_found")
        return Scannable(self.qr_content(qr_id), record.expires_at)

    async def record_for_waiter(self, qr_id: str, waiter_token: str) -> QrRecord:
        """The record, if `waiter_token` is the one minted with it (compared in constant time)."""
        record = await self.get(qr_id)
        if not hmac.compare_digest(record.waiter_hash, _hash(waiter_token)):
            raise errors.Unauthorized("The waiter token does not belong to this QR code.", code="invalid_waiter_token")
        return record

    async def get(self, qr_id: str) -> QrRecord:
        fields = await self._store.get_qr(qr_id) if QR_ID_PATTERN.fullmatch(qr_id) else None
        if fields is None:
            raise machine.refusal(None, machine.plan(QrEvent.SCAN), time.time())
        return QrRecord.parse(fields)

    @asynccontextmanager
    async def watch(self, qr_id: str, waiter_token: str, *, wait: float | None = None) -> AsyncIterator[QrWatch]:
        """The desktop's wait for its code to change (see `gateway/qr/watch.py`), for up to `wait`
        seconds (None: as long as the code lives). On shutdown it is woken, to answer or close."""
        deadline = None if wait is None else time.monotonic() + wait
        async with self._store.subscribe(qr_id) as waiter:
            self._draining.hold(waiter)
            try:
                yield QrWatch(
                    read=lambda: self.record_for_waiter(qr_id, waiter_token),
                    take_delivery=lambda: self.take_delivery(qr_id),
                    waiter=waiter,
                    closing=self._draining.closing,
                    deadline=deadline,
                    keeps=self.keeps_result,
                )
            finally:
                self._draining.release(waiter)

    async def abandon(self, qr_id: str, waiter_token: str) -> None:
        await self.record_for_waiter(qr_id, waiter_token)
        abandoned = await self._apply(qr_id, machine.plan(QrEvent.ABANDON))
        metrics.labelled(metrics.QR_EVENTS, "abandon").inc()
        _outcome("abandoned", abandoned)
        await self._release_live(abandoned, qr_id)

    async def take_delivery(self, qr_id: str) -> tuple[TokenResponse | None, QrRecord | None]:
        """confirmed -> delivered, once: (tokens, record) for the one caller that wins. The tokens are
        minted only here, so no token ever rests in the store. Anyone else gets (None, the record as
        it is, None if gone): a refused attempt is also a read, so a waiter woken by a change makes
        this one call rather than a read and then an attempt."""
        ok, fields = await self._store.transition_qr(qr_id, machine.plan(QrEvent.DELIVER), time.time())
        record = QrRecord.parse(fields) if fields is not None else None
        if not ok or record is None:
            return None, record
        metrics.labelled(metrics.QR_EVENTS, "deliver").inc()
        tokens, released = await asyncio.gather(  # one round trip: the store pipelines both
            self._start_session(record),
            self._release_live(record, qr_id),
            return_exceptions=True,
        )
        if isinstance(tokens, BaseException):
            raise tokens
        if isinstance(released, StoreUnavailable):  # the slot lapses with the code anyway
            log.warning("a delivered code's live slot was not released: %s", released.__class__.__name__)
        elif isinstance(released, BaseException):
            raise released
        return tokens, record

    async def _start_session(self, record: QrRecord) -> TokenResponse:
        return await self._sessions.start(
            subject=record.scanner_sub,
            client_id=record.client_id,
            amr=["qr", *record.confirmer_amr.split()],
            device_name=record.device_name,
            jkt=record.dpop_jkt or None,
            display_name=record.scanner_name,
            auth_time=record.confirmer_auth_time,
            parent=record.confirmer_sid or None,
        )

    @staticmethod
    def keeps_result(record: QrRecord) -> bool:
        """Whether the code's result is kept for the server (a browser sign-in code): its waiters are
        told it was confirmed, and `take_delivery` is never called for it."""
        return record.client_id == SIGNIN_CLIENT

    async def take_signin(self, qr_id: str, waiter_token: str) -> Confirmer:
        """The result of a browser sign-in code, taken once (confirmed -> delivered, atomically): who
        confirmed it. Starts no session and issues nothing: the caller signs the browser in."""
        record = await self.record_for_waiter(qr_id, waiter_token)
        if not self.keeps_result(record):
            raise errors.Forbidden("This is not a sign-in code.", code="client_not_allowed")
        taken = await self._apply(qr_id, machine.plan(QrEvent.DELIVER))  # of racing takers, one wins
        metrics.labelled(metrics.QR_EVENTS, "deliver").inc()
        await self._release_live(taken, qr_id)
        auth_time = taken.confirmer_auth_time if taken.confirmer_auth_time is not None else int(time.time())
        return Confirmer(taken.scanner_sub, taken.scanner_name, auth_time)

    # phone (the caller authenticated by its access token) -----------------------------------------
    async def scan(self, qr_id: str, phone: Caller, *, ip: str) -> ScanResponse:
        person_id = self._scanning_person(phone)
        display_name = await self._scanner_name(phone)
        now = time.time()
        updates = {"scanner_sub": person_id, "scanner_name": display_name, "scanned_at": repr(now)}
        record = await self._apply(qr_id, machine.plan(QrEvent.SCAN, updates=updates), now)
        metrics.labelled(metrics.QR_EVENTS, "scan").inc()
        return {
            "qr_id": qr_id,
            "client_id": record.client_id,
            "device_name": record.device_name,
            "requested_at": datetime.fromtimestamp(record.created_at, UTC).isoformat(),
            "requester": {"ip": record.ip, "user_agent": record.user_agent},
            "proximity": "unknown" if not record.ip else proximity(record.ip, ip),  # type: ignore[typeddict-item]
            "expires_in": record.expires_in(now),
        }

    def confirming_person(self, phone: Caller) -> str:
        """Who may confirm with this token (checked before a password proof is looked at)."""
        return self._scanning_person(phone)

    async def confirm(self, qr_id: str, phone: Caller, *, fresh_password_at: int | None = None) -> None:
        """`fresh_password_at`: when the person proved a fresh authentication for this confirm (the
        password entered again and checked by the caller); the desktop's session then has that
        `auth_time` and `amr` ["qr", "pwd"]. Without it, it keeps the phone session's `auth_time`."""
        person_id = self._scanning_person(phone)
        fresh = fresh_password_at is not None
        updates = {
            "confirmed_at": repr(time.time()),  # for the confirm-to-push latency metric
            "confirmer_sid": phone.claims["sid"],
            "confirmer_auth_time": str(fresh_password_at if fresh else phone.claims["auth_time"]),
            "confirmer_amr": "pwd" if fresh else "",
        }
        confirmed = await self._apply(qr_id, machine.plan(QrEvent.CONFIRM, actor=person_id, updates=updates))
        metrics.labelled(metrics.QR_EVENTS, "confirm").inc()
        _outcome("confirmed", confirmed, fresh_password=fresh)

    async def cancel(self, qr_id: str, phone: Caller) -> None:
        person_id = self._scanning_person(phone)
        cancelled = await self._apply(qr_id, machine.plan(QrEvent.CANCEL, actor=person_id))
        metrics.labelled(metrics.QR_EVENTS, "cancel").inc()
        _outcome("cancelled", cancelled)
        await self._release_live(cancelled, qr_id)

    def _scanning_person(self, phone: Caller) -> str:
        """The person's id, if the token's client is one that may scan (the mobile app)."""
        policy = self._clients.get(phone.claims["client_id"])
        if policy is None or not policy.may_scan_qr:
            raise errors.Forbidden("Only the mobile app may scan QR codes.", code="client_not_allowed")
        return phone.claims["sub"]

    async def _scanner_name(self, phone: Caller) -> str:
        """The scanner's masked name, shown on the desktop: kept in the session since it began (sessions
        from before that was so: read from the directory)."""
        kept = phone.session.get("display_name")
        if kept:
            return kept
        person = await self._directory.get(phone.claims["sub"])
        if person is None:
            raise errors.Unauthorized("The person of this token no longer exists.", code="invalid_token")
        return mask_name(person.name)

    async def _apply(self, qr_id: str, transition: machine.Transition, now: float | None = None) -> QrRecord:
        moment = time.time() if now is None else now
        if not QR_ID_PATTERN.fullmatch(qr_id):
            raise machine.refusal(None, transition, moment)
        ok, fields = await self._store.transition_qr(qr_id, transition, moment)
        record = QrRecord.parse(fields) if fields is not None else None
        if not ok or record is None:
            raise machine.refusal(record, transition, moment)
        return record

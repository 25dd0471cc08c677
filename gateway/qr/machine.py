"""The QR login lifecycle as a table, with no I/O.

Theory of operation. A QR session is a flat record of string fields (it maps one to one onto a Redis
hash). Every change is a `Transition`, a store-level `ConditionalUpdate`: "if the state is one of
these, these fields hold these values and the code has not expired, move to that state and set these
fields". A store applies it atomically (a Lua script in Redis, a plain function under the event loop
in memory), so of two racing scans exactly one finds the state still `pending`.

    pending ──scan──▶ scanned ──confirm──▶ confirmed ──deliver──▶ delivered
       │                 │
       ├──abandon────────┼──cancel/abandon──▶ cancelled
       └──(time)─────────┴──(time)──────────▶ expired

`expired` is never written: a pending or scanned record whose `expires_at` has passed *reads* as
expired (`QrRecord.state_at`), so expiry needs no timer in the store and no process must be alive for
it. A confirmed result stays deliverable until the record is purged.

When a store refuses a transition, `refusal` looks at the record as it is now and names the cause.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from gateway import errors
from gateway.state.updates import ConditionalUpdate, Fields


class QrState(StrEnum):
    PENDING = "pending"
    SCANNED = "scanned"
    CONFIRMED = "confirmed"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class QrEvent(StrEnum):
    SCAN = "scan"
    CONFIRM = "confirm"
    CANCEL = "cancel"  # by the phone that scanned
    ABANDON = "abandon"  # by the desktop that minted
    DELIVER = "deliver"


TERMINAL = frozenset({QrState.DELIVERED, QrState.CANCELLED, QrState.EXPIRED})
_STATE_OF = {state.value: state for state in QrState}  # a dict lookup: QrState(value) costs ten times more
OPEN = frozenset({QrState.PENDING, QrState.SCANNED})

# event -> (states it may start from, state it leads to, refused after expiry, only the scanner)
TABLE: dict[QrEvent, tuple[frozenset[QrState], QrState, bool, bool]] = {
    QrEvent.SCAN: (frozenset({QrState.PENDING}), QrState.SCANNED, True, False),
    QrEvent.CONFIRM: (frozenset({QrState.SCANNED}), QrState.CONFIRMED, True, True),
    QrEvent.CANCEL: (frozenset({QrState.SCANNED}), QrState.CANCELLED, True, True),
    QrEvent.ABANDON: (OPEN, QrState.CANCELLED, True, False),
    QrEvent.DELIVER: (frozenset({QrState.CONFIRMED}), QrState.DELIVERED, False, False),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Transition(ConditionalUpdate):
    """One step of the table as the store applies it (state values as plain strings); `event` names
    the step, so that `refusal` can tell why it did not apply."""

    event: QrEvent


def _unplanned(event: QrEvent) -> Transition:
    from_states, to_state, before_expiry, _ = TABLE[event]
    return Transition(
        event=event,
        from_states=frozenset(state.value for state in from_states),
        to_state=to_state.value,
        before_expiry=before_expiry,
    )


# Each event's transition with no actor and no updates, made once: deliver runs twice per login.
_PLAIN = {event: _unplanned(event) for event in QrEvent}


def plan(event: QrEvent, *, actor: str | None = None, updates: Mapping[str, str] | None = None) -> Transition:
    """The transition for `event` by `actor` (the scanning person's id, where the table needs one)."""
    plain = _PLAIN[event]
    only_scanner = TABLE[event][3]
    if only_scanner and actor is None:
        raise ValueError(f"{event} needs the acting person")
    if not only_scanner and not updates:
        return plain
    return Transition(
        event=event,
        from_states=plain.from_states,
        to_state=plain.to_state,
        before_expiry=plain.before_expiry,
        require={"scanner_sub": actor} if only_scanner and actor is not None else {},
        updates=dict(updates or {}),
    )


class QrRecord(NamedTuple):
    """A QR session as the store keeps it, parsed once (the store holds every field as a string).
    `fields` is the inverse: what minting writes. (A named tuple: it is parsed several times a login.)"""

    state: QrState  # as written; what it reads as now is `state_at`, since expiry is never written
    expires_at: float
    created_at: float
    client_id: str
    device_name: str
    dpop_jkt: str  # "" when the tokens are not bound to a key
    waiter_hash: str
    ip: str
    user_agent: str
    scanner_sub: str  # "" until scanned
    scanner_name: str  # masked; "" until scanned
    confirmed_at: float | None = None  # for the confirm-to-push latency metric
    # The phone session that confirmed, and when its person authenticated: the desktop's session is
    # made from it (it ends with it) and keeps that time, since scanning is not authenticating again.
    confirmer_sid: str = ""
    confirmer_auth_time: int | None = None
    # "pwd" when the person entered the password again to confirm (then `confirmer_auth_time` is the
    # confirm's moment): the desktop's session then counts as a fresh password login.
    confirmer_amr: str = ""

    @classmethod
    def parse(cls, fields: Fields) -> QrRecord:
        confirmed_at = fields.get("confirmed_at")
        auth_time = fields.get("confirmer_auth_time")
        return cls(
            state=_STATE_OF[fields["state"]],
            expires_at=float(fields["expires_at"]),
            created_at=float(fields["created_at"]),
            client_id=fields["client_id"],
            device_name=fields["device_name"],
            dpop_jkt=fields["dpop_jkt"],
            waiter_hash=fields["waiter_hash"],
            ip=fields["ip"],
            user_agent=fields["user_agent"],
            scanner_sub=fields["scanner_sub"],
            scanner_name=fields["scanner_name"],
            confirmed_at=float(confirmed_at) if confirmed_at else None,
            confirmer_sid=fields.get("confirmer_sid", ""),
            confirmer_auth_time=int(auth_time) if auth_time else None,
            confirmer_amr=fields.get("confirmer_amr", ""),
        )

    def fields(self) -> dict[str, str]:
        written = {
            "state": self.state.value,
            "client_id": self.client_id,
            "device_name": self.device_name,
            "dpop_jkt": self.dpop_jkt,
            "waiter_hash": self.waiter_hash,
            "created_at": repr(self.created_at),
            "expires_at": repr(self.expires_at),
            "ip": self.ip,
            "user_agent": self.user_agent,
            "scanner_sub": self.scanner_sub,
            "scanner_name": self.scanner_name,
        }
        if self.confirmed_at is not None:
            written["confirmed_at"] = repr(self.confirmed_at)
        return written

    def state_at(self, now: float) -> QrState:
        if self.state in OPEN and now >= self.expires_at:
            return QrState.EXPIRED
        return self.state

    def expires_in(self, now: float) -> int:
        """Whole seconds left, rounded up (0 once expired)."""
        return max(0, int(self.expires_at - now + 0.999))


def refusal(record: QrRecord | None, transition: Transition, now: float) -> errors.GatewayError:
    """Why `transition` did not apply to `record` (None: the record does not exist)."""
    if record is None:
        return errors.NotFound("This QR code does not exist or has been purged.", code="qr_not_found")
    state = record.state_at(now)
    event = transition.event
    if event is QrEvent.DELIVER and state is QrState.DELIVERED:
        return errors.Conflict("The login result was already delivered.", code="already_delivered")
    if state is QrState.EXPIRED and transition.before_expiry:
        return errors.Gone("This QR code has expired; the desktop shows a new one.", code="qr_expired")
    if event is QrEvent.SCAN and state in (QrState.SCANNED, QrState.CONFIRMED, QrState.DELIVERED):
        return errors.Conflict("This QR code has already been scanned.", code="qr_already_scanned")
    scanner = transition.require.get("scanner_sub")
    if scanner is not None and record.scanner_sub not in ("", scanner):
        return errors.Forbidden("Only the person who scanned this QR code may do this.", code="not_scanner")
    return errors.Conflict(f"Cannot {event.value} a QR code that is {state.value}.", code="qr_wrong_state")

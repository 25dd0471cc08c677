"""The pure QR state machine, and a Hypothesis stateful test that drives it through the memory store
with random operation sequences and checks the lifecycle's invariants after every step."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gateway import errors
from gateway.qr import machine
from gateway.qr.machine import QrEvent, QrState
from gateway.state.memory import MemoryStore

T0 = 1_000_000.0
TTL = 120.0


def record(state: QrState = QrState.PENDING, scanner: str = "") -> dict[str, str]:
    """The fields as a store holds them."""
    return machine.QrRecord(
        state=state,
        expires_at=T0 + TTL,
        created_at=T0,
        client_id="desktop",
        device_name="",
        dpop_jkt="",
        waiter_hash="",
        ip="",
        user_agent="",
        scanner_sub=scanner,
        scanner_name="",
    ).fields()


def state_at(fields: dict[str, str], now: float) -> QrState:
    return machine.QrRecord.parse(fields).state_at(now)


def test_every_event_has_one_row() -> None:
    assert set(machine.TABLE) == set(QrEvent)


@pytest.mark.parametrize(
    ("event", "start", "end"),
    [
        (QrEvent.SCAN, QrState.PENDING, QrState.SCANNED),
        (QrEvent.CONFIRM, QrState.SCANNED, QrState.CONFIRMED),
        (QrEvent.CANCEL, QrState.SCANNED, QrState.CANCELLED),
        (QrEvent.ABANDON, QrState.PENDING, QrState.CANCELLED),
        (QrEvent.ABANDON, QrState.SCANNED, QrState.CANCELLED),
        (QrEvent.DELIVER, QrState.CONFIRMED, QrState.DELIVERED),
    ],
)
def test_allowed_transitions(event: QrEvent, start: QrState, end: QrState) -> None:
    transition = machine.plan(event, actor="p1")
    current = record(start, scanner="p1")
    assert transition.applies_to(current, T0)
    assert transition.apply(current)["state"] == end.value


def test_expiry_is_read_not_written() -> None:
    current = record()
    assert state_at(current, T0 + TTL - 0.001) is QrState.PENDING
    assert state_at(current, T0 + TTL) is QrState.EXPIRED
    assert not machine.plan(QrEvent.SCAN).applies_to(current, T0 + TTL)
    confirmed = record(QrState.CONFIRMED, "p1")
    assert state_at(confirmed, T0 + TTL + 1) is QrState.CONFIRMED
    assert machine.plan(QrEvent.DELIVER).applies_to(confirmed, T0 + TTL + 1)


def test_record_is_parsed_from_the_store_fields_and_back() -> None:
    fields = {**record(QrState.CONFIRMED, "p1"), "confirmed_at": repr(T0 + 5)}
    parsed = machine.QrRecord.parse(fields)
    assert (parsed.state, parsed.expires_at, parsed.confirmed_at) == (QrState.CONFIRMED, T0 + TTL, T0 + 5)
    assert parsed.fields() == fields
    assert parsed.expires_in(T0 + TTL - 1.5) == 2  # whole seconds, rounded up


@pytest.mark.parametrize(
    ("current", "event", "actor", "now", "status", "code"),
    [
        (None, QrEvent.SCAN, None, T0, 404, "qr_not_found"),
        (record(), QrEvent.SCAN, None, T0 + TTL, 410, "qr_expired"),
        (record(QrState.SCANNED, "p1"), QrEvent.SCAN, None, T0, 409, "qr_already_scanned"),
        (record(QrState.DELIVERED, "p1"), QrEvent.SCAN, None, T0, 409, "qr_already_scanned"),
        (record(QrState.CANCELLED), QrEvent.SCAN, None, T0, 409, "qr_wrong_state"),
        (record(QrState.SCANNED, "p1"), QrEvent.CONFIRM, "p2", T0, 403, "not_scanner"),
        (record(QrState.SCANNED, "p1"), QrEvent.CANCEL, "p2", T0, 403, "not_scanner"),
        (record(QrState.PENDING), QrEvent.CONFIRM, "p1", T0, 409, "qr_wrong_state"),
        (record(QrState.CANCELLED, "p1"), QrEvent.CONFIRM, "p1", T0, 409, "qr_wrong_state"),
        (record(QrState.DELIVERED, "p1"), QrEvent.DELIVER, None, T0, 409, "already_delivered"),
    ],
)
def test_refusals_name_their_cause(
    current: dict[str, str] | None, event: QrEvent, actor: str | None, now: float, status: int, code: str
) -> None:
    transition = machine.plan(event, actor=actor) if event in (QrEvent.CONFIRM, QrEvent.CANCEL) else machine.plan(event)
    error = machine.refusal(machine.QrRecord.parse(current) if current else None, transition, now)
    assert isinstance(error, errors.GatewayError)
    assert (error.status, error.code) == (status, code)


def test_scanner_actions_need_an_actor() -> None:
    with pytest.raises(ValueError, match="acting person"):
        machine.plan(QrEvent.CONFIRM)


PEOPLE = st.sampled_from(["alice", "bob"])


class QrLifecycle(RuleBasedStateMachine):
    """Random scans, confirms, cancels, abandons, deliveries and clock jumps on one QR session."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.store = MemoryStore()
        self.now = T0
        self.loop.run_until_complete(self.store.create_qr("q", record(), 600))
        self.history: list[str] = ["pending"]
        self.scanner: str | None = None
        self.deliveries = 0

    def teardown(self) -> None:
        self.loop.close()

    def attempt(self, transition: machine.Transition) -> bool:
        ok, after = self.loop.run_until_complete(self.store.transition_qr("q", transition, self.now))
        assert after is not None
        if ok:
            self.history.append(after["state"])
        else:
            # Refused transitions change nothing and always come with a reason.
            assert after["state"] == self.history[-1]
            assert isinstance(machine.refusal(machine.QrRecord.parse(after), transition, self.now), errors.GatewayError)
        return ok

    @rule(person=PEOPLE)
    def scan(self, person: str) -> None:
        if self.attempt(machine.plan(QrEvent.SCAN, updates={"scanner_sub": person})):
            assert self.scanner is None
            self.scanner = person

    @rule(person=PEOPLE)
    def confirm(self, person: str) -> None:
        if self.attempt(machine.plan(QrEvent.CONFIRM, actor=person)):
            assert person == self.scanner

    @rule(person=PEOPLE)
    def cancel(self, person: str) -> None:
        if self.attempt(machine.plan(QrEvent.CANCEL, actor=person)):
            assert person == self.scanner

    @rule()
    def abandon(self) -> None:
        self.attempt(machine.plan(QrEvent.ABANDON))

    @rule()
    def deliver(self) -> None:
        if self.attempt(machine.plan(QrEvent.DELIVER)):
            self.deliveries += 1

    @precondition(lambda self: self.now < T0 + 2 * TTL)
    @rule(seconds=st.floats(min_value=0, max_value=100))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    @invariant()
    def delivered_at_most_once(self) -> None:
        assert self.deliveries <= 1
        assert self.history.count("delivered") == self.deliveries

    @invariant()
    def follows_the_table(self) -> None:
        order = ["pending", "scanned", "confirmed", "delivered"]
        for before, after in zip(self.history, self.history[1:], strict=False):
            assert after == "cancelled" or order.index(after) == order.index(before) + 1
            assert before not in ("cancelled", "delivered")

    @invariant()
    def confirmed_only_after_a_scan(self) -> None:
        if "confirmed" in self.history:
            assert self.history.index("scanned") < self.history.index("confirmed")

    @invariant()
    def expired_codes_do_not_move(self) -> None:
        current = self.loop.run_until_complete(self.store.get_qr("q"))
        assert current is not None
        if state_at(current, self.now) is QrState.EXPIRED:
            for event in (QrEvent.SCAN, QrEvent.ABANDON):
                assert not machine.plan(event).applies_to(current, self.now)


QrLifecycle.TestCase.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)
test_qr_lifecycle = QrLifecycle.TestCase

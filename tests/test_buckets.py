"""The in-memory token buckets behind the QR mint limit."""

from __future__ import annotations

import time

import pytest

from gateway.guard.buckets import TokenBuckets
from gateway.guard.throttle import TooManyRequests


def test_a_burst_then_a_refill_at_the_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    limit = TokenBuckets(3, 60, what="codes")  # 3 at once, then one every 20 s
    for _ in range(3):
        limit.take("hall")
    with pytest.raises(TooManyRequests) as refused:
        limit.take("hall")
    assert refused.value.extra["retry_after"] == 20
    limit.take("elsewhere")  # another address has its own bucket
    clock[0] += 19.0
    with pytest.raises(TooManyRequests):
        limit.take("hall")
    clock[0] += 1.0
    limit.take("hall")  # 20 s after the refusal's moment: one token back


def test_only_the_quietest_addresses_are_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    limit = TokenBuckets(2, 60, what="codes", max_keys=4)
    limit.take("busy")
    limit.take("busy")
    for n in range(4):
        limit.take(f"quiet-{n}")  # the fifth address makes it forget the fullest half
    with pytest.raises(TooManyRequests):
        limit.take("busy")  # still remembered: its bucket is empty

"""Token buckets in this process's memory: a rate limit for the hot path (minting a QR code), where a
store round trip per request would cost more than the rest of the check.

Each key (an address) holds up to `burst` tokens, refilled at `burst / window` per second; a request
takes one or is refused with the seconds until the next. The limit is per process: behind a load
balancer with N processes an address gets up to N times as much, which is why it is set generously
and documented so. At most `max_keys` addresses are remembered; past that the fullest buckets (the
quiet addresses) are forgotten first, which only ever gives an address more, never less.
"""

from __future__ import annotations

import math
import time

from gateway.guard.throttle import TooManyRequests


class TokenBuckets:
    def __init__(self, burst: int, window: float, *, what: str, max_keys: int = 100_000) -> None:
        self._burst = float(burst)
        self._rate = burst / window  # tokens per second
        self._what = what
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when they were counted)

    def take(self, key: str) -> None:
        """Take one token for `key`, or raise TooManyRequests (429 with Retry-After)."""
        now = time.monotonic()
        tokens, then = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - then) * self._rate)
        if tokens < 1.0:
            retry_after = max(1, math.ceil((1.0 - tokens) / self._rate))
            self._buckets[key] = (tokens, now)
            raise TooManyRequests(
                f"Too many {self._what}. Try again in {retry_after} seconds.", retry_after=retry_after
            )
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > self._max_keys:
            self._forget_quiet(now)

    def _forget_quiet(self, now: float) -> None:
        """Drop the half of the keys whose buckets are fullest now (they are the least limited)."""
        level = sorted(
            (min(self._burst, tokens + (now - then) * self._rate), key) for key, (tokens, then) in self._buckets.items()
        )
        for _, key in level[len(level) // 2 :]:
            del self._buckets[key]

"""Fixed-window throttles in the state store: "at most N per window per key" (per IP, per phone...).

The window is part of the key, so the answer can say exactly when the window ends (Retry-After),
and counting is one atomic `hit` whatever the number of gateway processes.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from gateway import errors
from gateway.state import keys
from gateway.state.base import StateStore
from gateway.state.keys import Throttles


class TooManyRequests(errors.TooManyRequests):
    def __init__(self, detail: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(detail, code=code, headers={"Retry-After": str(retry_after)}, retry_after=retry_after)


def key_part(value: str) -> str:
    """Store keys never hold personal data (phones, ID numbers) in the clear."""
    return hashlib.sha256(value.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Throttle:
    store: StateStore
    scope: Throttles
    limit: int
    window: int
    what: str = "requests"
    code: str = "too_many_requests"
    # A count one too high after a lost reply is acceptable (a generous limit): the hit is then sent
    # again like a read, so a request on the hot path rides out a Redis hiccup instead of failing.
    approximate: bool = False

    def _key(self, key: str, bucket: int) -> str:
        return keys.key(keys.Space.THROTTLE, self.scope.value, key_part(key), str(bucket))

    async def hit(self, key: str) -> None:
        """Count one; raise TooManyRequests once the window's limit is passed."""
        now = time.time()
        bucket = int(now // self.window)
        count = await self.store.hit(self._key(key, bucket), self.window + 1, approximate=self.approximate)
        if count > self.limit:
            retry_after = max(1, int((bucket + 1) * self.window - now + 0.999))
            raise TooManyRequests(
                f"Too many {self.what}. Try again in {retry_after} seconds.", retry_after=retry_after, code=self.code
            )

    async def forget(self, key: str) -> None:
        """Drop the current window's count (for a one-per-window limit whose one did not happen)."""
        await self.store.delete(self._key(key, int(time.time() // self.window)))

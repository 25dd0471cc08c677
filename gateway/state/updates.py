"""The one kind of conditional write the store applies atomically to a record of string fields.

It knows nothing of what the states mean: a domain (the QR lifecycle, `gateway/qr/machine.py`) builds
its steps into this shape, and each store applies it in one atomic step (a Lua script in Redis, a plain
function under the event loop in memory), so of two racing writers exactly one finds the record as
it expected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

Fields = Mapping[str, str]


@dataclass(frozen=True, slots=True)
class ConditionalUpdate:
    """If the field `state` is one of `from_states`, every field of `require` holds its value and
    (with `before_expiry`) `now` is before the float in `expires_at`: set `updates`, set `state` to
    `to_state`, and wake the record's channel."""

    from_states: frozenset[str]
    to_state: str
    before_expiry: bool
    require: Mapping[str, str] = field(default_factory=dict)
    updates: Mapping[str, str] = field(default_factory=dict)

    def applies_to(self, record: Fields, now: float) -> bool:
        if record.get("state") not in self.from_states:
            return False
        if self.before_expiry and now >= float(record["expires_at"]):
            return False
        return all(record.get(name) == value for name, value in self.require.items())

    def apply(self, record: Fields) -> dict[str, str]:
        return {**record, **self.updates, "state": self.to_state}

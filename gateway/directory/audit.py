"""The audit log: lock, unlock, reset and grant events, in SQL (durable, queryable, never in Redis)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.directory.persons import DatabaseUnavailable
from gateway.directory.tables import audit_events


@dataclass(frozen=True, slots=True)
class AuditEvent:
    at: datetime
    kind: str
    subject: str
    actor: str | None
    detail: str


class AuditLog:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def record(self, kind: str, subject: str, *, actor: str | None = None, detail: str = "") -> None:
        row = {"at": datetime.now(UTC), "kind": kind, "subject": subject, "actor": actor, "detail": detail[:400]}
        try:
            async with self._engine.begin() as conn:
                await conn.execute(audit_events.insert().values(**row))
        except (OperationalError, OSError) as exc:
            raise DatabaseUnavailable("The directory database is unavailable.") from exc

    async def events(self, subject: str, *, limit: int = 100) -> list[AuditEvent]:
        query = (
            sa.select(audit_events)
            .where(audit_events.c.subject == subject)
            .order_by(audit_events.c.id.desc())
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [AuditEvent(r.at, r.kind, r.subject, r.actor, r.detail) for r in rows]

"""The sessions each relying party holds, indexed so that removing the party ends them all
(`qrgate admin client remove`).

A relying party's session is indexed when its code is exchanged, in a set per party and per day
(`OIDC_CLIENT_SESSIONS:<client_id>:<day>`) that expires a day after the longest a session can live:
no set grows without bound, however busy the party, and ending them reads only the sets of the days a
session could still be alive from. Ending goes through `SessionManager.end`, so a party's sessions end
exactly as a logout would end them (the person's list, the lineage); the refresh tokens die with them.
"""

from __future__ import annotations

import time

from gateway.settings import Settings
from gateway.state import keys
from gateway.state.base import StateStore
from gateway.tokens.sessions import SessionManager

DAY = 86400


class ClientSessions:
    def __init__(self, settings: Settings, store: StateStore, sessions: SessionManager) -> None:
        self._store = store
        self._sessions = sessions
        self._lifetime = settings.refresh_token_ttl  # no session outlives it

    def _key(self, client_id: str, day: int) -> str:
        return keys.key(keys.Space.OIDC_CLIENT_SESSIONS, client_id, str(day))

    async def add(self, client_id: str, sid: str) -> None:
        day = int(time.time() // DAY)
        await self._store.add_member(self._key(client_id, day), sid, self._lifetime + DAY)

    async def end_all(self, client_id: str) -> int:
        """End every live session of the party; how many there were."""
        today = int(time.time() // DAY)
        ended = 0
        for day in range(today - self._lifetime // DAY - 1, today + 1):
            key = self._key(client_id, day)
            for sid in sorted(await self._store.members(key)):
                session = await self._sessions.alive(sid)
                if session is not None and session["client_id"] == client_id:
                    ended += await self._sessions.end(sid)
                await self._store.remove_member(key, sid)
        return ended

"""The public keys of relying parties that authenticate with `private_key_jwt`: registered inline
(`qrgate admin client add --jwks-file`), or fetched from the party's `jwks_uri`.

A fetch is one GET with tight limits (`FETCH_TIMEOUT` for the whole exchange, at most `MAX_JWKS_BYTES`,
no redirects), and its keys are kept for `KEEP_FOR` seconds. A `kid` the kept set does not have
(the party rotated its key) fetches again at once, but at most every `REFETCH_AFTER` seconds per URI,
so assertions naming unknown kids cannot make the gateway hammer the party. When a fetch fails, the
keys kept last serve on; with none, the client cannot authenticate (`invalid_client`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx
from joserfc.jwk import Key, KeySet

from gateway import logs
from gateway.jsonutil import loads
from gateway.oidc.clients import RelyingParty
from gateway.tokens.assertions import check_key_set, refuse

FETCH_TIMEOUT = 3.0  # s for connecting, sending and reading the answer
MAX_JWKS_BYTES = 65536
KEEP_FOR = 300.0  # s a fetched JWKS is used without asking again
REFETCH_AFTER = 30.0  # s between fetches of one URI, whatever kids assertions name
MAX_KEPT = 1000  # key sets kept (one per relying party)


@dataclass(slots=True)
class _Fetched:
    keys: KeySet | None
    fetched_at: float  # monotonic


class ClientKeys:
    def __init__(self, *, timeout: float = FETCH_TIMEOUT) -> None:
        self._timeout = timeout
        self._inline: dict[str, KeySet] = {}  # JSON text -> parsed
        self._fetched: dict[str, _Fetched] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._http: httpx.AsyncClient | None = None

    async def key_set(self, party: RelyingParty, kid: str | None) -> KeySet:
        """The party's keys: its inline ones and those at its URI, fetched again when `kid` is not
        among them (and the last fetch is old enough)."""
        keys = list(self._parse_inline(party.jwks).keys) if party.jwks else []
        if party.jwks_uri is not None and (kid is None or all(key.kid != kid for key in keys)):
            keys += await self._from_uri(party.jwks_uri, kid)
        return KeySet(keys)

    def _parse_inline(self, text: str) -> KeySet:
        parsed = self._inline.get(text)
        if parsed is None:
            try:
                parsed = check_key_set(loads(text))
            except ValueError as exc:
                raise refuse("This client's registered JWKS is not usable.") from exc
            if len(self._inline) >= MAX_KEPT:
                self._inline.clear()
            self._inline[text] = parsed
        return parsed

    async def _from_uri(self, uri: str, kid: str | None) -> list[Key]:
        kept = self._fetched.get(uri)
        if kept is None or self._stale(kept, kid):
            async with self._locks.setdefault(uri, asyncio.Lock()):  # one fetch for concurrent requests
                kept = self._fetched.get(uri)
                if kept is None or self._stale(kept, kid):
                    kept = await self._fetch(uri, kept)
        if kept.keys is None:
            raise refuse("This client's JWKS could not be fetched from its jwks_uri.")
        return list(kept.keys.keys)

    @staticmethod
    def _stale(kept: _Fetched, kid: str | None) -> bool:
        age = time.monotonic() - kept.fetched_at
        if age >= KEEP_FOR:
            return True
        unknown = kept.keys is None or (kid is not None and all(key.kid != kid for key in kept.keys.keys))
        return unknown and age >= REFETCH_AFTER  # a failed fetch, or a kid it lacks: ask again, not too often

    async def _fetch(self, uri: str, kept: _Fetched | None) -> _Fetched:
        keys: KeySet | None
        try:
            keys = check_key_set(loads(await self._get(uri)))
        except (httpx.HTTPError, TimeoutError, ValueError) as exc:
            logs.events.warning("jwks_uri_fetch_failed", extra={"event": "jwks_uri_fetch_failed", "uri": uri,
                                                                 "error": str(exc)[:200]})  # fmt: skip
            keys = kept.keys if kept is not None else None  # the last good keys serve on
        if len(self._fetched) >= MAX_KEPT:
            self._fetched.clear()
        fetched = self._fetched[uri] = _Fetched(keys, time.monotonic())
        return fetched

    async def _get(self, uri: str) -> bytes:
        if self._http is None:  # made in the running loop, on first use
            self._http = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False)
        async with asyncio.timeout(self._timeout):  # the whole exchange, however slowly it trickles
            accept = {"Accept": "application/jwk-set+json, application/json"}
            async with self._http.stream("GET", uri, headers=accept) as answer:
                if answer.status_code != 200:
                    raise ValueError(f"the JWKS URI answered {answer.status_code}")
                body = b""
                async for chunk in answer.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        raise ValueError(f"the JWKS is larger than {MAX_JWKS_BYTES} bytes")
        return body

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

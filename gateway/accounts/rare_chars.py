"""Rare name characters (生僻字) by radical and stroke count, for people whose keyboard cannot type them.

`GET /v1/rare-chars/radicals` lists the 214 Kangxi radicals; `GET /v1/rare-chars?radical=R&strokes=S`
lists the ideographs filed under radical R with S residual strokes (the strokes beyond the radical:
Unicode's Unihan `kRSUnicode`, every block from the URO to Extension G), and
`...&count=total` those with S strokes in all (`kTotalStrokes`), for people who count the whole
character: 𠮷 is 口 + 3, or 6 strokes in all. The index is built once by scripts/build_rare_chars.py into
data/rare_chars.json.gz (runs of consecutive code points) and loaded on first use.
"""

from __future__ import annotations

import gzip
import threading
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway import errors
from gateway.jsonutil import dumps, loads

INDEX = Path(__file__).with_name("data") / "rare_chars.json.gz"
MAX_STROKES = 80  # the most residual strokes in Unihan 14 is 76
MAX_TOTAL_STROKES = 100  # the most total strokes in Unihan 14 is 84
COUNTS = ("residual", "total")
CACHE = {"Cache-Control": "public, max-age=86400"}


class RareChars:
    def __init__(self, path: Path = INDEX) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._index: dict[str, Any] | None = None
        self._radicals_body: bytes | None = None

    def _loaded(self) -> dict[str, Any]:
        if self._index is None:
            with self._lock:
                if self._index is None:
                    self._index = loads(gzip.decompress(self._path.read_bytes()))
        return self._index

    def radicals_body(self) -> bytes:
        if self._radicals_body is None:
            index = self._loaded()
            radicals = [
                {"number": number, "radical": radical, "character": character, "strokes": strokes}
                for number, radical, character, strokes in index["radicals"]
            ]
            self._radicals_body = dumps({"unicode_version": index["unicode"], "radicals": radicals})
        return self._radicals_body

    def characters(self, radical: int, strokes: int, count: str = "residual") -> list[str]:
        """The ideographs under `radical` with `strokes` residual strokes (`count` "residual") or
        strokes in all (`count` "total")."""
        table = "total" if count == "total" else "chars"
        runs: list[int] = self._loaded()[table].get(f"{radical}.{strokes}", [])
        return [
            chr(cp) for start, count in zip(runs[::2], runs[1::2], strict=True) for cp in range(start, start + count)
        ]


def _int_param(request: Request, name: str, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
        raise errors.BadRequest(f"{name} must be a whole number from {low} to {high}.", code="invalid_request")
    return int(raw)


def routes(rare: RareChars) -> list[BaseRoute]:
    async def radicals(request: Request) -> Response:
        return Response(rare.radicals_body(), media_type="application/json", headers=CACHE)

    async def characters(request: Request) -> Response:
        count = request.query_params.get("count", "residual")
        if count not in COUNTS:
            raise errors.BadRequest("count must be residual or total.", code="invalid_request")
        radical = _int_param(request, "radical", 1, 214)
        if count == "total":
            strokes = _int_param(request, "strokes", 1, MAX_TOTAL_STROKES)
        else:
            strokes = _int_param(request, "strokes", 0, MAX_STROKES)
        characters = rare.characters(radical, strokes, count)
        body = {"radical": radical, "strokes": strokes, "count": count, "characters": characters}
        return Response(dumps(body), media_type="application/json", headers=CACHE)

    return [
        Route("/v1/rare-chars/radicals", radicals, methods=["GET"]),
        Route("/v1/rare-chars", characters, methods=["GET"]),
    ]

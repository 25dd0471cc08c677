"""QR images. The picture depends only on the content, so any process can render any QR. Each symbol
is encoded once (`symbol.encode`, all eight masks evaluated) and each image (kind, size) rendered
once, then kept until its QR code expires (bounded, least recently used first out).

SVG: one path of horizontal runs (adjacent dark modules of a row merged into one rectangle) over a
white square, in module units, so it scales without blurring; `size` only sets its width and height.
PNG: 1-bit greyscale, `size` pixels per module, rows built from the row's digits by `str.translate`.
Both keep the quiet zone of four modules the standard asks for.
"""

from __future__ import annotations

import re
import struct
import time
import zlib
from collections import OrderedDict
from typing import TypeVar

from gateway.qr.symbol import QrSymbol, encode

MEDIA_TYPES = {"svg": "image/svg+xml", "png": "image/png"}
BORDER = 4
DEFAULT_SIZE = 6
SIZES = range(2, 17)  # pixels per module offered by `?size=`
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
K = TypeVar("K")
V = TypeVar("V")


class _Runs(dict[str, str]):
    """Path fragment of "gap then run" (e.g. "00111"): move right over the gap, draw the run's
    rectangle from its top-left corner, and stop at its top-right corner, where the next gap starts.
    The subpath stays open (fill closes it), so a fragment depends on nothing but its text. Bounded:
    gaps and runs are at most 177 modules, so there are at most 177 x 177 fragments."""

    def __missing__(self, key: str) -> str:
        gap = key.index("1")
        fragment = self[key] = f"m{gap} 0v1h{len(key) - gap}v-1"
        return fragment


_GAP_RUNS = re.compile(r"0*1+")
_FRAGMENTS = _Runs()


def svg(symbol: QrSymbol, size: int = DEFAULT_SIZE, border: int = BORDER) -> bytes:
    side = symbol.size + 2 * border
    fragment = _FRAGMENTS.__getitem__
    runs = _GAP_RUNS.findall
    body = "".join(
        f"M{border} {y}" + "".join(map(fragment, runs(row))) for y, row in enumerate(symbol.rows, start=border)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{side * size}" height="{side * size}" '
        f'viewBox="0 0 {side} {side}" shape-rendering="crispEdges">'
        f'<path fill="#fff" d="M0 0h{side}v{side}H0z"/><path fill="#000" d="{body}"/></svg>'
    ).encode()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(symbol: QrSymbol, size: int = DEFAULT_SIZE, border: int = BORDER) -> bytes:
    side = (symbol.size + 2 * border) * size
    # In 1-bit greyscale 0 is black: a dark module ("1") becomes `size` zero bits.
    widen = str.maketrans({"1": "0" * size, "0": "1" * size})
    quiet = "1" * (border * size)
    padding = "1" * (-side % 8)
    row_bytes = (side + 7) // 8
    blank = b"\x00" + b"\xff" * row_bytes  # a white pixel row
    lines: dict[str, bytes] = {}
    raw = [blank * (border * size)]
    for row in symbol.rows:
        line = lines.get(row)
        if line is None:
            bits = quiet + row.translate(widen) + quiet + padding
            line = lines[row] = (b"\x00" + int(bits, 2).to_bytes(row_bytes, "big")) * size
        raw.append(line)
    raw.append(blank * (border * size))
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"".join(
        (
            _PNG_SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(b"".join(raw), 6)),
            _chunk(b"IEND", b""),
        )
    )


RENDERERS = {"svg": svg, "png": png}


class QrImages:
    """Symbols and images by content, each kept until `keep_until` (the QR code's expiry)."""

    def __init__(self, *, capacity: int = 4096) -> None:
        self._symbols: OrderedDict[str, tuple[float, QrSymbol]] = OrderedDict()
        self._images: OrderedDict[tuple[str, str, int], tuple[float, bytes]] = OrderedDict()
        self._capacity = capacity

    def symbol(self, content: str, keep_until: float | None = None) -> QrSymbol:
        found = self._get(self._symbols, content)
        if found is None:
            found = encode(content)
            self._put(self._symbols, content, found, keep_until)
        return found

    def render(self, content: str, kind: str, size: int = DEFAULT_SIZE, keep_until: float | None = None) -> bytes:
        if kind not in RENDERERS:
            raise ValueError(f"unknown image kind {kind!r}")
        if size not in SIZES:
            raise ValueError(f"size must be in {SIZES.start}..{SIZES.stop - 1}")
        key = (content, kind, size)
        image = self._get(self._images, key)
        if image is None:
            image = RENDERERS[kind](self.symbol(content, keep_until), size)
            self._put(self._images, key, image, keep_until)
        return image

    @staticmethod
    def _get(cache: OrderedDict[K, tuple[float, V]], key: K) -> V | None:
        entry = cache.get(key)
        if entry is None:
            return None
        if entry[0] < time.time():
            del cache[key]
            return None
        cache.move_to_end(key)
        return entry[1]

    def _put(self, cache: OrderedDict[K, tuple[float, V]], key: K, value: V, keep_until: float | None) -> None:
        now = time.time()
        cache[key] = (keep_until if keep_until is not None else now + 600, value)
        while cache and (len(cache) > self._capacity or next(iter(cache.values()))[0] < now):
            cache.popitem(last=False)

"""QR images. The picture depends only on the content, so any process can render any QR; each is
rendered once and kept (bounded LRU) for its short life."""

from __future__ import annotations

import io
from collections import OrderedDict

import segno

MEDIA_TYPES = {"svg": "image/svg+xml", "png": "image/png"}


class QrImages:
    def __init__(self, *, capacity: int = 4096, scale: int = 6, border: int = 4) -> None:
        self._cache: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._capacity = capacity
        self._scale = scale
        self._border = border

    def render(self, content: str, kind: str) -> bytes:
        key = (content, kind)
        image = self._cache.get(key)
        if image is not None:
            self._cache.move_to_end(key)
            return image
        buffer = io.BytesIO()
        code = segno.make_qr(content, error="m")
        if kind == "svg":
            code.save(buffer, kind="svg", scale=self._scale, border=self._border, xmldecl=False, svgns=True)
        else:
            code.save(buffer, kind="png", scale=self._scale, border=self._border)
        image = buffer.getvalue()
        self._cache[key] = image
        if len(self._cache) > self._capacity:
            self._cache.popitem(last=False)
        return image

"""Reading QR codes back with a real decoder (zxing-cpp), and rasterising our SVGs (CairoSVG) for it.

Without them (or any test-only package asked for through `require`) the tests that need them skip,
except under CI=true, where they fail."""

from __future__ import annotations

import io
import os
from typing import Any

import pytest
from PIL import Image


def require(module: str, package: str) -> Any:
    """Import `module` for a test; skip without it, but fail under CI=true (where it must be installed)."""
    try:
        return __import__(module)
    except (ImportError, OSError) as exc:  # CairoSVG raises OSError when libcairo is missing
        reason = f"{package} is not usable here ({exc})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}, and CI=true requires the QR decoding tests to run")
        pytest.skip(reason, allow_module_level=True)


def decode(picture: Image.Image) -> list[str]:
    """Every QR code a real decoder finds in the picture, as text."""
    zxingcpp = require("zxingcpp", "zxing-cpp")
    found = zxingcpp.read_barcodes(picture.convert("L"), formats=zxingcpp.BarcodeFormat.QRCode)
    return [str(code.text) for code in found]


def decode_png(data: bytes) -> list[str]:
    return decode(Image.open(io.BytesIO(data)))


def decode_svg(data: bytes) -> list[str]:
    cairosvg = require("cairosvg", "CairoSVG (and libcairo2)")
    return decode_png(cairosvg.svg2png(bytestring=data))


def terminal_picture(text: str) -> Image.Image:
    """Draw half-block text back into pixels (each character: one module wide, two high)."""
    lines = [line for line in text.split("\n") if line]
    picture = Image.new("L", (len(lines[0]) * 4, len(lines) * 8), 255)
    pixels = picture.load()
    assert pixels is not None
    for y, line in enumerate(lines):
        for x, glyph in enumerate(line):
            top, bottom = {"█": (1, 1), "▀": (1, 0), "▄": (0, 1), " ": (0, 0)}[glyph]
            for dy in range(8):
                if top if dy < 4 else bottom:
                    for dx in range(4):
                        pixels[x * 4 + dx, y * 8 + dy] = 0
    return picture

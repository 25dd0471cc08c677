"""A QR code in a terminal: two modules per character cell with the Unicode half blocks.

With colours (a terminal), dark modules are black on a white background whatever the terminal's own
colours are. Without (a file, a pipe, NO_COLOR), the glyphs are the ink: dark on a light background as
printed; `invert` swaps them for a light-on-dark terminal.
"""

from __future__ import annotations

from gateway.qr.symbol import QrSymbol

BORDER = 4  # the quiet zone the standard asks for
# (top module dark, bottom module dark) -> glyph
GLYPHS = {(True, True): "█", (True, False): "▀", (False, True): "▄", (False, False): " "}
BLACK_ON_WHITE = "\x1b[30;107m"
RESET = "\x1b[0m"


def half_blocks(symbol: QrSymbol, *, colour: bool = False, invert: bool = False, border: int = BORDER) -> str:
    side = symbol.size + 2 * border
    blank = "0" * side
    rows = [blank] * border + ["0" * border + row + "0" * border for row in symbol.rows] + [blank] * border
    if len(rows) % 2:
        rows.append(blank)
    lines = []
    for top, bottom in zip(rows[0::2], rows[1::2], strict=True):
        cells = "".join(GLYPHS[(a == "1") != invert, (b == "1") != invert] for a, b in zip(top, bottom, strict=True))
        lines.append(f"{BLACK_ON_WHITE}{cells}{RESET}" if colour else cells)
    return "\n".join(lines) + "\n"

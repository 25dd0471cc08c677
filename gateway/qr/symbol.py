"""QR Code symbols (ISO/IEC 18004 model 2), encoded fast enough to render on the request path.

Theory of operation. The content is encoded in byte mode (UTF-8) at level M, or higher when the
same version has room (a free gain in robustness), in the smallest version that holds it.

Everything that depends only on (version, level) is computed once and kept: where each bit of the
(non-interleaved) codeword stream lands in the symbol, the function patterns, and for each of the
eight masks an XOR constant holding the mask over the encoding region plus that mask's format
information. A symbol is a Python int whose binary digits are the modules row by row, each row
followed by four light padding bits; the columns are kept the same way. So placing the codewords is
one C-level gather (`itemgetter`) and one `int(text, 2)`, masking is one XOR, and the penalty rules
(ISO/IEC 18004:2015 7.8.3, with the area outside the symbol light) are a few dozen big-int
operations per mask: all eight masks are evaluated, as the standard asks, in microseconds.

Reed-Solomon uses, per error-correction length, a table of the generator polynomial times each byte
value, so the division is one shift, one lookup and one XOR per data byte.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from operator import itemgetter

__all__ = ["ContentTooLong", "QrSymbol", "encode", "encode_bytes"]

# (level name, format bits), in the order of the tables below.
LEVELS = (("L", 0b01), ("M", 0b00), ("Q", 0b11), ("H", 0b10))
ECC_CODEWORDS_PER_BLOCK = (
    (-1, 7, 10, 15, 20, 26, 18, 20, 24, 30, 18, 20, 24, 26, 30, 22, 24, 28, 30, 28, 28, 28, 28, 30, 30, 26, 28, 30,
     30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30),
    (-1, 10, 16, 26, 18, 24, 16, 18, 22, 22, 26, 30, 22, 22, 24, 24, 28, 28, 26, 26, 26, 26, 28, 28, 28, 28, 28, 28,
     28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28),
    (-1, 13, 22, 18, 26, 18, 24, 18, 22, 20, 24, 28, 26, 24, 20, 30, 24, 28, 28, 26, 30, 28, 30, 30, 30, 30, 28, 30,
     30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30),
    (-1, 17, 28, 22, 16, 22, 28, 26, 26, 24, 28, 24, 28, 22, 24, 24, 30, 28, 28, 26, 28, 30, 24, 30, 30, 30, 30, 30,
     30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30),
)  # fmt: skip
ERROR_CORRECTION_BLOCKS = (
    (-1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 4, 4, 4, 4, 4, 6, 6, 6, 6, 7, 8, 8, 9, 9, 10, 12, 12, 12, 13, 14, 15, 16, 17, 18,
     19, 19, 20, 21, 22, 24, 25),
    (-1, 1, 1, 1, 2, 2, 4, 4, 4, 5, 5, 5, 8, 9, 9, 10, 10, 11, 13, 14, 16, 17, 17, 18, 20, 21, 23, 25, 26, 28, 29, 31,
     33, 35, 37, 38, 40, 43, 45, 47, 49),
    (-1, 1, 1, 2, 2, 4, 4, 6, 6, 8, 8, 8, 10, 12, 16, 12, 17, 16, 18, 21, 20, 23, 23, 25, 27, 29, 34, 34, 35, 38, 40,
     43, 45, 48, 51, 53, 56, 59, 62, 65, 68),
    (-1, 1, 1, 2, 4, 4, 4, 5, 6, 8, 8, 11, 11, 16, 16, 18, 16, 19, 21, 25, 25, 25, 34, 30, 32, 35, 37, 40, 42, 45, 48,
     51, 54, 57, 60, 63, 66, 70, 74, 77, 81),
)  # fmt: skip
MEDIUM = 1
PAD = 4  # light bits after each row: patterns never run across rows, and the outside reads as light


class ContentTooLong(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class QrSymbol:
    """A finished symbol: `rows[y][x]` is "1" for a dark module (no quiet zone included)."""

    version: int
    level: str
    mask: int
    rows: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.rows)


# --- Reed-Solomon over GF(256), polynomial 0x11D ------------------------------------------------------


def _gf_tables() -> tuple[list[int], list[int]]:
    exp, log = [0] * 512, [0] * 256
    value = 1
    for i in range(255):
        exp[i] = value
        log[value] = i
        value <<= 1
        if value & 0x100:
            value ^= 0x11D
    for i in range(255, 512):
        exp[i] = exp[i - 255]
    return exp, log


EXP, LOG = _gf_tables()


@cache
def _generator_table(degree: int) -> tuple[int, ...]:
    """For each byte value f: the generator polynomial (monic part dropped) times f, as an int of
    `degree` bytes, highest coefficient first."""
    gen = [1]
    for i in range(degree):
        nxt = [0] * (len(gen) + 1)
        for j, coefficient in enumerate(gen):
            nxt[j] ^= coefficient
            if coefficient:
                nxt[j + 1] ^= EXP[LOG[coefficient] + i]
        gen = nxt
    table = []
    for factor in range(256):
        product = 0
        for coefficient in gen[1:]:
            term = EXP[LOG[coefficient] + LOG[factor]] if coefficient and factor else 0
            product = product << 8 | term
        table.append(product)
    return tuple(table)


def _ecc(data: bytes, degree: int) -> bytes:
    table = _generator_table(degree)
    top = 8 * (degree - 1)
    keep = (1 << 8 * degree) - 1
    remainder = 0
    for byte in data:
        remainder = ((remainder << 8) & keep) ^ table[byte ^ (remainder >> top)]
    return remainder.to_bytes(degree, "big")


# --- Version tables -------------------------------------------------------------------------------------


def _raw_data_modules(version: int) -> int:
    result = (16 * version + 128) * version + 64
    if version >= 2:
        aligns = version // 7 + 2
        result -= (25 * aligns - 10) * aligns - 55
        if version >= 7:
            result -= 36
    return result


def data_capacity(version: int, level: int) -> int:
    """Data codewords of `version` at `level` (index into LEVELS)."""
    return (
        _raw_data_modules(version) // 8
        - ECC_CODEWORDS_PER_BLOCK[level][version] * ERROR_CORRECTION_BLOCKS[level][version]
    )


def _alignment_positions(version: int) -> list[int]:
    if version == 1:
        return []
    aligns = version // 7 + 2
    size = version * 4 + 17
    step = 26 if version == 32 else (version * 4 + aligns * 2 + 1) // (aligns * 2 - 2) * 2
    positions = [6]
    for i in range(aligns - 1):
        positions.insert(1, size - 7 - i * step)
    return positions


def _bits(value: int, count: int) -> list[int]:
    return [(value >> i) & 1 for i in range(count)]


def format_bits(level: int, mask: int) -> int:
    data = LEVELS[level][1] << 3 | mask
    remainder = data
    for _ in range(10):
        remainder = (remainder << 1) ^ ((remainder >> 9) * 0x537)
    return (data << 10 | remainder) ^ 0x5412


def _version_bits(version: int) -> int:
    remainder = version
    for _ in range(12):
        remainder = (remainder << 1) ^ ((remainder >> 11) * 0x1F25)
    return version << 12 | remainder


MASKS: tuple[Callable[[int, int], bool], ...] = (
    lambda x, y: (x + y) % 2 == 0,
    lambda x, y: y % 2 == 0,
    lambda x, y: x % 3 == 0,
    lambda x, y: (x + y) % 3 == 0,
    lambda x, y: (x // 3 + y // 2) % 2 == 0,
    lambda x, y: x * y % 2 + x * y % 3 == 0,
    lambda x, y: (x * y % 2 + x * y % 3) % 2 == 0,
    lambda x, y: ((x + y) % 2 + x * y % 3) % 2 == 0,
)


@dataclass(frozen=True, slots=True)
class _Layout:
    """What a symbol of one version and level looks like before its data arrive."""

    size: int
    stream_bits: int  # codewords (data + ecc), in bits
    blocks: tuple[tuple[int, int], ...]  # (start, length) of each data block within the data codewords
    ecc_length: int
    gather_rows: Callable[[str], tuple[str, ...]]
    gather_columns: Callable[[str], tuple[str, ...]]
    mask_rows: tuple[int, ...]  # per mask: mask over the encoding region | format information
    mask_columns: tuple[int, ...]
    run_pairs: int  # positions j where j and j+1 are modules of the same line
    block_pairs: int  # run_pairs without the first line (2x2 blocks look one line back)
    total_bits: int


def _function_patterns(version: int) -> tuple[list[list[int]], list[list[bool]]]:
    """Modules (0/1) and which ones are function modules; format areas reserved (light)."""
    size = version * 4 + 17
    modules = [[0] * size for _ in range(size)]
    function = [[False] * size for _ in range(size)]

    def put(x: int, y: int, dark: bool) -> None:
        modules[y][x] = int(dark)
        function[y][x] = True

    for i in range(size):
        put(6, i, i % 2 == 0)
        put(i, 6, i % 2 == 0)
    for cx, cy in ((3, 3), (size - 4, 3), (3, size - 4)):
        for dy in range(-4, 5):
            for dx in range(-4, 5):
                if 0 <= cx + dx < size and 0 <= cy + dy < size:
                    put(cx + dx, cy + dy, max(abs(dx), abs(dy)) not in (2, 4))
    aligns = _alignment_positions(version)
    last = len(aligns) - 1
    for i, ax in enumerate(aligns):
        for j, ay in enumerate(aligns):
            if (i, j) in ((0, 0), (0, last), (last, 0)):
                continue
            for dy in range(-2, 3):
                for dx in range(-2, 3):
                    put(ax + dx, ay + dy, max(abs(dx), abs(dy)) != 1)
    for x, y in _format_cells(size):
        put(x, y, False)
    put(8, size - 8, True)  # the dark module
    if version >= 7:
        for i, bit in enumerate(_bits(_version_bits(version), 18)):
            a, b = size - 11 + i % 3, i // 3
            put(a, b, bool(bit))
            put(b, a, bool(bit))
    return modules, function


def _format_cells(size: int) -> list[tuple[int, int]]:
    """(x, y) of format bit 0..14, first copy, then second copy."""
    first = [(8, i) for i in range(6)] + [(8, 7), (8, 8), (7, 8)] + [(14 - i, 8) for i in range(9, 15)]
    second = [(size - 1 - i, 8) for i in range(8)] + [(8, size - 15 + i) for i in range(8, 15)]
    return first + second


def _placement(size: int, function: list[list[bool]]) -> list[tuple[int, int]]:
    """(x, y) of every encoding-region module in the order the codeword bits fill them."""
    order = []
    right = size - 1
    while right >= 1:
        if right == 6:
            right = 5
        upward = ((right + 1) & 2) == 0
        for vertical in range(size):
            y = size - 1 - vertical if upward else vertical
            for x in (right, right - 1):
                if not function[y][x]:
                    order.append((x, y))
        right -= 2
    return order


def _as_int(cells: list[list[int]], transpose: bool) -> int:
    size = len(cells)
    lines = (["".join(str(cells[y][x]) for y in range(size)) for x in range(size)] if transpose else
             ["".join(map(str, row)) for row in cells])  # fmt: skip
    return int("".join(line + "0" * PAD for line in lines), 2)


def _pairs_mask(size: int, skip_first: bool) -> int:
    # bit j pairs with bit j + 1, i.e. a digit with the one before it in the text: skip each line's first
    line = "0" + "1" * (size - 1) + "0" * PAD
    lines = [("0" * (size + PAD) if skip_first and i == 0 else line) for i in range(size)]
    return int("".join(lines), 2)


@cache
def _layout(version: int, level: int) -> _Layout:
    size = version * 4 + 17
    modules, function = _function_patterns(version)
    blocks_count = ERROR_CORRECTION_BLOCKS[level][version]
    ecc_length = ECC_CODEWORDS_PER_BLOCK[level][version]
    raw = _raw_data_modules(version) // 8
    short_blocks = blocks_count - raw % blocks_count
    short_length = raw // blocks_count - ecc_length  # data codewords of a short block
    blocks, start = [], 0
    for i in range(blocks_count):
        length = short_length + (0 if i < short_blocks else 1)
        blocks.append((start, length))
        start += length
    data_total = start
    # Interleaving: the i-th codeword of each block in turn (data first, then ecc), as indexes into
    # the stream "all data blocks, then all ecc blocks, each block whole".
    interleaved: list[int] = []
    for i in range(short_length + 1):
        interleaved.extend(block_start + i for block_start, length in blocks if i < length)
    for i in range(ecc_length):
        interleaved.extend(data_total + b * ecc_length + i for b in range(blocks_count))
    stream_bits = raw * 8
    zero, one = stream_bits, stream_bits + 1  # indexes of the constant characters after the stream
    source = [[one if modules[y][x] else zero for x in range(size)] for y in range(size)]
    region = _placement(size, function)
    for n, (x, y) in enumerate(region):
        source[y][x] = interleaved[n >> 3] * 8 + (n & 7) if n < stream_bits else zero  # remainder bits: light
    row_order = [i for row in source for i in (*row, *(zero,) * PAD)]
    column_order = [i for x in range(size) for i in (*(source[y][x] for y in range(size)), *(zero,) * PAD)]
    mask_rows, mask_columns = [], []
    for mask in range(8):
        pattern = [[0] * size for _ in range(size)]
        for x, y in region:
            pattern[y][x] = int(MASKS[mask](x, y))
        bits = _bits(format_bits(level, mask), 15)
        for i, (x, y) in enumerate(_format_cells(size)):
            pattern[y][x] = bits[i % 15]
        mask_rows.append(_as_int(pattern, transpose=False))
        mask_columns.append(_as_int(pattern, transpose=True))
    return _Layout(
        size=size,
        stream_bits=stream_bits,
        blocks=tuple(blocks),
        ecc_length=ecc_length,
        gather_rows=itemgetter(*row_order),
        gather_columns=itemgetter(*column_order),
        mask_rows=tuple(mask_rows),
        mask_columns=tuple(mask_columns),
        run_pairs=_pairs_mask(size, skip_first=False),
        block_pairs=_pairs_mask(size, skip_first=True),
        total_bits=size * (size + PAD),
    )


# --- Penalty (ISO/IEC 18004:2015 7.8.3) ------------------------------------------------------------------


def _line_penalty(lines: int, pairs: int) -> int:
    """N1 (runs of five or more) and N3 (1:1:3:1:1 with four light modules on a side) over every
    line of `lines`."""
    equal = ~(lines ^ (lines >> 1)) & pairs
    fours = equal & (equal >> 1) & (equal >> 2) & (equal >> 3)  # runs of >= 5 modules
    n1 = fours.bit_count() + 2 * (fours & ~(fours << 1)).bit_count()
    light = ~lines
    core = lines & (light >> 1) & (lines >> 2) & (lines >> 3) & (lines >> 4) & (light >> 5) & (lines >> 6)
    quiet = light & (light >> 1) & (light >> 2) & (light >> 3)
    n3 = (core & (quiet << 4)).bit_count() + (core & (quiet >> 7)).bit_count()
    return n1 + 40 * n3


def penalty(rows: int, columns: int, layout: _Layout) -> int:
    width = layout.size + PAD
    vertical = ~(rows ^ (rows >> width))
    horizontal = ~(rows ^ (rows >> 1))
    n2 = (vertical & (vertical >> 1) & horizontal & layout.block_pairs).bit_count()
    modules = layout.size * layout.size
    n4 = abs(rows.bit_count() * 100 - modules * 50) // (modules * 5)
    return _line_penalty(rows, layout.run_pairs) + _line_penalty(columns, layout.run_pairs) + 3 * n2 + 10 * n4


# --- Encoding ---------------------------------------------------------------------------------------------


def _choose(length: int) -> tuple[int, int]:
    """The smallest version holding `length` bytes at level M, then the highest level it allows."""
    for version in range(1, 41):
        header = 4 + (8 if version < 10 else 16)
        needed = (header + 8 * length + 7) // 8
        if needed <= data_capacity(version, MEDIUM):
            for level in (3, 2):
                if needed <= data_capacity(version, level):
                    return version, level
            return version, MEDIUM
    raise ContentTooLong(f"{length} bytes do not fit in a QR code at level M (at most 2331)")


def _data_codewords(payload: bytes, version: int, capacity: int) -> bytes:
    count_bits = 8 if version < 10 else 16
    bits = ((0b0100 << count_bits) | len(payload)) << 8 * len(payload) | int.from_bytes(payload, "big")
    used = 4 + count_bits + 8 * len(payload)
    terminator = min(4, capacity * 8 - used)
    bits <<= terminator
    used += terminator
    bits <<= -used % 8
    data = bits.to_bytes((used + 7) // 8, "big")
    padding = capacity - len(data)
    return data + (b"\xec\x11" * (padding // 2 + 1))[:padding]


def encode(content: str, *, mask: int | None = None) -> QrSymbol:
    """The symbol of `content` (UTF-8, byte mode). `mask` forces a mask (tests); by default the one
    with the lowest penalty is chosen."""
    payload = content.encode("utf-8")
    version, level = _choose(len(payload))
    return encode_bytes(payload, version, level, mask)


def encode_bytes(payload: bytes, version: int, level: int, mask: int | None = None) -> QrSymbol:
    """`payload` in byte mode at this version and level (index into LEVELS); it must fit."""
    layout = _layout(version, level)
    data = _data_codewords(payload, version, data_capacity(version, level))
    blocks = [data[start : start + length] for start, length in layout.blocks]
    stream = b"".join([data, *(_ecc(block, layout.ecc_length) for block in blocks)])
    text = format(int.from_bytes(stream, "big"), f"0{layout.stream_bits}b") + "01"
    rows = int("".join(layout.gather_rows(text)), 2)
    if mask is None:
        columns = int("".join(layout.gather_columns(text)), 2)
        scores = [
            penalty(rows ^ layout.mask_rows[m], columns ^ layout.mask_columns[m], layout) for m in range(len(MASKS))
        ]
        mask = scores.index(min(scores))
    digits = format(rows ^ layout.mask_rows[mask], f"0{layout.total_bits}b")
    width = layout.size + PAD
    lines = tuple(digits[i : i + layout.size] for i in range(0, layout.total_bits, width))
    return QrSymbol(version=version, level=LEVELS[level][0], mask=mask, rows=lines)

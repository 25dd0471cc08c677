"""QR symbols and images: bit for bit against an independent encoder, the mask penalty against a
plain reading of the standard, and every image kind and size read back by a real decoder."""

from __future__ import annotations

import itertools
import random
import statistics
import string
import time

import pytest

from gateway.clients.terminal import half_blocks
from gateway.qr import render
from gateway.qr.symbol import LEVELS, PAD, ContentTooLong, _layout, data_capacity, encode, encode_bytes, penalty
from tests.support.qr_decode import decode, decode_png, decode_svg, require, terminal_picture

qrcode = require("qrcode", "qrcode (the independent encoder)")
QR_LEVELS = {
    "L": qrcode.constants.ERROR_CORRECT_L,
    "M": qrcode.constants.ERROR_CORRECT_M,
    "Q": qrcode.constants.ERROR_CORRECT_Q,
    "H": qrcode.constants.ERROR_CORRECT_H,
}
TYPICAL = "https://qrgate.example.cn/q/" + "Ab3_-xYzAb3_-xYzQWERTY"


def reference_rows(payload: bytes, version: int, level: str, mask: int) -> tuple[str, ...]:
    from qrcode.util import MODE_8BIT_BYTE, QRData

    code = qrcode.QRCode(version=version, error_correction=QR_LEVELS[level], mask_pattern=mask, border=0)
    code.add_data(QRData(payload, mode=MODE_8BIT_BYTE))
    code.make(fit=False)
    return tuple("".join("1" if module else "0" for module in row) for row in code.modules)


@pytest.mark.slow  # 64 symbols encoded twice
def test_every_version_and_level_matches_an_independent_encoder() -> None:
    """Each version at one level (in turn), and each level of the versions where the tables change."""
    rng = random.Random(7)
    cases = {(version, version % 4) for version in range(1, 41)}
    cases |= {(version, level) for version in (1, 2, 7, 9, 10, 26, 27, 40) for level in range(4)}
    for version, level in sorted(cases):
        name = LEVELS[level][0]
        header = 2 + (1 if version < 10 else 2)  # mode, count, rounded up to bytes
        length = rng.randint(1, data_capacity(version, level) - header)
        payload = bytes(rng.randrange(256) for _ in range(length))
        mask = rng.randrange(8)
        ours = encode_bytes(payload, version, level, mask)
        assert ours.rows == reference_rows(payload, version, name, mask), (version, name, mask)


@pytest.mark.parametrize("mask", range(8))
def test_every_mask_matches_an_independent_encoder(mask: int) -> None:
    ours = encode(TYPICAL, mask=mask)
    assert ours.rows == reference_rows(TYPICAL.encode(), ours.version, ours.level, mask)


def reference_penalty(rows: tuple[str, ...]) -> int:
    """ISO/IEC 18004:2015 7.8.3, read plainly, the area around the symbol counted as light."""
    size = len(rows)
    columns = ["".join(row[x] for row in rows) for x in range(size)]
    score = 0
    for line in (*rows, *columns):
        run = 1
        for a, b in itertools.pairwise(line):
            if a == b:
                run += 1
            else:
                score += run - 2 if run >= 5 else 0
                run = 1
        score += run - 2 if run >= 5 else 0
        padded = "0000" + line + "0000"
        for i in range(len(padded) - 6):
            if padded[i : i + 7] == "1011101":
                score += 40 * (padded[max(0, i - 4) : i] == "0000") + 40 * (padded[i + 7 : i + 11] == "0000")
    for y in range(size - 1):
        for x in range(size - 1):
            if rows[y][x] == rows[y][x + 1] == rows[y + 1][x] == rows[y + 1][x + 1]:
                score += 3
    dark = sum(row.count("1") for row in rows)
    score += 10 * (abs(dark * 100 - size * size * 50) // (size * size * 5))
    return score


def as_ints(rows: tuple[str, ...]) -> tuple[int, int]:
    size = len(rows)
    columns = ["".join(row[x] for row in rows) for x in range(size)]
    return (
        int("".join(row + "0" * PAD for row in rows), 2),
        int("".join(column + "0" * PAD for column in columns), 2),
    )


@pytest.mark.parametrize("length", [5, 40, 120, 400])
def test_the_mask_penalty_is_the_standard_one_and_the_lowest_wins(length: int) -> None:
    rng = random.Random(length)
    content = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(length))
    chosen = encode(content)
    layout = _layout(chosen.version, [name for name, _ in LEVELS].index(chosen.level))
    scores = []
    for mask in range(8):
        rows = encode(content, mask=mask).rows
        scores.append(reference_penalty(rows))
        assert penalty(*as_ints(rows), layout) == scores[-1], mask
    assert scores[chosen.mask] == min(scores)


def test_long_contents_are_refused() -> None:
    encode("x" * 2331)
    with pytest.raises(ContentTooLong):
        encode("x" * 2332)


def random_contents(count: int) -> list[str]:
    rng = random.Random(2024)
    alphabet = string.ascii_letters + string.digits + "-_"
    contents = []
    for i in range(count):
        kind = i % 3
        if kind == 0:  # what the gateway puts in a code: {public_url}/q/{qr_id}
            host = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 30)))
            contents.append(f"https://{host}.example.cn/q/" + "".join(rng.choice(alphabet) for _ in range(22)))
        elif kind == 1:
            contents.append("".join(rng.choice(string.printable[:95]) for _ in range(rng.randint(1, 300))))
        else:
            contents.append("".join(rng.choice("税务扫码登录张三𠮷é") for _ in range(rng.randint(1, 60))))
    return contents


@pytest.mark.slow  # 300 images decoded
def test_many_random_contents_read_back_as_png_and_svg() -> None:
    for content in random_contents(150):
        symbol = encode(content)
        assert decode_png(render.png(symbol)) == [content], content
        assert decode_svg(render.svg(symbol)) == [content], content


@pytest.mark.parametrize("size", render.SIZES)
@pytest.mark.parametrize("kind", sorted(render.RENDERERS))
def test_every_size_offered_reads_back(kind: str, size: int) -> None:
    images = render.QrImages()
    for content in (TYPICAL, "http://127.0.0.1:8000/q/AAAAAAAAAAAAAAAAAAAAAA", "x" * 400):
        image = images.render(content, kind, size)
        assert (decode_png if kind == "png" else decode_svg)(image) == [content]
    side = (encode(TYPICAL).size + 2 * render.BORDER) * size
    if kind == "png":
        assert image.startswith(b"\x89PNG\r\n\x1a\n")
    else:
        assert images.render(TYPICAL, kind, size).startswith(
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{side}"'.encode()
        )


@pytest.mark.parametrize("content", [TYPICAL, "http://127.0.0.1:8000/q/AAAAAAAAAAAAAAAAAAAAAA", "登录"])
def test_terminal_half_blocks_read_back(content: str) -> None:
    symbol = encode(content)
    assert decode(terminal_picture(half_blocks(symbol))) == [content]
    coloured = half_blocks(symbol, colour=True)
    assert coloured.startswith("\x1b[30;107m")
    plain = coloured.replace("\x1b[30;107m", "").replace("\x1b[0m", "")
    assert plain == half_blocks(symbol)
    inverted = half_blocks(symbol, invert=True)
    swapped = inverted.translate(str.maketrans("█ ▀▄", " █▄▀"))
    assert swapped == half_blocks(symbol)


def test_images_are_kept_until_the_code_expires() -> None:
    images = render.QrImages(capacity=3)
    now = time.time()
    first = images.render(TYPICAL, "svg", keep_until=now + 60)
    assert images.render(TYPICAL, "svg", keep_until=now + 60) is first
    gone = images.render("http://a/q/1", "png", keep_until=now - 1)  # already past its expiry
    assert images.render("http://a/q/1", "png") is not gone
    for i in range(4):
        images.render(f"http://b/q/{i}", "svg", keep_until=now + 60)
    assert images.render(TYPICAL, "svg", keep_until=now + 60) is not first  # evicted: capacity 3
    with pytest.raises(ValueError, match="size"):
        images.render(TYPICAL, "svg", 1)


def test_rendering_is_fast() -> None:
    """A loose guard; benchmarks/bench_qr_render.py measures properly (docs/performance.md)."""
    timings = []
    for i in range(60):
        content = f"https://qrgate.example.cn/q/Ab3_-xYzAb3_-xYzQW{i:04d}"
        started = time.perf_counter()
        render.svg(encode(content))
        timings.append(time.perf_counter() - started)
    assert statistics.median(timings) < 0.004

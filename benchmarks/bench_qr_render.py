"""QR image rendering: our path (gateway.qr.symbol + gateway.qr.render) against the default paths of
segno and qrcode, measured in the same run on the same contents.

    python benchmarks/bench_qr_render.py [--iterations 2000]

Every iteration renders a code never rendered before (a fresh qr_id, as after a mint), so the cache
plays no part; "cached" is the lookup a repeated image request costs. Each image is the same picture:
level M or better, scale 6, the standard quiet zone of 4 modules. Prints median and p99 per kind and
the ratio of the references' medians to ours.
"""

from __future__ import annotations

import argparse
import io
import platform
import secrets
import statistics
import sys
import time
from collections.abc import Callable

from gateway.qr import render
from gateway.qr.symbol import encode

BASE = "https://etax.example.gov.cn/q/"


def content() -> str:
    return BASE + secrets.token_urlsafe(16)


def ours(kind: str) -> Callable[[str], bytes]:
    draw = render.RENDERERS[kind]
    return lambda text: draw(encode(text), 6)


def segno_default(kind: str) -> Callable[[str], bytes]:
    import segno

    def draw(text: str) -> bytes:
        buffer = io.BytesIO()
        code = segno.make_qr(text, error="m")
        if kind == "svg":
            code.save(buffer, kind="svg", scale=6, border=4, xmldecl=False, light="#fff")
        else:
            code.save(buffer, kind="png", scale=6, border=4)
        return buffer.getvalue()

    return draw


def qrcode_default(kind: str) -> Callable[[str], bytes]:
    import qrcode
    import qrcode.image.svg

    def draw(text: str) -> bytes:
        if kind == "svg":
            image = qrcode.make(text, image_factory=qrcode.image.svg.SvgPathImage, box_size=6, border=4)
            return bytes(image.to_string())
        buffer = io.BytesIO()
        qrcode.make(text, box_size=6, border=4).save(buffer, format="PNG")
        return buffer.getvalue()

    return draw


def measure(draw: Callable[[str], bytes], iterations: int) -> list[float]:
    for _ in range(min(50, iterations)):  # warm up: tables, caches of the libraries
        draw(content())
    timings = []
    for _ in range(iterations):
        text = content()
        started = time.perf_counter()
        draw(text)
        timings.append(time.perf_counter() - started)
    return timings


def cached(kind: str, iterations: int) -> list[float]:
    images = render.QrImages()
    text = content()
    images.render(text, kind)
    timings = []
    for _ in range(iterations):
        started = time.perf_counter()
        images.render(text, kind)
        timings.append(time.perf_counter() - started)
    return timings


def p99(values: list[float]) -> float:
    return sorted(values)[min(len(values) - 1, int(len(values) * 0.99))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=2000, help="renders per kind on our path")
    parser.add_argument("--reference-iterations", type=int, default=300, help="renders per kind on segno/qrcode")
    args = parser.parse_args()
    sample = encode(content())
    print(f"Python {platform.python_version()} on {platform.machine()}, {platform.system()}; content like {content()}")
    print(f"  ({len(content())} bytes: version {sample.version}, level {sample.level}, {sample.size}x{sample.size})")
    print(f"{'path':28} {'median ms':>10} {'p99 ms':>10} {'vs ours':>9}")
    for kind in ("svg", "png"):
        mine = measure(ours(kind), args.iterations)
        base = statistics.median(mine)
        rows: list[tuple[str, list[float]]] = [
            (f"ours {kind}", mine),
            (f"ours {kind}, cached", cached(kind, args.iterations)),
        ]
        for name, path in (("segno", segno_default), ("qrcode", qrcode_default)):
            try:
                rows.append((f"{name} {kind} (default)", measure(path(kind), args.reference_iterations)))
            except ImportError:
                print(f"  ({name} is not installed: pip install -e '.[test]')")
        for name, timings in rows:
            median = statistics.median(timings)
            ratio = "" if name.startswith("ours") else f"{median / base:8.1f}x"
            print(f"{name:28} {median * 1000:10.3f} {p99(timings) * 1000:10.3f} {ratio:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

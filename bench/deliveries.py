"""What a wrapped delivery costs: the same canonical CSV ingested plain, gzipped, zipped (four
members, one per switch) and as UTF-16, each in a fresh process on a fresh store.

    python bench/deliveries.py                 # 1 M rows (also part of `make bench`)
    DELIVERY_ROWS=200000 python bench/deliveries.py

Reports wall seconds, CPU seconds (user + sys of the ingest process and its threads), rows per
second and peak RSS; the extra work of a wrapped file is its decompression or decoding into
private files (`pipeline.records.unpack`). Results go to bench/results.md. Measurements, never
test assertions.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from measure import measure_cpu, write_section  # noqa: E402

DATA = ROOT / "data"
ROWS = int(os.environ.get("DELIVERY_ROWS", "1000000"))
AS_OF = "2025-06-01"


def _gzip(src: Path, dst: Path) -> None:
    with open(src, "rb") as f, gzip.open(dst, "wb", compresslevel=6) as out:
        shutil.copyfileobj(f, out, 8 << 20)


def _zip(src: Path, dst: Path) -> None:
    header, *rows = src.read_bytes().splitlines(keepends=True)
    quarter = len(rows) // 4 + 1
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as archive:
        for i in range(4):
            archive.writestr(f"switch-{i}.csv", header + b"".join(rows[i * quarter : (i + 1) * quarter]))  # fmt: skip


def _utf16(src: Path, dst: Path) -> None:
    dst.write_bytes(src.read_bytes().decode("utf-8").encode("utf-16"))


WRAPS: dict[str, tuple[str, Callable[[Path, Path], None] | None]] = {
    "plain": ("csv", None),
    "gzip": ("csv.gz", _gzip),
    "zip, 4 members": ("zip", _zip),
    "UTF-16": ("csv", _utf16),
}


def main() -> None:
    plain = DATA / f"canonical_csv-{ROWS}.csv"
    if not plain.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pipeline", "generate", "--format", "canonical_csv",
             "--rows", str(ROWS), "--out", str(plain), "--seed", "42"],
            check=True,
        )  # fmt: skip
    lines = [
        f"## Wrapped deliveries ({ROWS:,} canonical CSV rows)\n",
        "| delivery | bytes delivered | wall s | CPU s | rows/s | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, (suffix, wrap) in WRAPS.items():
        path = plain if wrap is None else DATA / f"delivery-{name.split(',')[0]}-{ROWS}.{suffix}"
        if wrap is not None and not path.exists():
            wrap(plain, path)
        work = DATA / "deliveries-run"
        shutil.rmtree(work, ignore_errors=True)
        env = {
            **os.environ,
            "CDR_STORE": str(work / "store"),
            "CDR_KEYRING": str(work / "keyring"),
            "CDR_DATA_DOCS": str(work / "docs"),
            "CDR_SOURCE_TIMEZONE": "UTC",
            "CDR_DEFAULT_REGION": "PK",
        }
        cmd = [sys.executable, "-m", "pipeline", "ingest", "--as-of", AS_OF, str(path)]
        cpu, seconds, peak, _ = measure_cpu(cmd, env, work / "out")
        lines.append(
            f"| {name} | {path.stat().st_size:,} | {seconds:.1f} | {cpu:.1f} | "
            f"{ROWS / seconds:,.0f} | {peak / (1 << 20):,.0f} |"
        )
        print(lines[-1], flush=True)
    shutil.rmtree(DATA / "deliveries-run", ignore_errors=True)
    write_section("deliveries", "\n".join(lines))


if __name__ == "__main__":
    main()

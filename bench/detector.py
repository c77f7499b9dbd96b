"""What the identifier detector costs: clean values it masks (false positives) and CPU per value.

1. Every generated format (`pipeline.records.synth`, no bad rows) is ingested with region PK.
   The generator writes no identifier into a kept free-text field, so every `masked:` count is
   a clean value masked: the detector's false-positive cost on that data.
2. Record IDs as real platforms write them, 100,000 of each kind: the share the detector masks.
3. CPU seconds (user + sys) of the detector over 1,000,000 distinct random UUIDs.

Run: `python bench/detector.py` (also part of `make bench`). Prints Markdown tables.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core.config import Settings
from pipeline.core.resources import Resources
from pipeline.flows.ingest import ingest_file
from pipeline.records.detector import identifying
from pipeline.records.synth import FORMATS, generate

ROWS = int(os.environ.get("DETECTOR_ROWS", "20000"))


def generated_data() -> None:
    print(f"## Clean generated data ({ROWS:,} rows a format, region PK)\n")
    print("| format | records kept | values masked | masked by field |")
    print("|---|---:|---:|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in FORMATS:
            home = Path(tmp) / fmt
            res = Resources.from_settings(
                Settings.from_env(
                    {
                        "CDR_STORE": str(home / "store"),
                        "CDR_KEYRING": str(home / "keys"),
                        "CDR_DATA_DOCS": str(home / "docs"),
                        "CDR_DEFAULT_REGION": "PK",
                    }
                )
            )
            g = generate(fmt, home / f"cdr.{fmt}", ROWS, start=dt.date(2025, 3, 1), bad_share=0.0)
            report = ingest_file(res, g.path, as_of=dt.date(2025, 6, 1))
            masked = {k: v for k, v in report.scrubbed.items() if k.startswith("masked:")}
            shown = ", ".join(f"{k[7:]} {v:,}" for k, v in sorted(masked.items())) or "-"
            print(f"| {fmt} | {report.gold:,} | {sum(masked.values()):,} | {shown} |")


def record_ids() -> dict[str, list[str]]:
    rng = random.Random(7)
    n = 100_000
    return {
        "sequence `r0000012345`": [f"r{i:010d}" for i in range(n)],
        "Asterisk `uniqueid` (epoch.seq)": [
            f"{rng.randrange(1_600_000_000, 1_800_000_000)}.{rng.randrange(10_000)}"
            for _ in range(n)
        ],
        "UUID v4": [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n)],
        "hex SID `SM` + 32 hex": [f"SM{rng.getrandbits(128):032x}" for _ in range(n)],
        "random 10 digits": [f"{rng.randrange(10**10):010d}" for _ in range(n)],
    }


def id_shapes() -> None:
    print("\n## Record IDs as platforms write them (100,000 each)\n")
    print("| ID kind | masked |")
    print("|---|---:|")
    for kind, ids in record_ids().items():
        hits = pl.DataFrame({"v": ids}).select(identifying(pl.col("v"), "PK")).to_series()
        print(f"| {kind} | {hits.mean():.1%} |")


def cpu() -> None:
    rng = random.Random(11)
    ids = pl.DataFrame({"v": [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(1_000_000)]})
    ids.select(identifying(pl.col("v").head(10), "PK"))  # compile outside the timing
    before = os.times()
    start = time.perf_counter()
    ids.select(identifying(pl.col("v"), "PK")).to_series().sum()
    after = os.times()
    cpu_s = (after.user - before.user) + (after.system - before.system)
    wall = time.perf_counter() - start
    print("\n## CPU\n")
    print(f"1,000,000 distinct IDs: {cpu_s:.2f} CPU-s ({cpu_s:.2f} µs a value), {wall:.2f} s wall")


if __name__ == "__main__":
    generated_data()
    id_shapes()
    cpu()

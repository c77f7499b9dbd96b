"""Ingest benchmark: throughput and peak memory on generated CDRs, against a per-row baseline.

    make bench                       # 1 M and 10 M rows, canonical CSV and messaging JSON Lines
    BENCH_SIZES=200000 make bench    # a quick run

Each ingest runs in its own process (the CLI, as an operator runs it) on a fresh store and
keyring; peak memory is that process's maximum RSS. The baseline is the straightforward way:
read each row, `phonenumbers.parse` + format to E.164, `hmac` per identifier, on a sample.
Results go to bench/results.md. Timings are measurements, never test assertions.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import hmac
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import phonenumbers
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from measure import measure, write_section  # noqa: E402

DATA = ROOT / "data"
SIZES = [int(s) for s in os.environ.get("BENCH_SIZES", "1000000,10000000").split(",")]
FORMATS = {"canonical_csv": "csv", "messaging_jsonl": "jsonl"}
BASELINE_SAMPLE = 200_000
AS_OF = "2025-06-01"  # the generated months (2025-01..03) are all within retention
PURGE_AS_OF = "2026-02-01"  # the day 2025-01 loses its identifiers


def dataset(fmt: str, rows: int) -> Path:
    path = DATA / f"{fmt}-{rows}.{FORMATS[fmt]}"
    if not path.exists():
        print(f"generating {rows:,} rows of {fmt} ...", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pipeline", "generate", "--format", fmt, "--rows", str(rows),
             "--out", str(path), "--seed", "42"],
            check=True,
        )  # fmt: skip
    return path


WORK = DATA / "run"
ENV = {**os.environ, "CDR_STORE": str(WORK / "store"), "CDR_KEYRING": str(WORK / "keyring")}


def run_ingest(path: Path) -> tuple[float, int, str]:
    """Wall seconds, peak RSS in bytes, and the CLI's summary of one ingest in a fresh process."""
    shutil.rmtree(WORK, ignore_errors=True)
    cmd = [sys.executable, "-m", "pipeline", "ingest", "--as-of", AS_OF, "--default-region", "PK",
           "--report-json", str(DATA / "report.json"), str(path)]  # fmt: skip
    return _measure(cmd)


def phase_timings() -> dict[str, float]:
    """Seconds the last ingest spent on data expectations and on commitments."""
    timings: dict[str, float] = json.loads((DATA / "report.json").read_text())[0]["timings"]
    return timings


def run_purge() -> tuple[float, int, int, int]:
    """Purge the first month of the store `run_ingest` left: seconds, peak RSS, rows, objects."""
    month = WORK / "store" / "silver" / "cdr" / "year=2025" / "month=01"
    parts = list(month.glob("*.parquet")) + list(
        (WORK / "store" / "vault").glob("year=2025/month=01/*")
    )
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in month.glob("*.parquet"))
    cmd = [sys.executable, "-m", "pipeline", "retention", "--as-of", PURGE_AS_OF]
    seconds, rss, _ = _measure(cmd)
    shutil.rmtree(WORK, ignore_errors=True)
    return seconds, rss, rows, len(parts)


def _measure(cmd: list[str]) -> tuple[float, int, str]:
    return measure(cmd, ENV, DATA)


def baseline(path: Path, fmt: str) -> float:
    """Rows per second of the per-row way: read a row, normalise its addresses with
    `phonenumbers`, `hmac` each identifier, and write the tokenised rows to Parquet."""
    key = b"k" * 43
    fields = ("origin", "destination") if fmt == "canonical_csv" else ("from", "to")
    kept: list[dict[str, object]] = []
    start = time.perf_counter()
    with open(path, encoding="utf-8") as f:
        records = (
            csv.DictReader(f)
            if fmt == "canonical_csv"
            else (json.loads(x) for x in f if x.strip().endswith("}"))
        )
        for rec in records:
            row = {k: v for k, v in rec.items() if isinstance(v, str) and k not in fields}
            for field in fields:
                value = str(rec.get(field) or "").strip()
                if "@" in value:
                    norm = "email:" + value.lower()
                else:
                    try:
                        written = value if fmt == "canonical_csv" else "+" + value
                        number = phonenumbers.parse(written, "PK")
                        e164 = phonenumbers.format_number(
                            number, phonenumbers.PhoneNumberFormat.E164
                        )
                        norm = "msisdn:" + e164
                    except phonenumbers.NumberParseException:
                        norm = value
                row[field] = hmac.new(key, norm.encode(), hashlib.sha256).hexdigest()
            kept.append(row)
            if len(kept) >= BASELINE_SAMPLE:
                break
    pq.write_table(pa.Table.from_pylist(kept), DATA / "baseline.parquet", compression="zstd")
    return len(kept) / (time.perf_counter() - start)


def _jsonl(path: Path) -> object:
    """JSON Lines read by polars as lines, top-level fields picked by JSON path (a broken line
    gives nulls instead of failing the read)."""
    import polars as pl

    with open(path, encoding="utf-8") as f:
        names = list(json.loads(next(x for x in f if x.strip().endswith("}"))))
    lines = pl.read_csv(
        path, has_header=False, separator="\x01", quote_char=None, new_columns=["line"],
        infer_schema=False, truncate_ragged_lines=True,
    )  # fmt: skip
    return lines.select(pl.col("line").str.json_path_match(f"$.{n}").alias(n) for n in names)


def lean_reference(path: Path, fmt: str) -> float:
    """Seconds of the lean reference on the whole file: read with polars, numbers to E.164 by
    string expressions, HMAC tokens (polars-hash), silver, gold and vault written to Parquet.
    Nothing else (no seal, bronze, quarantine, commitments, encryption or expectations): the
    floor the pipeline is compared with."""
    import polars as pl
    import polars_hash  # noqa: F401  (registers .chash)

    key = "k" * 43
    fields = ("origin", "destination") if fmt == "canonical_csv" else ("from", "to")
    out = DATA / "lean"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    start = time.perf_counter()
    df = (
        pl.read_csv(path, infer_schema=False, truncate_ragged_lines=True, ignore_errors=True)
        if fmt == "canonical_csv"
        else _jsonl(path)
    )
    df = df.with_columns(pl.col(f).cast(pl.String) for f in fields)
    for f in fields:
        digits = pl.col(f).str.replace_all(r"[^0-9]", "")
        e164 = (
            pl.when(pl.col(f).str.starts_with("+"))
            .then("+" + digits)
            .when(digits.str.starts_with("00"))
            .then("+" + digits.str.slice(2))
            .when(digits.str.starts_with("0"))
            .then("+92" + digits.str.slice(1))
            .otherwise("+" + digits)
        )
        value = (
            pl.when(pl.col(f).str.contains("@")).then(pl.col(f).str.to_lowercase()).otherwise(e164)
        )
        df = df.with_columns(value.alias(f"{f}_value")).with_columns(
            pl.col(f"{f}_value").chash.hmac_sha256(key=key).alias(f"{f}_token")  # type: ignore[attr-defined]
        )
    rest = [c for c in df.columns if c not in fields and not c.startswith(fields)]
    silver = df.select(*rest, *(pl.col(f"{f}_token").alias(f) for f in fields))
    silver.write_parquet(out / "silver.parquet", compression="zstd", compression_level=1)
    silver.drop(list(fields)).write_parquet(
        out / "gold.parquet", compression="zstd", compression_level=1
    )
    vault = pl.concat(
        [
            df.select(pl.col(f"{f}_token").alias("token"), pl.col(f"{f}_value").alias("identifier"))
            for f in fields
        ]
    ).unique("token")
    vault.write_parquet(out / "vault.parquet", compression="zstd", compression_level=1)
    seconds = time.perf_counter() - start
    shutil.rmtree(out, ignore_errors=True)
    return seconds


def main() -> int:
    DATA.mkdir(parents=True, exist_ok=True)
    results, purges = [], []
    for fmt in FORMATS:
        base = None
        for rows in SIZES:
            path = dataset(fmt, rows)
            if base is None:
                base = baseline(path, fmt)
            seconds, rss, _ = run_ingest(path)
            rate = rows / seconds
            phases = phase_timings()
            phases["lean_s"] = lean_reference(path, fmt)
            results.append(
                (fmt, rows, path.stat().st_size, seconds, rate, rss, base, rate / base, phases)
            )
            print(f"{fmt:16} {rows:>11,} rows  {seconds:7.1f} s  {rate:>10,.0f} rows/s  "
                  f"peak {rss / 2**20:,.0f} MiB  baseline {base:,.0f} rows/s  x{rate / base:.1f}  "
                  f"lean reference {phases['lean_s']:.1f} s (x{seconds / phases['lean_s']:.1f})  "
                  f"validation {phases['validate_s']:.1f} s, commitments {phases['commit_s']:.1f} s",
                  flush=True)  # fmt: skip
            p_seconds, p_rss, p_rows, p_objects = run_purge()
            purges.append((fmt, rows, p_rows, p_objects, p_seconds, p_rss))
            print(f"  purge of 2025-01: {p_rows:,} rows in {p_objects} objects, {p_seconds:.2f} s, "
                  f"peak {p_rss / 2**20:,.0f} MiB", flush=True)  # fmt: skip
    write_results(results, purges)
    return 0


def write_results(results: list[tuple], purges: list[tuple]) -> None:  # type: ignore[type-arg]
    lines = [
        "# Ingest benchmark",
        "",
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores, "
        f"{platform.machine()}, Python {platform.python_version()} (`make bench`).",
        "End to end per file, in a fresh process: seal (SHA-256), encrypt the original into bronze,",
        "parse, normalise, tokenise, encrypt the vault, write silver, gold, vault and quarantine.",
        "Baseline: the straightforward way, on the first "
        f"{BASELINE_SAMPLE:,} rows of the same file: read row by row, `phonenumbers` to E.164",
        "and `hmac` per identifier, tokenised rows written to one Parquet file (no seal, bronze,",
        "vault or gold: it does less than the pipeline).",
        "",
        "Lean reference: the same whole file read by polars, numbers to E.164 by string",
        "expressions, HMAC tokens, silver, gold and vault written to Parquet, nothing else;",
        "the pipeline's time is shown as a multiple of it.",
        "",
        "Validation: the `silver_identifiers`, `silver` and `gold` Great Expectations suites on",
        "every row, evaluated by polars per batch on the tier writer's threads (summed);",
        "commitments: per-record digests, identity commitments, Merkle leaves and roots. Both are",
        "inside the end-to-end time; their share of it is shown.",
        "",
        "| format | rows | file MiB | seconds | rows/s | peak RSS MiB | baseline rows/s | × baseline "
        "| lean reference s | × lean | validation s (share) | commitments s (share) "
        "| rows/s without validation |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for fmt, rows, size, seconds, rate, rss, base, ratio, phases in results:
        v, c = phases["validate_s"], phases["commit_s"]
        lines.append(
            f"| {fmt} | {rows:,} | {size / 2**20:,.0f} | {seconds:.1f} | {rate:,.0f} | "
            f"{rss / 2**20:,.0f} | {base:,.0f} | {ratio:.1f} | {phases['lean_s']:.1f} "
            f"| {seconds / phases['lean_s']:.1f} | {v:.1f} ({v / seconds:.0%}) "
            f"| {c:.1f} ({c / seconds:.0%}) | {rows / (seconds - v):,.0f} |"
        )
    lines += [
        "",
        "## Purge of one month's identifiers",
        "",
        f"`python -m pipeline retention --as-of {PURGE_AS_OF}` on the store the ingest left: destroys",
        "the month key, deletes the month's silver and vault objects, verifies, writes the audit",
        "entries. Its cost follows the number of objects (one silver and one vault part per",
        "ingested file and month), not the rows inside them.",
        "",
        "| ingested file | file rows | month rows | month objects | purge seconds | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for fmt, rows, p_rows, p_objects, p_seconds, p_rss in purges:
        lines.append(
            f"| {fmt} | {rows:,} | {p_rows:,} | {p_objects} | {p_seconds:.2f} | {p_rss / 2**20:,.0f} |"
        )
    write_section("ingest", "\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())

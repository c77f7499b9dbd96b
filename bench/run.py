"""Ingest benchmark: throughput and peak memory on generated CDRs, against a per-row baseline.

    make bench                       # 1 M and 10 M rows, canonical CSV and messaging JSON Lines
    BENCH_SIZES=200000 make bench    # a quick run
    BENCH_FORMATS=canonical_csv BENCH_ROUNDS=3 python bench/run.py

Each ingest runs in its own process (the CLI, as an operator runs it) on a fresh store and
keyring; peak memory is that process's maximum RSS. The lean reference runs in its own process
too, alternating with the pipeline, `BENCH_ROUNDS` times each (2): CPU seconds (user + sys,
every thread) are compared, best against best, as they are far steadier than wall time on a
shared machine. The baseline is the straightforward way: read each row, `phonenumbers.parse` +
format to E.164, `hmac` per identifier, on a sample (its CPU seconds scaled to the file's rows).
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
from dataclasses import dataclass, field
from pathlib import Path

import phonenumbers
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from measure import measure, measure_cpu, write_section  # noqa: E402

DATA = ROOT / "data"
SIZES = [int(s) for s in os.environ.get("BENCH_SIZES", "1000000,10000000").split(",")]
FORMATS = {
    fmt: ext
    for fmt, ext in {"canonical_csv": "csv", "messaging_jsonl": "jsonl"}.items()
    if fmt in os.environ.get("BENCH_FORMATS", "canonical_csv,messaging_jsonl").split(",")
}
BASELINE_SAMPLE = 200_000
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
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


def run_ingest(path: Path) -> tuple[float, float, int]:
    """CPU seconds, wall seconds and peak RSS in bytes of one ingest in a fresh process."""
    shutil.rmtree(WORK, ignore_errors=True)
    cmd = [sys.executable, "-m", "pipeline", "ingest", "--as-of", AS_OF, "--default-region", "PK",
           "--report-json", str(DATA / "report.json"), str(path)]  # fmt: skip
    cpu, wall, peak, _ = measure_cpu(cmd, ENV, DATA)
    return cpu, wall, peak


def run_lean(path: Path, fmt: str) -> tuple[float, float, int]:
    """CPU seconds, wall seconds and peak RSS of the lean reference in a fresh process."""
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); import run; run.lean_reference(__import__('pathlib').Path({str(path)!r}), {fmt!r})"  # fmt: skip
    cpu, wall, peak, _ = measure_cpu([sys.executable, "-c", code], ENV, DATA)
    return cpu, wall, peak


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


def baseline(path: Path, fmt: str) -> tuple[float, float]:
    """Rows per second and CPU seconds per row of the per-row way: read a row, normalise its
    addresses with `phonenumbers`, `hmac` each identifier, and write the tokenised rows to
    Parquet (one thread: its CPU is its time)."""
    key = b"k" * 43
    fields = ("origin", "destination") if fmt == "canonical_csv" else ("from", "to")
    kept: list[dict[str, object]] = []
    start, began = time.perf_counter(), time.process_time()
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
    return len(kept) / (time.perf_counter() - start), (time.process_time() - began) / len(kept)


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


@dataclass
class Result:
    """One file: the pipeline's and the lean reference's runs (CPU s, wall s, peak RSS)."""

    fmt: str
    rows: int
    size: int
    baseline_rate: float
    baseline_cpu: float  # the per-row way's CPU seconds for the file's rows (from its sample)
    pipeline: list[tuple[float, float, int]] = field(default_factory=list)
    lean: list[tuple[float, float, int]] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)

    def best(self, runs: list[tuple[float, float, int]]) -> tuple[float, float, int]:
        return min(runs)

    @property
    def ratio(self) -> float:
        return self.best(self.pipeline)[0] / self.best(self.lean)[0]


def main() -> int:
    DATA.mkdir(parents=True, exist_ok=True)
    results, purges = [], []
    for fmt in FORMATS:
        base = None
        for rows in SIZES:
            path = dataset(fmt, rows)
            if base is None:
                base = baseline(path, fmt)
            result = Result(fmt, rows, path.stat().st_size, base[0], base[1] * rows)
            for _ in range(ROUNDS):  # alternating, so both see the same machine
                result.pipeline.append(run_ingest(path))
                result.phases = phase_timings()
                result.lean.append(run_lean(path, fmt))
                cpu, wall, rss = result.pipeline[-1]
                print(f"{fmt:16} {rows:>11,} rows  pipeline {cpu:6.1f} CPU-s {wall:6.1f} s "
                      f"peak {rss / 2**20:,.0f} MiB  lean reference {result.lean[-1][0]:5.1f} CPU-s",
                      flush=True)  # fmt: skip
            results.append(result)
            print(f"  x{result.ratio:.2f} the lean reference's CPU (best of {ROUNDS} each)", flush=True)  # fmt: skip
            p_seconds, p_rss, p_rows, p_objects = run_purge()
            purges.append((fmt, rows, p_rows, p_objects, p_seconds, p_rss))
            print(f"  purge of 2025-01: {p_rows:,} rows in {p_objects} objects, {p_seconds:.2f} s, "
                  f"peak {p_rss / 2**20:,.0f} MiB", flush=True)  # fmt: skip
    write_results(results, purges)
    return 0


def write_results(results: list[Result], purges: list[tuple]) -> None:  # type: ignore[type-arg]
    lines = [
        "# Ingest benchmark",
        "",
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores, "
        f"{platform.machine()}, Python {platform.python_version()} (`make bench`).",
        "End to end per file, in a fresh process: seal (SHA-256), encrypt the original into bronze,",
        "parse, normalise, tokenise, commit, evaluate the suites, encrypt the vault, write silver,",
        "gold, vault, proofs, indexes and quarantine, and publish them.",
        "",
        "Lean reference: the same whole file read by polars, numbers to E.164 by string",
        "expressions, HMAC tokens, silver, gold and vault written to Parquet, nothing else.",
        f"The pipeline and the lean reference run alternately, {ROUNDS} times each, each in a",
        "fresh process; CPU seconds are user + sys of every thread. `× lean` is the best",
        "pipeline run's CPU against the best lean run's.",
        "",
        "Per-row baseline: read row by row, `phonenumbers` to E.164 and `hmac` per identifier,",
        f"tokenised rows written to one Parquet file, on the first {BASELINE_SAMPLE:,} rows; its CPU",
        "seconds are scaled to the file's rows (it does far less than the pipeline).",
        "",
        "Validation: the three suites evaluated by polars on every row, on the writer threads",
        "(summed); commitments: digests, identity commitments, Merkle leaves and roots (from the",
        "last pipeline run's report).",
        "",
        "| format | rows | file MiB | pipeline CPU s, each run | lean CPU s, each run | × lean "
        "| wall s | wall ÷ CPU | rows/s | peak RSS MiB | per-row baseline CPU s | validation s "
        "| commitments s |",
        "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        cpu, wall, _ = r.best(r.pipeline)
        runs = ", ".join(f"{c:.1f}" for c, _, _ in r.pipeline)
        leans = ", ".join(f"{c:.1f}" for c, _, _ in r.lean)
        peak = max(p for _, _, p in r.pipeline)
        lines.append(
            f"| {r.fmt} | {r.rows:,} | {r.size / 2**20:,.0f} | {runs} | {leans} | {r.ratio:.2f} "
            f"| {wall:.1f} | {wall / cpu:.2f} | {r.rows / wall:,.0f} | {peak / 2**20:,.0f} "
            f"| {r.baseline_cpu:.1f} | {r.phases['validate_s']:.1f} | {r.phases['commit_s']:.1f} |"
        )
    for fmt in FORMATS:
        peaks = {r.rows: max(p for _, _, p in r.pipeline) for r in results if r.fmt == fmt}
        if len(peaks) > 1:
            low, high = min(peaks), max(peaks)
            lines.append("")
            lines.append(
                f"{fmt}: peak RSS at {high:,} rows is {peaks[high] / peaks[low]:.2f}× the peak at "
                f"{low:,} rows."
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

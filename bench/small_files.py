"""Many small deliveries against one big one: the CPU a file pays whatever its size.

    python bench/small_files.py                  # make bench runs it too
    BENCH_SMALL_RUNS=1 python bench/small_files.py   # one run of each instead of two

The same 20,000 generated canonical CSV records are ingested, each case in a fresh process on a
fresh store and keyring:

- as one file of 20,000 rows;
- as 20 files of 1,000 rows, in one `ingest`;
- as 200 files of 100 rows, in one `ingest`;
- and one 1,000-row file alone, beside the lean reference (`run.lean_reference`) on the same
  file in a fresh process of its own (its imports included, as the pipeline's are).

CPU seconds are user + sys of the process (`resource.RUSAGE_CHILDREN`, every thread), far
steadier than wall time on a shared machine; the cases alternate, and each runs twice.
Results go to bench/results.md.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from measure import measure, write_section  # noqa: E402

DATA = ROOT / "data" / "small"
WORK = DATA / "run"
ENV = {**os.environ, "CDR_STORE": str(WORK / "store"), "CDR_KEYRING": str(WORK / "keyring")}
ROWS = 20_000
AS_OF = "2025-06-01"
RUNS = int(os.environ.get("BENCH_SMALL_RUNS", "2"))


def split(source: Path, folder: Path, rows_each: int) -> Path:
    """`source`'s records as files of `rows_each` rows, each with the header."""
    if folder.exists():
        return folder
    staging = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    header, *lines = source.read_text().splitlines(keepends=True)
    for n, start in enumerate(range(0, len(lines), rows_each)):
        (staging / f"switch-{n:04d}.csv").write_text(header + "".join(lines[start : start + rows_each]))  # fmt: skip
    staging.rename(folder)
    return folder


def cpu_of(cmd: list[str]) -> tuple[float, float, int]:
    """CPU seconds (user + sys), wall seconds and peak RSS of `cmd` in a fresh process, on a
    fresh store and keyring."""
    shutil.rmtree(WORK, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, peak, _ = measure(cmd, ENV, DATA / "out")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall, peak


def ingest(path: Path) -> list[str]:
    return [sys.executable, "-m", "pipeline", "ingest", "--as-of", AS_OF, "--default-region", "PK", str(path)]  # fmt: skip


def lean(path: Path) -> list[str]:
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); import run; run.lean_reference(__import__('pathlib').Path({str(path)!r}), 'canonical_csv')"  # fmt: skip
    return [sys.executable, "-c", code]


def main() -> int:
    DATA.mkdir(parents=True, exist_ok=True)
    one = DATA / f"canonical-{ROWS}.csv"
    if not one.exists():
        subprocess.run(
            [sys.executable, "-m", "pipeline", "generate", "--format", "canonical_csv",
             "--rows", str(ROWS), "--out", str(one), "--seed", "42"], check=True,
        )  # fmt: skip
    twenty = split(one, DATA / "20x1000", 1000)
    hundreds = split(one, DATA / "200x100", 100)
    single = twenty / "switch-0000.csv"
    cases = {
        "one file of 20,000 rows": ingest(one),
        "20 files of 1,000 rows": ingest(twenty),
        "200 files of 100 rows": ingest(hundreds),
        "one 1,000-row file": ingest(single),
        "lean reference, one 1,000-row file": lean(single),
    }
    seen: dict[str, list[tuple[float, float, int]]] = {name: [] for name in cases}
    for _ in range(RUNS):
        for name, cmd in cases.items():
            seen[name].append(cpu_of(cmd))
            cpu, wall, peak = seen[name][-1]
            print(
                f"{name}: {cpu:.2f} CPU-s, {wall:.2f} s wall, {peak / 2**20:,.0f} MiB", flush=True
            )
    best = {name: min(r[0] for r in runs) for name, runs in seen.items()}
    base, lean_cpu = best["one file of 20,000 rows"], best["lean reference, one 1,000-row file"]
    rows = [
        "| case | CPU s (user + sys), each run | wall s | peak RSS MiB | × |",
        "|---|---|---:|---:|---:|",
    ]
    for name, runs in seen.items():
        ref = lean_cpu if name == "one 1,000-row file" else base
        ratio = "" if name.startswith("lean") or name.startswith("one file") else f"{best[name] / ref:.1f}"  # fmt: skip
        cpus = ", ".join(f"{r[0]:.2f}" for r in runs)
        rows.append(f"| {name} | {cpus} | {min(r[1] for r in runs):.2f} | {max(r[2] for r in runs) / 2**20:,.0f} | {ratio} |")  # fmt: skip
    rows.append("")
    rows.append("× is the best run's CPU against one 20,000-row file's (against the lean reference's for the lone 1,000-row file).")  # fmt: skip
    write_section("Small files", "\n".join(rows))
    print("\n".join(rows))
    shutil.rmtree(WORK, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

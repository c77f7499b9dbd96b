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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from measure import measure_cpu, write_section  # noqa: E402

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
    cpu, wall, peak, _ = measure_cpu(cmd, ENV, DATA / "out")
    return cpu, wall, peak


def ingest(path: Path) -> list[str]:
    return [sys.executable, "-m", "pipeline", "ingest", "--as-of", AS_OF, "--default-region", "PK", str(path)]  # fmt: skip


def lean(path: Path) -> list[str]:
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); import run; run.lean_reference(__import__('pathlib').Path({str(path)!r}), 'canonical_csv')"  # fmt: skip
    return [sys.executable, "-c", code]


def airflow_run(folder: Path, batch_files: int) -> tuple[float, float, int]:
    """`airflow dags test cdr_ingest` over `folder`'s files dropped into landing/: CPU seconds,
    wall seconds and the number of mapped `ingest` tasks (batches of `batch_files`)."""
    home = DATA / "airflow"
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(WORK, ignore_errors=True)
    env = {**ENV, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT.parent / "dags"), "CDR_DEFAULT_REGION": "PK",
           "CDR_SOURCE_TIMEZONE": "UTC", "CDR_LANDING_SETTLE_SECONDS": "0",
           "CDR_INGEST_BATCH_FILES": str(batch_files), "CDR_DATA_DOCS": str(WORK / "docs")}  # fmt: skip
    airflow = str(Path(sys.executable).with_name("airflow"))
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True)
    subprocess.run([airflow, "pools", "set", "cdr_store", "8", "cdr"], env=env, check=True, capture_output=True)  # fmt: skip
    landing = WORK / "store" / "landing" / "switches"
    landing.mkdir(parents=True)
    for path in sorted(folder.iterdir()):
        shutil.copy(path, landing / path.name)
    tasks = -(-len(list(landing.iterdir())) // batch_files)
    when = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([airflow, "dags", "test", "cdr_ingest", when], env=env, check=True, capture_output=True)  # fmt: skip
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if list(landing.iterdir()):
        raise SystemExit("the Airflow run left files in landing/")
    return cpu, wall, tasks


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
    rows.append("")
    rows.append("The 200 files of 100 rows through Airflow (`airflow dags test cdr_ingest`, tasks in its own process):")  # fmt: skip
    rows.append("")
    rows.append("| mapped `ingest` tasks | files a task | CPU s | wall s | CPU s a file |")
    rows.append("|---:|---:|---:|---:|---:|")
    for batch_files in (1, 50):
        cpu, wall, tasks = airflow_run(hundreds, batch_files)
        print(f"airflow, {batch_files} file(s) a task: {cpu:.1f} CPU-s, {wall:.1f} s, {tasks} tasks", flush=True)  # fmt: skip
        rows.append(f"| {tasks} | {batch_files} | {cpu:.1f} | {wall:.1f} | {cpu / 200:.2f} |")
    rows.append("")
    rows.append("Deployed, each mapped task is a process of its own: one task a file pays a process start (Python, Airflow, the pipeline's imports) per file, a batch pays one per batch.")  # fmt: skip
    write_section("Small files", "\n".join(rows))
    print("\n".join(rows))
    shutil.rmtree(WORK, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

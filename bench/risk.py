"""Risk report benchmark: the gold risk report on one generated month of 10 M rows, against
that month's ingest.

    python bench/risk.py                        # 10 M rows (make bench)
    BENCH_RISK_ROWS=1000000 python bench/risk.py   # a quick run

The month is generated (canonical CSV, one month, 1% bad rows) and ingested once by the real
command (`python -m pipeline ingest`), then `python -m pipeline risk-report --month` runs twice
in fresh processes, with and without the what-if generalisation; each is measured for CPU
seconds (user + sys), wall seconds and peak RSS. The ingest's own numbers are measured in the
same way, so the report's share of it is read off one table. Results go to bench/results.md.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from measure import measure_cpu, write_section  # noqa: E402

ROWS = int(os.environ.get("BENCH_RISK_ROWS", "10000000"))
DATA = ROOT / "data"
WORK = DATA / "risk"
MONTH, START, AS_OF = "2025-03", "2025-03-01", "2025-06-01"
#: thresholds that pass (the command exits 1 over one; the measuring is the same either way)
LOOSE = "\n[gold_risk]\nmax_share_below_k = 1.0\nmax_risk = 1.0\n"


def _env(policy: str | None = None) -> dict[str, str]:
    env = {**os.environ, "CDR_STORE": str(WORK / "store"), "CDR_KEYRING": str(WORK / "keyring"),
           "CDR_DATA_DOCS": str(WORK / "docs"), "CDR_SOURCE_TIMEZONE": "UTC"}  # fmt: skip
    if policy is not None:
        path = WORK / f"policy-{len(policy)}.toml"
        default = (ROOT.parent / "pipeline" / "core" / "retention.toml").read_text()
        path.write_text(default + policy)
        env["CDR_RETENTION_POLICY"] = str(path)
    return env


def month_file() -> Path:
    path = DATA / f"risk-month-{ROWS}.csv"
    if not path.exists():
        print(f"generating {ROWS:,} rows of one month ...", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pipeline", "generate", "--format", "canonical_csv",
             "--rows", str(ROWS), "--out", str(path), "--seed", "7", "--start", START,
             "--months", "1"],
            check=True,
        )  # fmt: skip
    return path


def main() -> int:
    path = month_file()
    shutil.rmtree(WORK, ignore_errors=True)
    ingest = [sys.executable, "-m", "pipeline", "ingest", "--as-of", AS_OF,
              "--default-region", "PK", str(path)]  # fmt: skip
    print(f"ingesting {ROWS:,} rows ...", flush=True)
    rows = [("ingest of the month", *measure_cpu(ingest, _env(), WORK / "ingest")[:3])]
    report: dict = {}  # type: ignore[type-arg]
    policies = {"risk report": LOOSE,
                "risk report with the what-if generalisation": LOOSE + "generalise_below_users = 5\n"}  # fmt: skip
    for label, policy in policies.items():
        cmd = [sys.executable, "-m", "pipeline", "risk-report", "--month", MONTH, "--json"]
        cpu, wall, peak, out = measure_cpu(cmd, _env(policy), WORK / label.replace(" ", "-"))
        report = report or json.loads(out)
        rows.append((label, cpu, wall, peak))
        print(f"{label}: {cpu:.1f} CPU-s, {wall:.1f} s, {peak / 2**20:.0f} MiB", flush=True)
    ingest_cpu = rows[0][1]
    table = [
        "| step | CPU s | wall s | peak RSS | CPU vs the ingest |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, cpu, wall, peak in rows:
        table.append(f"| {label} | {cpu:.1f} | {wall:.1f} | {peak / 2**20:.0f} MiB | {cpu / ingest_cpu:.1%} |")  # fmt: skip
    m = report["as_stored"]["measures"]
    below = sorted(m["share_below"].items(), key=lambda kv: int(kv[0]))
    shares = ", ".join(f"<{k}: {float(v):.1%}" for k, v in below)
    text = "\n".join([
        f"## Gold risk report on one month of {ROWS:,} rows",
        "",
        f"`python bench/risk.py` on {platform.node()} ({os.cpu_count()} cores): one generated month "
        "(canonical CSV, `2025-03`) ingested, then `risk-report --month` in fresh processes.",
        "",
        *table,
        "",
        f"What it found with the default granularity (hour, 10 s): {m['records']:,} records in "
        f"{m['classes']:,} classes; records in classes smaller than k: {shares}; highest prosecutor "
        f"risk {m['max_risk']:.3f}, average {m['average_risk']:.4f}.",
    ])  # fmt: skip
    write_section("risk", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

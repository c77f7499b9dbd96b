"""`make demo-s3` (`python -m cdr_airflow.demo_s3`): `make demo` against S3, on this machine.

moto's S3 server runs on 127.0.0.1 with two buckets as production has them: a versioned data
bucket (landing, silver, gold, vault, quarantine, seals, audit, Data Docs) and an Object Lock
bucket for bronze (the sealed originals, locked). The demo's files are dropped into landing/,
`cdr_ingest` runs under Airflow, then a retention run purges what is due today (the late
delivery: its file key, its quarantined rows, its original). It ends by listing every version
and delete marker left under what was purged (none: a purge on a versioned bucket deletes every
version), and the `aws s3api` commands that show the same on a real bucket. An original still
under Object Lock (locked when it arrived, until a year after its arrival month ends) is named
instead: its bytes stay until the lock ends, unreadable, since the key that opens them is gone.

Everything starts fresh (moto keeps its buckets in memory; the keyring and Airflow's database
are under `$CDR_HOME/demo-s3/`), so it can be run again at will.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from pipeline.core import layout

ROOT = Path(__file__).resolve().parent.parent
DATA_BUCKET, BRONZE_BUCKET = "cdr-demo-data", "cdr-demo-bronze"
DATA_PREFIX = "cdr/"  # the store's folder in the data bucket (CDR_STORE=s3://cdr-demo-data/cdr)
BAD_FILE = layout.landing_key("operator-b", "truncated-upload.bin")
DEMO_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "demo",
    "AWS_SECRET_ACCESS_KEY": "demo-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def buckets(endpoint: str) -> None:
    """The versioned data bucket and the Object Lock bronze bucket."""
    from pipeline.core.store import s3_client

    client = s3_client(endpoint)
    client.create_bucket(Bucket=DATA_BUCKET)
    client.put_bucket_versioning(Bucket=DATA_BUCKET, VersioningConfiguration={"Status": "Enabled"})
    client.create_bucket(Bucket=BRONZE_BUCKET, ObjectLockEnabledForBucket=True)


def demo_env(endpoint: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDR_", "AIRFLOW"))}
    env.update(
        {
            "CDR_HOME": str(home),
            "CDR_STORE": f"s3://{DATA_BUCKET}/{DATA_PREFIX.rstrip('/')}",
            "CDR_BRONZE_STORE": f"s3://{BRONZE_BUCKET}",
            "CDR_BRONZE_LOCK": "true",
            "CDR_S3_ENDPOINT_URL": endpoint,
            "CDR_DATA_DOCS": f"s3://{DATA_BUCKET}/data_docs",
            "CDR_KEYRING": str(home / "keyring"),
            "CDR_DEFAULT_REGION": os.environ.get("CDR_DEFAULT_REGION") or "PK",
            "CDR_SOURCE_TIMEZONE": "UTC",
            "CDR_LANDING_SETTLE_SECONDS": "0",
            **DEMO_CREDENTIALS,
            "AIRFLOW_HOME": str(home / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        }
    )
    return env


def step(
    env: dict[str, str], title: str, *command: str, ok: tuple[int, ...] = (0,), show: bool = True
) -> str:
    """Run one step of the demo, its output shown; a status outside `ok` stops the demo."""
    print(f"\n== {title}", flush=True)
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    shown = "\n".join(
        line for line in done.stdout.splitlines() if not line.startswith(("20", "[20"))
    )
    if show and shown.strip():
        print(shown)
    if done.returncode not in ok:
        print(done.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"{title}: failed ({done.returncode})")
    return done.stdout


def listing(endpoint: str, bucket: str, prefix: str = "") -> list[tuple[str, str]]:
    """(key, `versions` or `delete_markers`) for every object version and delete marker under
    `prefix`, as S3's list-object-versions gives them."""
    from pipeline.core.store import s3_client

    pages = s3_client(endpoint).get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix)  # fmt: skip
    return [
        (item["Key"], kind)
        for page in pages
        for kind, name in (("versions", "Versions"), ("delete_markers", "DeleteMarkers"))
        for item in page.get(name, [])
    ]


def versions(endpoint: str, bucket: str, prefix: str) -> dict[str, int]:
    """How many object versions and delete markers are left under `prefix`."""
    kinds = Counter(kind for _, kind in listing(endpoint, bucket, prefix))
    return {"versions": kinds["versions"], "delete_markers": kinds["delete_markers"]}


def all_versions(endpoint: str, bucket: str) -> dict[str, int]:
    """Every key of the bucket, and how many versions and delete markers it has."""
    return dict(Counter(key for key, _ in listing(endpoint, bucket)))


def purged_keys(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(bucket, key or prefix) of everything a retention report says it purged: each file's
    deleted objects (its original in bronze, its quarantined rows), each month's silver and
    vault partitions."""
    keys: list[tuple[str, str]] = []
    for entry in report.get("files", []):
        for key in entry.get("deleted", []):
            bronze = str(key).startswith(layout.BRONZE)
            keys.append((BRONZE_BUCKET, key) if bronze else (DATA_BUCKET, DATA_PREFIX + key))
    for month in report.get("months", []):
        y, m = (int(part) for part in str(month["month"]).split("-"))
        for tier in layout.IDENTIFYING_MONTH_TIERS:  # silver, vault, the token index
            keys.append((DATA_BUCKET, DATA_PREFIX + layout.month_prefix(tier, (y, m))))
    return keys


def retention(env: dict[str, str], title: str, args: list[str]) -> dict[str, Any]:
    """A retention run, its summary shown: its report."""
    from pipeline.report import retention_summary

    out = step(env, title, sys.executable, "-m", "pipeline", "retention", "--json", *args, show=False)  # fmt: skip
    report: dict[str, Any] = json.loads(out)
    print(retention_summary(report))
    return report


def add_months(day: dt.date, months: int) -> dt.date:
    from pipeline.core.dates import add_months as shift

    y, m = shift(day.year, day.month, months)
    return dt.date(y, m, min(day.day, 28))


def main(argv: list[str] | None = None) -> int:
    from moto.server import ThreadedMotoServer

    parser = argparse.ArgumentParser(prog="python -m cdr_airflow.demo_s3", description=__doc__)
    parser.add_argument("--records", type=int, default=20_000)
    args = parser.parse_args(argv)
    for name, value in DEMO_CREDENTIALS.items():  # moto takes any; real ones are never used
        os.environ[name] = value
    home = Path(os.environ.get("CDR_HOME") or ROOT / "var").resolve() / "demo-s3"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        buckets(endpoint)
        print(f"S3 (moto) on {endpoint}: s3://{DATA_BUCKET} (versioned), s3://{BRONZE_BUCKET} (Object Lock)")  # fmt: skip
        env = demo_env(endpoint, home)
        py, airflow = sys.executable, str(Path(sys.executable).with_name("airflow"))
        step(env, "files dropped into landing/", py, "-m", "pipeline", "demo", "--records", str(args.records), "--landing-only")  # fmt: skip
        step(env, "Airflow's database", airflow, "db", "migrate")
        step(env, "the store pool", airflow, "pools", "set", "cdr_store", "8", "S3 calls")
        now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
        # The by-design unreadable upload fails its task, and so the run: the report checks that
        # nothing else failed.
        step(env, "cdr_ingest under Airflow", airflow, "dags", "test", "cdr_ingest", now, ok=(0, 1))  # fmt: skip
        step(env, "what the run did", py, "-m", "cdr_airflow.demo_report", "--expect-failed", BAD_FILE)  # fmt: skip
        step(env, "the store", py, "-m", "pipeline", "summary")
        before = {b: all_versions(endpoint, b) for b in (DATA_BUCKET, BRONZE_BUCKET)}
        later = add_months(dt.date.today(), 13)
        reports = [
            retention(env, "retention, as of today", []),
            # A year on, every month of the demo is due: shown now, and said in the audit log.
            retention(env, f"retention as of {later} (13 months on, recorded as such in the audit log)",
                      ["--as-of", later.isoformat(), "--allow-future-as-of", "--confirm"]),
        ]  # fmt: skip
        print("\n== what each purge left behind (every version and delete marker)")
        left = 0
        locked = [x for r in reports for x in r.get("left_locked", [])]
        purged = [k for r in reports for k in purged_keys(r)]
        for bucket, key in purged:
            found = versions(endpoint, bucket, key)
            lock = next((x for x in locked if f"s3://{bucket}/{key} " in x), None)
            if lock:  # Object Lock keeps the bytes; the file key that opens them is destroyed
                print(f"  {lock}: unreadable (its key destroyed), deleted by the first run after")  # fmt: skip
                continue
            had = sum(n for k, n in before[bucket].items() if k.startswith(key))
            left += sum(found.values()) + (had == 0)  # a purge of nothing proves nothing
            print(f"  s3://{bucket}/{key}: {found['versions']} versions, {found['delete_markers']} delete markers ({had} before)")  # fmt: skip
        if not purged:
            print("  nothing was due today")
        shown = next((k for b, k in purged if b == DATA_BUCKET and k.endswith("/")), DATA_PREFIX)
        print(
            "\nOn a real bucket, the same with the AWS CLI:\n"
            f"  aws s3api list-object-versions --bucket {DATA_BUCKET} --prefix {shown}\n"
            f"  aws s3api list-object-versions --bucket {BRONZE_BUCKET} --prefix {layout.BRONZE}\n"
            f"  aws s3api get-object-retention --bucket {BRONZE_BUCKET} --key {layout.BRONZE}<source>/<sha256>.enc"
        )
        if left:
            print(f"\nFAILED: {left} versions or delete markers left under purged keys, or a purge of nothing", file=sys.stderr)  # fmt: skip
            return 1
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())

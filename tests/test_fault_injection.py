"""`kill -9` of real ingest and retention processes, at step boundaries and at random moments,
then a rerun: the store ends exactly as after one clean run, with no temporary object and no
staging left anywhere."""

from __future__ import annotations

import datetime as dt
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from pipeline.core import staging
from pipeline.records.synth import generate
from tests.conftest import ROOT
from tests.helpers import read_tier

pytestmark = pytest.mark.slow  # a fault suite: kill -9 at every step

ROWS = 60_000
AS_OF = "2025-06-15"
RETAIN_AS_OF = "2026-07-01"  # identifiers of every month purged, gold kept


class Run:
    """One store, keyring and temporary folder, driven by `python -m pipeline` processes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.tmp.mkdir(parents=True)
        self.env = {
            **os.environ,
            "CDR_STORE": str(root / "store"),
            "CDR_KEYRING": str(root / "keys"),
            "CDR_DATA_DOCS": str(root / "docs"),
            "CDR_DEFAULT_REGION": "PK",
            "CDR_BATCH_ROWS": "15000",
            "TMPDIR": str(self.tmp),
        }

    @property
    def store(self) -> Path:
        return self.root / "store"

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline", *args],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def complete(self, *args: str) -> None:
        assert self.start(*args).wait(timeout=300) == 0, args

    def kill_when(self, args: tuple[str, ...], ready: Callable[[], bool], limit: float) -> bool:
        """Start a run and `kill -9` it as soon as `ready()` (or after `limit` seconds);
        False if it finished first."""
        proc = self.start(*args)
        deadline = time.monotonic() + limit
        while proc.poll() is None:
            if ready() or time.monotonic() > deadline:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.005)
        return False

    def exists(self, pattern: str) -> Callable[[], bool]:
        return lambda: any(True for _ in self.store.glob(pattern))

    def tiers(self) -> dict[str, list[tuple[object, ...]]]:
        """Every tier's records as sorted rows (encrypted values, which differ by nonce, left
        out), and the store's keys outside the audit log."""
        from pipeline.core.store import LocalStore

        store = LocalStore(self.store)
        out: dict[str, list[tuple[object, ...]]] = {}
        for prefix in ("silver/", "gold/", "vault/", "quarantine/rows/", "proofs/"):
            frame = read_tier(store, prefix)
            keep = [c for c, t in frame.schema.items() if t != pl.Binary or prefix == "proofs/"]
            out[prefix] = sorted(frame.select(keep).rows(), key=repr) if len(frame) else []
        out["keys"] = sorted(
            (o.key,)
            for o in store.list("")
            if not o.key.startswith(("audit/", "retention/", "seals/"))
        )
        return out

    def leftovers(self) -> list[str]:
        partial = [str(p) for p in self.store.rglob(".tmp-*")]
        return partial + [str(p) for p in staging.leftovers(self.tmp)]


def _zipped(path: Path) -> Path:
    """The file as two members of a zip, each with the header (a daily export, zipped)."""
    header, *rows = path.read_bytes().splitlines(keepends=True)
    half = len(rows) // 2
    target = path.with_suffix(".zip")
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("part-1.csv", header + b"".join(rows[:half]))
        archive.writestr("part-2.csv", header + b"".join(rows[half:]))
    return target


@pytest.mark.parametrize("wrap", ["plain", "zip"])
def test_kill_9_anywhere_then_rerun_equals_one_clean_run(tmp_path: Path, wrap: str) -> None:
    """Also for a compressed delivery, killed while it is being decompressed."""
    g = generate("canonical_csv", tmp_path / "cdrs.csv", ROWS, bad_share=0.01,
                 start=dt.date(2025, 3, 1))  # fmt: skip
    path = g.path if wrap == "plain" else _zipped(g.path)
    started = time.monotonic()
    ingest = ("ingest", "--as-of", AS_OF, str(path))
    retention = ("retention", "--as-of", RETAIN_AS_OF, "--confirm")  # every month at once

    clean = Run(tmp_path / "clean")
    clean.complete(*ingest)
    clean_took = time.monotonic() - started
    shutil.copytree(clean.root / "keys", tmp_path / "clean-keys")
    clean_ingested = clean.tiers()
    clean.complete(*retention)
    clean_retained = clean.tiers()

    crashed = Run(tmp_path / "crashed")
    # The same keys (token key, file key, month keys) as the clean run, so that tokens and
    # commitments can be compared value for value.
    shutil.copytree(tmp_path / "clean-keys", crashed.root / "keys")
    rng = random.Random(10)
    boundaries = [
        crashed.exists("seals/*.seal.json"),  # sealed, not yet in bronze
        crashed.exists("bronze/*/*.enc"),  # in bronze, parsing
        crashed.exists("**/.tmp-*"),  # an object half-written
        crashed.exists("silver/cdr/*/*/part-*.parquet"),  # publishing
    ]
    if wrap == "zip":  # decompressing, not yet sealed
        boundaries.insert(0, lambda: any(crashed.tmp.glob("cdr-unpack-*/part-*")))
    kills = sum(crashed.kill_when(ingest, ready, clean_took) for ready in boundaries)
    for _ in range(2):  # and at random moments of the run
        kills += crashed.kill_when(ingest, lambda: False, rng.uniform(0.3, 0.9) * clean_took)
    assert kills >= len(boundaries)
    crashed.complete(*ingest)
    assert crashed.leftovers() == []
    assert crashed.tiers() == clean_ingested

    month_key_gone = lambda: not any((crashed.root / "keys").glob("**/month-2025-03*"))  # noqa: E731
    kills = crashed.kill_when(retention, month_key_gone, 30)
    kills += crashed.kill_when(retention, crashed.exists("retention/purged/2025-03.json"), 30)
    kills += crashed.kill_when(retention, lambda: False, rng.uniform(0.2, 1.5))
    crashed.complete(*retention)
    assert crashed.leftovers() == []
    assert crashed.tiers() == clean_retained
    assert not list(crashed.store.glob("bronze/**/*.enc"))
    print(f"clean ingest {clean_took:.1f} s; whole test {time.monotonic() - started:.1f} s")

"""`kill -9` while publishing leaves a partial object and local staging behind; the next ingest
or retention run removes them, counts them, and retention's verification sees any it missed."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from pipeline.cli import main as cli
from pipeline.core import staging
from pipeline.core.config import Settings
from pipeline.core.resources import Resources
from pipeline.flows.retention import RetentionError, RetentionRequest, run_retention
from pipeline.records.synth import generate
from tests.conftest import ROOT

# Dies with SIGKILL at the moment a silver part has been copied beside its key but not yet
# renamed into place: the exact state `kill -9` during publishing leaves.
KILLED_WHILE_PUBLISHING = textwrap.dedent(
    """
    import os, signal, sys
    import pipeline.core.store as store
    real_replace = os.replace
    def replace(src, dst):
        if "/silver/cdr/" in str(dst):
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst)
    store.os.replace = replace
    from pipeline.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def killed_ingest(path: Path, env: dict[str, str], tmpdir: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            KILLED_WHILE_PUBLISHING,
            "ingest",
            "--as-of",
            "2025-06-15",
            str(path),
        ],
        cwd=ROOT,
        env={**os.environ, **env, "TMPDIR": str(tmpdir), "CDR_DEFAULT_REGION": "PK"},
        capture_output=True,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]


def partial_objects(store_root: Path) -> list[Path]:
    return sorted(store_root.rglob(".tmp-*"))


@pytest.fixture
def tmpdir_(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary folder of this test's own, for the killed run and for the sweeps."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_a_run_killed_while_publishing_leaves_nothing_after_the_next_ingest(
    local_env: dict[str, str], tmp_path: Path, tmpdir_: Path
) -> None:
    g = generate("canonical_csv", tmp_path / "in.csv", 3000, start=dt.date(2025, 3, 1))
    killed_ingest(g.path, local_env, tmpdir_)
    store_root = Path(local_env["CDR_STORE"])
    left = partial_objects(store_root)
    assert left and "silver" in str(left[0]) and left[0].stat().st_size > 0
    assert staging.leftovers(tmpdir_), "the killed run's staging is still there"

    assert cli(["ingest", "--as-of", "2025-06-15", "--default-region", "PK", str(g.path)]) == 0
    assert partial_objects(store_root) == []
    assert staging.leftovers(tmpdir_) == []


def test_retention_sweeps_partial_objects_and_fails_loudly_on_any_it_cannot(
    local_env: dict[str, str], tmp_path: Path, tmpdir_: Path
) -> None:
    res = Resources.from_settings(Settings.from_env(local_env))
    g = generate("canonical_csv", tmp_path / "in.csv", 3000, start=dt.date(2025, 3, 1))
    killed_ingest(g.path, local_env, tmpdir_)
    store_root = Path(local_env["CDR_STORE"])
    assert partial_objects(store_root)
    report = run_retention(res, RetentionRequest(dt.date(2040, 1, 1)))
    assert report.swept["temporary_objects"] >= 1 and report.swept["staging"] >= 1
    assert report.verified and partial_objects(store_root) == []

    # One a sweep cannot remove (a live writer's, in appearance) is named by the verification.
    month = store_root / "silver/cdr/year=2025/month=03"
    month.mkdir(parents=True, exist_ok=True)
    stuck = month / f".tmp-{staging.owner_tag()}stuck"
    stuck.write_bytes(b"PAR1 partial")
    real = res.store.stale_temporary
    res.store.sweep_temporary = lambda older_than=staging.STALE_AFTER: 0  # type: ignore[method-assign]
    res.store.stale_temporary = lambda older_than=staging.STALE_AFTER: [  # type: ignore[method-assign]
        str(stuck.relative_to(store_root)),
        *real(older_than),
    ]
    with pytest.raises(RetentionError, match="temporary object left"):
        run_retention(res, RetentionRequest(dt.date(2040, 1, 1)))

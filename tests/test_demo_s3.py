"""`make demo-s3`: the demo against moto's S3 (a versioned data bucket, an Object Lock bucket
for bronze) passes, and every purge it makes leaves no version and no delete marker behind."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.airflow, pytest.mark.s3]


def test_make_demo_s3_purges_leave_nothing_behind(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDR_", "AIRFLOW"))}
    done = subprocess.run(
        ["make", "-s", "demo-s3", "RECORDS=1500", f"CDR_HOME={tmp_path}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "s3://cdr-demo-data (versioned), s3://cdr-demo-bronze (Object Lock)" in out
    assert "failed unexpectedly" not in out + done.stderr
    # Each month's identifiers purged a year on: silver and vault gone, every version.
    months = set(re.findall(r"^(\d{4}-\d\d)  \d{4}-\d\d-\d\d ", out, flags=re.M))  # the purge table
    assert len(months) >= 2, out[-3000:]  # two or three: none on the 1st of a month, yet
    gone = re.findall(r"s3://cdr-demo-data/cdr/(silver/cdr|vault|index/tokens)/year=(\d{4})/month=(\d\d)/: 0 versions, 0 delete markers \(\d+ before\)", out)  # fmt: skip
    assert {f"{y}-{m}" for _, y, m in gone} == months and len(gone) == 3 * len(months), out[-3000:]
    assert not re.search(r": [1-9]\d* versions|, [1-9]\d* delete markers", out)
    assert "aws s3api list-object-versions --bucket cdr-demo-data" in out
    assert (tmp_path / "demo-s3" / "keyring").is_dir()  # nothing of it in the project's var/

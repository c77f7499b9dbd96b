"""The README guides: at most about 250 lines, in the order a newcomer needs, and every command
of its operator recipes runs as written (in order, on a temporary store), with what a person
does in the UI between them done here through the same function the DAG calls."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

README = ROOT / "README.md"
SECTIONS = ["What it does", "Run the UI", "Operator recipes", "S3, KMS, lineage and metrics", "Performance", "Documentation"]  # fmt: skip


def recipes() -> dict[str, list[str]]:
    """Each numbered recipe's fenced shell blocks, in order."""
    text = README.read_text().split("\n## Operator recipes", 1)[1].split("\n## ", 1)[0]
    found: dict[str, list[str]] = {}
    for part in re.split(r"\n### ", text)[1:]:
        title = part.splitlines()[0]
        found[title] = re.findall(r"```sh\n(.*?)```", part, flags=re.S)
    return found


def test_the_readme_is_short_and_in_order() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    assert headings == SECTIONS
    assert list(recipes()) == [
        "1. Monitor ingest",
        "2. A law-enforcement export, approved by a second person",
        "3. A data subject request",
    ]
    for link in re.findall(r"\]\(((?:docs|bench|docker)/[^)]+)\)", text):
        assert (ROOT / link).is_file(), link


def _approve_in_the_ui(case: str) -> None:
    """What the approver does in the UI: the DAG's carry-out with the approver's answer."""
    from pipeline.core.config import Settings
    from pipeline.core.resources import Resources
    from pipeline.flows.case_request import Approval, carry_out

    res = Resources.from_settings(Settings.from_env())
    carry_out(res, Approval(case, "export", True, approved_by="approver", triggered_by="officer"))


@pytest.mark.slow
def test_every_recipe_command_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDR_")}
    env |= {
        "CDR_HOME": str(tmp_path / "var"),
        "CDR_STORE": str(tmp_path / "var" / "store"),
        "CDR_KEYRING": str(tmp_path / "var" / "keyring"),
        "CDR_DATA_DOCS": str(tmp_path / "var" / "data_docs"),
        "CDR_LANDING_SETTLE_SECONDS": "0",
    }
    for key, value in env.items():
        if key.startswith("CDR_"):
            monkeypatch.setenv(key, value)
    work = tmp_path / "work"
    work.mkdir()
    exported = ""
    ran = 0
    outputs = []
    for title, blocks in recipes().items():
        for n, block in enumerate(blocks):
            script = block.replace(".venv/bin/python", shlex.quote(sys.executable))
            done = subprocess.run(
                ["bash", "-c", f"set -euo pipefail\n{exported}{script}"],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert done.returncode == 0, f"{title}, block {n + 1}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"  # fmt: skip
            assert "Traceback" not in done.stderr, done.stderr
            outputs.append(done.stdout)
            exported += "".join(line + "\n" for line in block.splitlines() if line.startswith("export "))  # fmt: skip
            for line in exported.splitlines():
                for name, value in re.findall(r"(\w+)=(\S+)", line):
                    monkeypatch.setenv(name, value)
            ran += block.count(".venv/bin/python")
            if "request list" in block:  # the officer triggers cdr_le_export; the approver approves
                _approve_in_the_ui("LE-2026-001")
    assert ran >= 14
    shown = "\n".join(outputs)
    assert re.search(r"ok\s+[1-9][\d,]* records match their original seals", shown), shown[-3000:]
    assert "VERDICT: VERIFIED (case LE-2026-001)" in shown
    assert "89821383" not in shown  # the subscriber's number is never printed back
    assert (work / "package").is_dir() and list((work / "answer").glob("*.cdrs"))


def test_every_setting_the_code_reads_is_in_the_configuration_reference() -> None:
    from tests.test_docker import NOT_DEPLOYED, settings_read_by_code

    reference = (ROOT / "docs" / "configuration.md").read_text()
    missing = sorted(s for s in settings_read_by_code() | set(NOT_DEPLOYED) if f"`{s}`" not in reference)  # fmt: skip
    assert missing == []

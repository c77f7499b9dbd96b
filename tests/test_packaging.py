"""The project's own contract: README commands, CI entry point, pins, and the image definition."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def test_readme_starts_with_the_two_commands() -> None:
    head = (ROOT / "README.md").read_text().split("\n## ", 1)[0]
    commands = re.findall(r"^\s*(make \w+)", head, flags=re.M)
    assert commands[:2] == ["make demo", "make test"]


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, flags=re.M)


def _pins(name: str) -> dict[str, str]:
    pins = {}
    for line in (ROOT / name).read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+(?:\[[^\]]*\])?)==([\w.]+)", line.strip())
        if m:
            pins[re.sub(r"\[.*\]", "", m.group(1)).lower().replace("_", "-")] = m.group(2)
    return pins


def test_every_direct_requirement_is_pinned_and_agrees_with_the_constraints() -> None:
    for name in ("requirements.txt", "requirements-dev.txt"):
        for line in (ROOT / name).read_text().splitlines():
            if line.strip() and not line.startswith(("#", "-r")):
                assert "==" in line and not re.search(r"[<>~]", line), f"{name}: {line}"
    direct = _pins("requirements.txt") | _pins("requirements-dev.txt")
    constraints = _pins("constraints.txt")
    assert {"apache-airflow", "polars", "great-expectations", "moto", "celery"} <= set(direct)
    for name, version in direct.items():
        assert constraints.get(name) == version, name
    assert direct["apache-airflow"].startswith("3.3.")
    assert direct["great-expectations"].startswith("1.24.")
    assert direct["polars"].startswith("2.")


def test_dockerfile_uses_the_pinned_airflow_and_copies_what_exists() -> None:
    text = (ROOT / "docker" / "Dockerfile").read_text()
    base = re.search(r"^FROM apache/airflow:([\d.]+)-python3\.11$", text, flags=re.M)
    assert base and base.group(1) == _pins("requirements.txt")["apache-airflow"]
    for line in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", text, flags=re.M):
        for src in line.split():
            assert (ROOT / src).exists(), src


def _build(tmp: Path) -> Path:
    """The package as its wheel lays it out: setuptools' own build of the packages with their
    package data (`build_py`, what `bdist_wheel` zips) and metadata (`egg_info`), from a copy of
    the sources, so nothing is written into the tree."""
    src = tmp / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pipeline", "cdr_airflow"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", src)
    site, meta = tmp / "site", tmp / "meta"
    meta.mkdir()
    subprocess.run(
        [sys.executable, "-c", "from setuptools import setup; setup()", "-q",
         "build_py", "--build-lib", str(site), "egg_info", "--egg-base", str(meta)],
        cwd=src, check=True, capture_output=True,
    )  # fmt: skip
    return site


@pytest.mark.slow
def test_the_package_carries_its_expectations_and_validates_with_them(tmp_path: Path) -> None:
    site = _build(tmp_path)
    suites = site / "pipeline" / "expectations"
    assert {p.name for p in suites.glob("*.json")} == {
        "silver.json",
        "silver_identifiers.json",
        "gold.json",
        "original_form.json",
    }
    assert (site / "pipeline" / "core" / "retention.toml").is_file()
    scripts = next((tmp_path / "meta").glob("*.egg-info")) / "entry_points.txt"
    assert "cdr-pipeline = pipeline.cli:main" in scripts.read_text()

    elsewhere = tmp_path / "elsewhere"  # not the source tree: only the built package is importable
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "CDR_EXPECTATIONS"} | {
        "PYTHONPATH": str(site),
        "CDR_STORE": str(tmp_path / "store"),
        "CDR_KEYRING": str(tmp_path / "keys"),
        "CDR_DATA_DOCS": str(tmp_path / "docs"),
        "CDR_DEFAULT_REGION": "PK",
    }
    boot = (
        "import sys; sys.argv[0] = 'cdr-pipeline'; from pipeline.cli import main; sys.exit(main())"
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", boot, *args], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip

    where = subprocess.run(
        [sys.executable, "-c", "import pipeline.records.quality as q; print(q.suites_dir())"],
        cwd=elsewhere, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert Path(where.stdout.strip()) == suites
    gen = ["generate", "--format", "canonical_csv", "--rows", "300", "--bad-share", "0"]
    assert run(*gen, "--out", str(tmp_path / "a.csv")).returncode == 0
    assert run(*gen, "--seed", "2", "--out", str(tmp_path / "b.csv")).returncode == 0
    ok = run("ingest", str(tmp_path / "a.csv"))
    assert ok.returncode == 0 and " ingested " in ok.stdout, ok.stderr
    assert not (tmp_path / "docs" / "index.html").exists()  # results stored, rendered by `docs`
    results = len(list((tmp_path / "docs" / "results").rglob("*.json")))
    docs = run("docs")
    assert results and docs.returncode == 0, docs.stderr
    assert f" {results} new result(s) rendered" in docs.stdout
    assert (tmp_path / "docs" / "index.html").exists()

    # The installed suites are the ones applied: one that no file can pass refuses the next.
    gold = json.loads((suites / "gold.json").read_text())
    gold["expectations"].append(
        {"type": "expect_column_values_to_be_null", "kwargs": {"column": "record_id"}}
    )
    (suites / "gold.json").write_text(json.dumps(gold))
    refused = run("ingest", str(tmp_path / "b.csv"))
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "refused by data expectations" in refused.stderr and "record_id" in refused.stderr


def test_the_package_builds_without_deprecation_banners(tmp_path: Path) -> None:
    """Installing printed three setuptools banners (`project.license` as a table): the build
    backend's own output is read for any deprecation."""
    src = tmp_path / "src"  # a copy: the build writes build/ and egg-info beside its sources
    for part in ("pipeline", "cdr_airflow"):
        shutil.copytree(ROOT / part, src / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", src / "pyproject.toml")
    # the pinned setuptools of .venv, not whatever the index has newest
    build = ["wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(src)]
    done = subprocess.run(
        [sys.executable, "-m", "pip", *build],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    output = done.stdout + done.stderr
    assert "deprecated" not in output.lower(), output[-3000:]
    assert list(tmp_path.glob("cdr_pipeline-*.whl"))

"""The import rules the layout of `pipeline/` promises, checked on the source itself.

- Use cases (ingest, retention, export, verify, subject requests, replay, risk reports,
  arrivals) depend on the kernel and on building blocks, never on each other; holds are a shared service any of them may use.
  A replay is a second parse of a sealed file, so it runs ingest's parse (`REPARSES`).
- `pipeline/` never imports Airflow: the DAGs call the library, not the other way round.
- The recipient's verifier loads no flow and no Great Expectations.
- Every prefix, object key and data-key name is spelled in `layout` alone.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = ROOT / "pipeline"
#: The use cases, by the last part of their module name.
FLOWS = {"ingest", "retention", "export", "verify", "subject", "replay", "risk", "arrivals"}
#: the one crossing allowed: a replay parses a sealed original again through ingest's own parse
REPARSES = {("replay", "ingest")}
#: String starts that are object prefixes or data-key names: only `layout` may spell them.
RESERVED = (
    "landing/", "seals/", "bronze/", "silver/", "vault/", "gold/", "quarantine/", "proofs/",
    "holds/", "exports/", "audit/", "retention/", "requests/", "month-", "file-", "hold-",
)  # fmt: skip


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PIPELINE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _flow(module: str) -> str | None:
    last = module.rsplit(".", 1)[-1]
    return last if last in FLOWS else None


def test_no_use_case_imports_another() -> None:
    modules = _modules()
    crossings = []
    for name, path in modules.items():
        mine = _flow(name)
        if mine is None:
            continue
        for imported in _imports(path):
            theirs = _flow(imported) if imported in modules else None
            if theirs is not None and theirs != mine and (mine, theirs) not in REPARSES:
                crossings.append(f"{name} imports {imported}")
    assert crossings == []


def test_the_import_check_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from pipeline.flows.retention import run_retention\n")
    assert {_flow(m) for m in _imports(sample)} >= {"retention"}


def test_the_library_never_imports_airflow() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in _modules().values()
        if any(m == "airflow" or m.startswith("airflow.") for m in _imports(path))
    ]
    assert offenders == []


def test_importing_the_recipients_verifier_loads_no_flow_and_no_great_expectations() -> None:
    code = (
        "import json, sys; import pipeline.proof.verify_export; "
        "print(json.dumps(sorted(m for m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = json.loads(out.stdout)
    flows = [m for m in loaded if m.startswith("pipeline") and _flow(m)]
    assert flows == []
    assert not any(m.split(".")[0] == "great_expectations" for m in loaded)
    assert not any(
        m in {"pipeline.flows.holds", "pipeline.records.sources", "pipeline.records.quality"}
        for m in loaded
    )


def _reserved_literals(path: Path, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    hits = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
            and node.value.startswith(RESERVED)
        ):
            hits.append(f"{path.relative_to(root)}:{node.lineno}: {node.value!r}")
    return hits


@pytest.mark.parametrize("folder", ["pipeline", "dags", "cdr_airflow"])
def test_no_prefix_or_key_name_is_spelled_outside_the_layout(folder: str) -> None:
    hits = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        if path.name == "layout.py":
            continue
        hits += _reserved_literals(path)
    assert hits == []


def test_the_literal_check_can_fail(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text('"""Docstrings may name silver/cdr/."""\nKEY = f"file-{1}"\n')
    assert [h.split(": ", 1)[1] for h in _reserved_literals(sample, tmp_path)] == ["'file-'"]


def test_parsing_the_dag_files_loads_neither_polars_nor_great_expectations() -> None:
    """The dag-processor parses every DAG file again and again: the engines load in the tasks
    that use them, never at parse time."""
    dags = sorted(p.stem for p in (ROOT / "dags").glob("*.py") if not p.stem.startswith("_"))
    code = (
        "import json, sys; sys.path.insert(0, 'dags'); "
        + "; ".join(f"import {d}" for d in dags)
        + "; print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = set(json.loads(out.stdout.splitlines()[-1]))
    assert {"cdr_ingest", "airflow"} <= loaded  # the DAG files really were imported
    assert not loaded & {"polars", "great_expectations", "pyarrow"}


def test_an_ingest_process_never_imports_great_expectations(tmp_path: Path) -> None:
    """GX (seconds of imports) renders Data Docs in its own step; an ingest writes its
    results as GX's JSON without it. Seen by `-X importtime`, which lists every import."""
    import datetime as dt

    from pipeline.records.synth import generate

    g = generate("canonical_csv", tmp_path / "calls.csv", 300, start=dt.date(2025, 3, 1))
    env = {**os.environ, "CDR_STORE": str(tmp_path / "store"), "CDR_KEYRING": str(tmp_path / "keys"),
           "CDR_DATA_DOCS": str(tmp_path / "docs"), "CDR_DEFAULT_REGION": "PK"}  # fmt: skip
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "pipeline", "ingest", "--as-of", "2025-06-01", str(g.path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0 and " ingested " in run.stdout, run.stderr[-2000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")]  # fmt: skip
    assert "polars" in imported  # the listing is real
    assert not [m for m in imported if m.split(".")[0] == "great_expectations"]
    assert list((tmp_path / "docs" / "results").rglob("*.json"))  # the results were written
    # and the step that renders them does import GX
    docs = subprocess.run([sys.executable, "-X", "importtime", "-m", "pipeline", "docs"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert docs.returncode == 0 and "great_expectations" in docs.stderr
    assert (tmp_path / "docs" / "index.html").exists()

"""The suites evaluated batch by batch give the whole file's verdict, recorded by GX in one shared
Data Docs site; parallel runs never fail because of each other."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from pipeline.core.resources import Resources
from pipeline.core.store import s3_client
from pipeline.flows.ingest import IngestError, ingest_file
from pipeline.records import quality
from pipeline.records.expectations_engine import SuiteError
from pipeline.records.quality import Quality, frame_for_gx, load_suite_json
from pipeline.records.synth import generate
from pipeline.records.tokenise import token
from tests.conftest import ROOT
from tests.helpers import read_tier

SMUGGLED = "call 0300-7654321"
#: the counts GX and the evaluator must agree on
AGREED = ("element_count", "unexpected_count", "missing_count")


def disagreements(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """Expectations on which the evaluator and GX's engine differ (success or counts).

    GX reorders results and gives its expectations ids of its own, so results are paired by
    type and arguments as the suite writes them (but the batch GX adds to them, and with GX's
    bounds read as floats)."""

    def signature(r: dict[str, Any]) -> str:
        cfg = r["expectation_config"]
        kwargs = {k: _as_float(v) for k, v in quality.as_written(cfg).items() if k != "batch_id"}
        return json.dumps([cfg["type"], kwargs], sort_keys=True)

    by_signature = {signature(r): r for r in theirs["results"]}
    out = []
    for a in ours["results"]:
        b = by_signature.get(signature(a))
        same = b is not None and a["success"] == b["success"]
        same = same and all(a["result"].get(k) == b["result"].get(k) for k in AGREED)
        if not same:
            cfg = a["expectation_config"]
            out.append(f"{cfg['type']}({cfg['kwargs'].get('column', '')})")
    return out


def _as_float(value: Any) -> Any:
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _silver(res: Resources, tmp_path: Path, rows: int) -> pl.DataFrame:
    """An ingested file's silver with SMUGGLED in `status` of two rows far apart."""
    g = generate("canonical_csv", tmp_path / "cdr.csv", rows, start=dt.date(2025, 3, 1), months=2)
    ingest_file(res, g.path, as_of=dt.date(2025, 6, 1))
    silver = read_tier(res.store, "silver/").drop("year", "month", strict=False)
    status = silver.get_column("status").to_list()
    status[3] = status[len(silver) - 2] = SMUGGLED
    return silver.with_columns(pl.Series("status", status))


def test_batches_give_gx_verdict_on_the_whole_file_named_by_record_ids(
    res: Resources, tmp_path: Path
) -> None:
    silver = _silver(res, tmp_path, 1500)
    tally = res.quality.tally("silver")
    for part in silver.iter_slices(300):
        tally.add(part)
    ours = quality.result_document(tally)
    theirs = res.quality.gx_validate("silver", frame_for_gx(silver), "record_id")
    assert quality.failures(ours) == ["expect_column_values_to_not_match_regex(status)"]
    assert quality.failures(theirs) == quality.failures(ours)
    assert disagreements(ours, theirs) == []
    (status,) = [r["result"] for r in ours["results"] if not r["success"]]
    assert status["element_count"] == len(silver) and status["unexpected_count"] == 2
    ids = silver.get_column("record_id")
    assert status["partial_unexpected_index_list"] == [
        {"record_id": ids[3]},
        {"record_id": ids[len(silver) - 2]},
    ]
    res.quality.write_result(ours, "batched")
    assert res.quality.render_docs() == 4  # the ingest's three suites, and this result
    pages = list(Path(res.settings.data_docs).rglob("*.html"))
    assert any("batched" in p.read_text() for p in pages)
    assert not [p for p in pages if "7654321" in p.read_text()]


def test_a_missing_column_fails_the_schema_check_and_the_expectations_on_it(
    res: Resources, tmp_path: Path
) -> None:
    silver = _silver(res, tmp_path, 300).drop("units", "route_id")
    tally = res.quality.tally("silver")
    tally.add(silver)
    failed = quality.failures(quality.result_document(tally))
    assert "expect_table_columns_to_match_ordered_list()" in failed
    assert "expect_column_values_to_not_match_regex(route_id)" in failed


def _vault_entries(key: str, numbers: list[str]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "year": [2025] * len(numbers),
            "month": [3] * len(numbers),
            "token": [token("msisdn", n, key, "v1") for n in numbers],
            "kind": ["msisdn"] * len(numbers),
            "identifier": numbers,
        },
        schema_overrides={"year": pl.Int32, "month": pl.Int32},
    )


def test_a_number_not_in_e164_is_refused_before_tokenising(res: Resources) -> None:
    key = res.keyring.token_key("v1")
    tally = res.quality.tally("silver_identifiers", None)
    tally.add(_vault_entries(key, [f"+9230012345{i:02d}" for i in range(5)]))
    tally.add(_vault_entries(key, ["03007654321"]))  # national form: never to be tokenised
    result = quality.result_document(tally)
    assert quality.failures(result) == ["expect_column_values_to_match_regex(identifier)"]
    res.quality.write_result(result, "national")
    res.quality.render_docs()
    pages = Path(res.settings.data_docs).rglob("*.html")
    assert not [p for p in pages if "7654321" in p.read_text()]


def test_a_token_repeated_in_a_later_batch_of_the_vault_is_refused(res: Resources) -> None:
    key = res.keyring.token_key("v1")
    tally = res.quality.tally("silver_identifiers", None)
    tally.add(_vault_entries(key, ["+923001234567", "+923001234568"]))
    tally.add(_vault_entries(key, ["+923001234567"]))
    (unique,) = [r for r in quality.result_document(tally)["results"] if not r["success"]]
    assert unique["expectation_config"]["type"] == "expect_compound_columns_to_be_unique"
    assert unique["result"]["unexpected_count"] == 2  # both occurrences, as GX counts them


def test_an_unsupported_expectation_refuses_the_ingest_before_anything_is_published(
    res: Resources, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    suites = tmp_path / "suites"
    suites.mkdir()
    for name in ("silver", "gold", "silver_identifiers"):
        suite = load_suite_json(name)
        if name == "gold":
            suite["expectations"].append(
                {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}}
            )
        (suites / f"{name}.json").write_text(json.dumps(suite))
    monkeypatch.setenv("CDR_EXPECTATIONS", str(suites))
    g = generate("canonical_csv", tmp_path / "cdr.csv", 200, start=dt.date(2025, 3, 1))
    # The suite is refused when it loads: the file ends `failed` (retried once the suite is
    # fixed), its original safe in bronze, nothing published.
    with pytest.raises(IngestError, match="SuiteError"):
        ingest_file(res, g.path, as_of=dt.date(2025, 6, 1))
    assert not list(res.store.list("silver/")) and not list(res.store.list("gold/"))
    with pytest.raises(SuiteError, match="expect_table_row_count_to_be_between"):
        Quality(tmp_path / "docs").compiled("gold")


def test_results_and_data_docs_go_to_the_s3_site_under_data_docs(
    s3_buckets: tuple[str, str], moto_endpoint: str
) -> None:
    data, _ = s3_buckets
    site = Quality(f"s3://{data}/data_docs", moto_endpoint)
    frame = pl.DataFrame({"seal_ok": [True], "bronze_ok": [True], "proofs_ok": [True],
                          "records_ok": [False], "counts_ok": [True], "audit_ok": [True]})  # fmt: skip
    failed = site.validate_frame("original_form", frame_for_gx(frame), "verify-s3")
    assert failed == ["expect_column_values_to_be_in_set(records_ok)"]
    keys = [o["Key"] for o in s3_client(moto_endpoint).list_objects_v2(Bucket=data)["Contents"]]
    assert "data_docs/index.html" in keys
    assert any(k.startswith("data_docs/results/original_form/") for k in keys)
    assert site.has_docs() and site.docs_index() == f"s3://{data}/data_docs/index.html"
    # A second run (another worker) adds its result to the same site.
    Quality(f"s3://{data}/data_docs", moto_endpoint).validate_frame(
        "original_form", frame_for_gx(frame), "verify-other"
    )
    index = s3_client(moto_endpoint).get_object(Bucket=data, Key="data_docs/index.html")
    page = index["Body"].read().decode()
    assert "verify-s3" in page and "verify-other" in page


def test_two_ingests_and_two_renderings_at_once_never_fail_because_of_each_other(
    tmp_path: Path,
) -> None:
    """Each run stores its results; two `docs` renderings at once (two DAG runs' last tasks)
    both succeed, and the one site's index lists every file's results."""
    docs = tmp_path / "docs"
    procs, envs = [], []
    for n in range(2):
        files = [
            str(generate("canonical_csv", tmp_path / f"in{n}" / f"f{i}.csv", 400, seed=10 * n + i,
                         start=dt.date(2025, 3, 1)).path)
            for i in range(2)
        ]  # fmt: skip
        env = {**os.environ, "CDR_STORE": str(tmp_path / f"store{n}"),
               "CDR_KEYRING": str(tmp_path / f"keys{n}"), "CDR_DATA_DOCS": str(docs),
               "CDR_DEFAULT_REGION": "PK"}  # fmt: skip
        envs.append(env)
        cmd = [sys.executable, "-m", "pipeline", "ingest", "--as-of", "2025-06-01", *files]
        procs.append(subprocess.Popen(cmd, env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True))
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert not (docs / "index.html").exists()  # an ingest stores results, renders nothing
    assert len(list((docs / "results").rglob("*.json"))) == 12  # 2 runs × 2 files × 3 suites
    render = [sys.executable, "-m", "pipeline", "docs"]
    procs = [subprocess.Popen(render, env=e, cwd=ROOT, stderr=subprocess.PIPE, text=True) for e in envs]  # fmt: skip
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert not [e for e in errors if "has changed since it has last been saved" in e]
    index = (docs / "index.html").read_text()
    assert index.count("f0.csv-") >= 2 and index.count("f1.csv-") >= 2  # both runs' results
    assert len(list((docs / "validations").rglob("*.html"))) == 12
    assert Quality(docs).render_docs() == 0  # nothing left to render


def test_the_stored_result_is_gx_own_json_and_renders_as_gx_validated_it(
    res: Resources, tmp_path: Path
) -> None:
    """The ingest writes each suite's result without importing GX. GX's validation results
    store reads the document back as its own `ExpectationSuiteValidationResult`, whose JSON is
    the document again, key for key; and GX's own engine on the same rows gives the same
    verdict and counts. A changed field name would fail the first, a wrong count the second."""
    silver = _silver(res, tmp_path, 600)
    for suite in ("silver", "gold", "silver_identifiers"):
        (written,) = list((Path(res.settings.data_docs) / "results" / suite).rglob("*.json"))
        document = json.loads(written.read_text())
        rel = written.relative_to(Path(res.settings.data_docs) / "results").with_suffix("")
        from great_expectations.data_context.types.resource_identifiers import (
            ValidationResultIdentifier,
        )

        ctx = res.quality._context()
        key = ValidationResultIdentifier.from_tuple(rel.parts)
        assert ctx.validation_results_store.get(key).to_json_dict() == document
        assert document["meta"]["batch_spec"]["rows"] > 0
    tally = res.quality.tally("silver")
    tally.add(silver)
    ours = quality.result_document(tally)
    theirs = res.quality.gx_validate("silver", frame_for_gx(silver), "record_id")
    assert quality.failures(ours) == quality.failures(theirs) != []
    assert disagreements(ours, theirs) == []
    (status,) = [r for r in ours["results"] if not r["success"]]
    status["result"]["unexpected_count"] -= 1  # a count off by one is seen
    assert disagreements(ours, theirs) == ["expect_column_values_to_not_match_regex(status)"]
    theirs_keys = {r["expectation_config"]["type"] for r in theirs["results"]}
    assert theirs_keys == {r["expectation_config"]["type"] for r in ours["results"]}
    assert sorted(theirs["results"][0]) == sorted(ours["results"][0])
    assert sorted(theirs) == sorted(ours)
    assert res.quality.render_docs() == 3
    pages = list((Path(res.settings.data_docs) / "validations").rglob("*.html"))
    assert len(pages) == 3 and all("cdr.csv-" in p.read_text() for p in pages)


def test_results_name_the_detectors_pattern_by_its_digest_never_write_it_out(
    res: Resources, tmp_path: Path
) -> None:
    """The identifier detector's pattern (over 100 KB, nine expectations a suite) is recorded
    in each result as `$identifier` with its SHA-256, region and numbering plan, from which it
    is rebuilt; written out, it made every file's results 2 MB."""
    import hashlib

    from pipeline.records import detector
    from pipeline.records.normalise import numbering_plan

    g = generate("canonical_csv", tmp_path / "cdr.csv", 200, start=dt.date(2025, 3, 1), months=1)
    ingest_file(res, g.path, as_of=dt.date(2025, 6, 1))
    pattern = detector.pattern(res.quality.region)
    digest = hashlib.sha256(pattern.encode()).hexdigest()
    documents = sorted((Path(res.settings.data_docs) / quality.RESULTS_PREFIX).rglob("*.json"))
    assert len(documents) == 3  # silver, gold, the vault's identifiers
    named = 0
    for path in documents:
        text = path.read_text()
        assert pattern not in text and len(text) < 100_000, path.name
        for result in json.loads(text)["results"]:
            config = result["expectation_config"]
            if config["kwargs"].get("regex") == "$identifier":
                named += 1
                assert config["meta"]["pattern_sha256"] == digest
                rebuilt = detector.pattern(config["meta"]["detector_region"])
                assert hashlib.sha256(rebuilt.encode()).hexdigest() == digest
                assert config["meta"]["numbering_plan"] == numbering_plan()
    assert named == 18  # nine in silver, nine in gold
    assert res.quality.render_docs() == 3

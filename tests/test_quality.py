"""The suites validated in column groups give the whole file's verdict, and the identifiers
suite refuses what must never be tokenised."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import quality
from pipeline.ingest import ingest_file
from pipeline.quality import Quality, load_suite_json, plan
from pipeline.resources import Resources
from pipeline.schema import VAULT_ENTRY
from pipeline.synth import generate
from pipeline.tokenise import token
from tests.helpers import read_tier

SMUGGLED = "call 0300-7654321"


def _silver_parts(res: Resources, tmp_path: Path, rows: int) -> tuple[list[Path], int]:
    """An ingested file's silver, as two local parts, with SMUGGLED in `status` of two rows
    far apart (different chunks when chunks are small)."""
    g = generate("canonical_csv", tmp_path / "cdr.csv", rows, start=dt.date(2025, 3, 1), months=2)
    ingest_file(res, g.path, as_of=dt.date(2025, 6, 1))
    silver = read_tier(res.store, "silver/").drop("year", "month", strict=False)
    n = len(silver)
    status = silver.get_column("status").to_list()
    status[3] = status[n - 2] = SMUGGLED
    silver = silver.with_columns(pl.Series("status", status))
    half = n // 2
    paths = [tmp_path / "a.parquet", tmp_path / "b.parquet"]
    silver.slice(0, half).write_parquet(paths[0])
    silver.slice(half).write_parquet(paths[1])
    return paths, n


def test_column_groups_in_chunks_give_the_verdict_of_one_whole_pass(
    res: Resources, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths, n = _silver_parts(res, tmp_path, 1500)
    whole = res.quality.validate_parquet("silver", paths, "whole")
    assert whole == ["expect_column_values_to_not_match_regex(status)"]

    monkeypatch.setattr(quality, "FULL_WIDTH_ROWS", 10)
    monkeypatch.setattr(quality, "CHUNK_ROWS", 300)
    schema = pq.ParquetFile(paths[0]).schema_arrow
    run = res.quality.run("silver", schema.names)
    run.check_schema(schema)
    chunks = 0
    for columns in run.column_sets():
        for chunk in quality._chunks(paths, columns):
            assert chunk.num_rows <= 300 and chunk.column_names == list(columns)
            run.check(columns, chunk)
            chunks += 1
    assert run.finish("chunked") == whole
    assert chunks > 2 * len(run.column_sets())  # several chunks of every group
    status = [
        r
        for r in run.result.results
        if r.expectation_config.kwargs.get("column") == "status" and not r.success
    ]
    assert len(status) == 1  # the phone pattern fails; the e-mail pattern passes
    assert status[0].result["element_count"] == n and status[0].result["unexpected_count"] == 2
    assert run.rows == n
    # The merged result is in Data Docs, without the value that failed.
    pages = list(res.quality.docs_index().parent.rglob("*.html"))
    assert any("chunked" in p.read_text() for p in pages)
    assert not [p for p in pages if "7654321" in p.read_text()]


def test_the_schema_check_sees_every_column_though_groups_read_few(
    res: Resources, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths, _ = _silver_parts(res, tmp_path, 300)
    table = pq.read_table(paths[0]).drop_columns(["units"])
    pq.write_table(table, paths[0])
    pq.write_table(pq.read_table(paths[1]).drop_columns(["units"]), paths[1])
    monkeypatch.setattr(quality, "FULL_WIDTH_ROWS", 10)
    failed = res.quality.validate_parquet("silver", paths, "no-units")
    assert "expect_table_columns_to_match_ordered_list()" in failed


def _vault_entries(key: str, numbers: list[str]) -> pa.Table:
    return pl.DataFrame(
        {
            "year": [2025] * len(numbers),
            "month": [3] * len(numbers),
            "token": [token("msisdn", n, key, "v1") for n in numbers],
            "kind": ["msisdn"] * len(numbers),
            "identifier": numbers,
        }
    ).to_arrow()


@pytest.mark.parametrize("chunked", [False, True])
def test_a_number_not_in_e164_is_refused_before_tokenising(
    res: Resources, monkeypatch: pytest.MonkeyPatch, chunked: bool
) -> None:
    if chunked:
        monkeypatch.setattr(quality, "FULL_WIDTH_ROWS", 1)
        monkeypatch.setattr(quality, "CHUNK_ROWS", 2)
    key = res.keyring.token_key("v1")
    good = [f"+9230012345{i:02d}" for i in range(5)]
    run = res.quality.run("silver_identifiers", list(VAULT_ENTRY))
    run.add(_vault_entries(key, good))
    assert run.finish("good") == []

    run = res.quality.run("silver_identifiers", list(VAULT_ENTRY))
    run.add(_vault_entries(key, good))
    run.add(_vault_entries(key, ["03007654321"]))  # national form: never to be tokenised
    assert run.finish("national") == ["expect_column_values_to_match_regex(identifier)"]
    pages = res.quality.docs_index().parent.rglob("*.html")
    assert not [p for p in pages if "7654321" in p.read_text()]


def test_a_token_under_the_wrong_kind_is_refused(res: Resources) -> None:
    key = res.keyring.token_key("v1")
    entries = _vault_entries(key, ["+923001234567"]).to_pylist()
    entries[0]["token"] = token("email", "a@b.example", key, "v1")
    run = res.quality.run("silver_identifiers", list(VAULT_ENTRY))
    run.add(pa.Table.from_pylist(entries))
    assert run.finish("wrong-kind") == ["expect_column_values_to_match_regex(token)"]


def test_a_suite_needing_whole_rows_is_refused_with_its_name(tmp_path: Path) -> None:
    suite = load_suite_json("silver")
    suite["expectations"].append(
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}}
    )
    with pytest.raises(ValueError, match="expect_table_row_count_to_be_between"):
        plan(suite, ["record_id"])


def test_row_conditions_bring_their_columns_into_the_group() -> None:
    suite = load_suite_json("gold")
    groups = plan(suite, suite["expectations"][0]["kwargs"]["column_list"]).groups
    assert ("origin", "origin_kind") in groups  # in the order of the schema
    assert ("destination_kind", "destination_country") in groups


def test_quality_docs_root_is_created(tmp_path: Path) -> None:
    q = Quality(tmp_path / "docs")
    assert (tmp_path / "docs").is_dir() and q.docs_index().name == "index.html"

"""The silver token index: searches read only the row groups it names, with the same answer as
a full scan; verify catches an index that disagrees with its part; it goes with its month."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from pipeline.core import layout
from pipeline.core.resources import Resources
from pipeline.core.store import read_parquet
from pipeline.flows import holds
from pipeline.flows.ingest import ingest_file
from pipeline.flows.retention import RetentionRequest, run_retention
from pipeline.flows.verify import VerifyRequest, run_verify
from pipeline.records import token_index
from pipeline.records.search import RecordSearch
from pipeline.records.synth import Generated, generate

START, END = dt.datetime(2025, 3, 1, tzinfo=dt.UTC), dt.datetime(2025, 5, 1, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def small_row_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    """Silver in row groups of 100 rows, so that a few thousand records make many of them."""
    monkeypatch.setattr(token_index, "ROW_GROUP", 100)


def _ingested(res: Resources, tmp_path: Path) -> Generated:
    g = generate(
        "canonical_csv", tmp_path / "cdr.csv", 3000, start=dt.date(2025, 3, 1), months=2,
        bad_share=0.0, people=80,
    )  # fmt: skip
    ingest_file(res, g.path, as_of=dt.date(2025, 6, 1))
    return g


def _silver(res: Resources) -> list[str]:
    return [o.key for o in res.store.list(layout.SILVER)]


def _some_tokens(res: Resources, n: int = 2) -> list[str]:
    rows = pl.concat([read_parquet(res.store, k) for k in _silver(res)])
    personal = rows.filter(pl.col("origin").str.starts_with("msisdn."))
    return personal.get_column("origin").unique().sort().head(n).to_list()


def _found(res: Resources, tokens: list[str]) -> pl.DataFrame:
    search = RecordSearch(res, set(tokens), START, END, [])
    frames = [search.live_rows(2025, m) for m in (3, 4)]
    return pl.concat([f for f in frames if len(f)]).sort("record_id")


def test_a_search_reads_only_indexed_row_groups_and_finds_what_a_full_scan_finds(
    res: Resources, tmp_path: Path
) -> None:
    _ingested(res, tmp_path)
    tokens = _some_tokens(res)
    key = _silver(res)[0]
    with res.store.open_seekable(key) as src:
        part = pq.ParquetFile(src)
        picked = token_index.indexed_row_groups(res.store, key, part, pl.Series(tokens).to_arrow())
        assert picked is not None and part.num_row_groups > 10
        assert 0 < len(picked) < part.num_row_groups  # most row groups are never read
        # The named row groups are exactly those that hold a wanted token.
        holding = [
            g for g in range(part.num_row_groups)
            if part.read_row_group(g, columns=["origin", "destination"]).to_pandas().isin(tokens).any(axis=None)
        ]  # fmt: skip
        assert picked == holding
    with_index = _found(res, tokens)
    assert len(with_index) > 0
    # A store written without the index: every row group is read, the answer is the same.
    for obj in list(res.store.list(layout.TOKEN_INDEX)):
        res.store.delete(obj.key)
    assert with_index.equals(_found(res, tokens))
    truth = pl.concat([read_parquet(res.store, k) for k in _silver(res)]).filter(
        pl.col("origin").is_in(tokens) | pl.col("destination").is_in(tokens)
    )
    assert set(with_index.get_column("record_id")) == set(truth.get_column("record_id"))


def test_every_silver_part_has_an_index_that_verify_accepts(res: Resources, tmp_path: Path) -> None:
    _ingested(res, tmp_path)
    silver = _silver(res)
    assert {layout.token_index_key(k) for k in silver} == {
        o.key for o in res.store.list(layout.TOKEN_INDEX)
    }
    report = run_verify(res, VerifyRequest(expectations=False))
    assert report.ok, report.problems()
    assert any(k.startswith("token index") for f in report.files for k in f.checks)


def test_an_index_that_drops_a_token_is_caught_by_verify(res: Resources, tmp_path: Path) -> None:
    _ingested(res, tmp_path)
    key = _silver(res)[0]
    index_key = layout.token_index_key(key)
    stored = pq.read_table(io.BytesIO(res.store.get_bytes(index_key)))
    token = stored["token"][0].as_py()
    # A tampered index hides a person's records from every search...
    tampered = stored.filter(pl.Series(stored["token"].to_pylist()).ne(token).to_arrow())
    buf = io.BytesIO()
    pq.write_table(tampered, buf)
    res.store.put_bytes(index_key, buf.getvalue())
    # ...and verify names it.
    report = run_verify(res, VerifyRequest(expectations=False))
    assert not report.ok
    assert any("token index" in p and "disagrees" in p for p in report.problems())


def test_a_purge_removes_the_index_and_a_hold_keeps_the_persons_records(
    res: Resources, tmp_path: Path
) -> None:
    g = _ingested(res, tmp_path)
    assert g.truth is not None
    number = g.truth.filter(pl.col("e164").str.starts_with("+92")).get_column("e164").sort()[0]
    holds.run_hold(
        res,
        holds.HoldRequest.from_mapping({"action": "place", "case": "HOLD-9", "reason": "order 3/2026", "identifiers": [number]}),
    )  # fmt: skip
    held_tokens = holds.load(res.store, "HOLD-9").tokens  # type: ignore[union-attr]
    march = layout.month_prefix("silver", (2025, 3))
    expected = pl.concat([read_parquet(res.store, o.key) for o in res.store.list(march)]).filter(
        pl.col("origin").is_in(held_tokens) | pl.col("destination").is_in(held_tokens)
    )
    assert len(expected) > 0
    run_retention(res, RetentionRequest(dt.date(2026, 4, 1)))  # March's identifiers go
    assert not list(res.store.list(layout.month_prefix("tokens", (2025, 3))))
    assert list(res.store.list(layout.month_prefix("tokens", (2025, 4))))  # April stays
    held = holds.read_held(res.store, res.keyring, "HOLD-9", "records")
    assert set(held.get_column("record_id")) == set(expected.get_column("record_id"))
    assert run_verify(res, VerifyRequest(expectations=False)).ok
    # An index left behind after its month's purge is found.
    sha = _silver(res)[0].rsplit("part-", 1)[1].removesuffix(".parquet")
    res.store.put_bytes(layout.token_index_key(layout.partition("silver", (2025, 3), sha)), b"x")
    report = run_verify(res, VerifyRequest(expectations=False))
    assert any("left without the part" in p for p in report.problems())

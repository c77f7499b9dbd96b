"""Silver parts clustered by end user: every row written once, each party's records side by
side in file order, memory bounded by spilling to spools that are gone afterwards."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core import layout
from pipeline.core.resources import Resources
from pipeline.core.store import read_parquet
from pipeline.flows.ingest import ingest_file
from pipeline.records import clustering, tiers, token_index
from pipeline.records.clustering import Clusterer, cluster_key
from pipeline.records.search import RecordSearch
from pipeline.records.synth import Generated, generate


def _rows(seed: int, n: int, start: int, people: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    who = rng.integers(0, people, size=n)
    heavy = rng.random(n) < 0.3  # one party in many records: a range bigger than a sort
    who = np.where(heavy, 0, who)
    inbound = rng.random(n) < 0.5
    person = pl.Series([f"msisdn.1.p{w:04d}" for w in who])
    return pl.DataFrame(
        {
            "leaf_index": np.arange(start, start + n, dtype=np.int64),
            "source": ["operator-a"] * n,  # one value in every row: kept once, not spooled
            "origin": pl.select(pl.when(pl.Series(inbound)).then(person).otherwise(pl.lit("Bank"))).to_series(),
            "origin_kind": ["msisdn" if i else "alphanumeric" for i in inbound],
            "destination": pl.select(pl.when(pl.Series(inbound)).then(pl.lit("Bank")).otherwise(person)).to_series(),
        }
    )  # fmt: skip


def _write(
    tmp_path: Path, batches: list[tuple[str, pl.DataFrame]], row_group: int
) -> dict[str, Path]:
    work = tmp_path / "work"
    work.mkdir()
    clusterer = Clusterer(work, budget=60, constant=("source", "not_in_the_data"))
    for key, frame in batches:
        clusterer.add(key, frame.to_arrow())
    out = {}
    for key in clusterer.pending():
        out[key] = tmp_path / f"{key}.parquet"
        schema = batches[0][1].to_arrow().schema
        with pq.ParquetWriter(out[key], schema) as writer:
            clusterer.write(key, writer, row_group)
    assert not list(work.rglob("spill-*")), "spools left behind"
    return out


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.tuples(st.sampled_from("ab"), st.integers(1, 90)), min_size=1, max_size=8),
    people=st.integers(1, 30),
    seed=st.integers(0, 2**16),
)
def test_every_row_once_each_party_side_by_side_in_file_order(
    tmp_path_factory: pytest.TempPathFactory,
    sizes: list[tuple[str, int]],
    people: int,
    seed: int,
) -> None:
    clustering_sort = clustering.SORT_ROWS
    clustering.SORT_ROWS = 40  # small spools and sorts, so that splits and chunks happen
    try:
        tmp_path = tmp_path_factory.mktemp("cluster")
        batches, start = [], 0
        for i, (key, n) in enumerate(sizes):
            batches.append((key, _rows(seed + i, n, start, people)))
            start += n
        written = _write(tmp_path, batches, row_group=16)
    finally:
        clustering.SORT_ROWS = clustering_sort
    for key, path in written.items():
        expected = pl.concat([f for k, f in batches if k == key])
        got = pl.read_parquet(path)
        assert got.sort("leaf_index").equals(expected.sort("leaf_index"))  # once each, unchanged
        groups = [pq.ParquetFile(path).metadata.row_group(g).num_rows for g in range(pq.ParquetFile(path).num_row_groups)]  # fmt: skip
        assert all(g == 16 for g in groups[:-1]) and 0 < groups[-1] <= 16
        runs = got.with_row_index("pos").with_columns(cluster_key().alias("key"))
        spans = runs.group_by("key").agg(
            (pl.col("pos").max() - pl.col("pos").min() + 1).alias("span"),
            pl.len().alias("n"),
            (pl.col("leaf_index").diff().drop_nulls() > 0).all().alias("in_order"),
        )
        assert spans.filter(pl.col("span") != pl.col("n")).is_empty(), "a party's records apart"
        assert spans.get_column("in_order").all(), "a party's records out of file order"


def _ingest_march(res: Resources, tmp_path: Path, rows: int, people: int) -> Generated:
    """A one-month file of `rows` records between `people` end users, ingested."""
    g = generate(
        "canonical_csv", tmp_path / "cdr.csv", rows, start=dt.date(2025, 3, 1), months=1,
        bad_share=0.0, people=people,
    )  # fmt: skip
    ingest_file(res, g.path, as_of=dt.date(2025, 6, 1))
    return g


def test_an_ingested_persons_records_share_a_row_group(
    res: Resources, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(token_index, "ROW_GROUP", 100)
    monkeypatch.setattr(clustering, "BUFFER_ROWS", 500)  # spilled, as a big file is
    g = _ingest_march(res, tmp_path, 4000, people=300)
    (key,) = [o.key for o in res.store.list(layout.SILVER)]
    rows = read_parquet(res.store, key).with_row_index("pos")
    assert len(rows) == g.rows - g.bad_rows
    per_person = rows.group_by(cluster_key().alias("key")).agg(
        pl.len().alias("n"), (pl.col("pos") // 100).n_unique().alias("groups")
    )
    many = per_person.filter(pl.col("n") >= 5)
    assert len(many) > 20
    # Side by side: the row groups their number fills, and one more where a run crosses a
    # boundary; in file order it would be about one row group per record.
    assert many.filter(pl.col("groups") > pl.col("n") // 100 + 2).is_empty()


def _search(res: Resources, tokens: set[str]) -> pl.DataFrame:
    start, end = dt.datetime(2025, 3, 1, tzinfo=dt.UTC), dt.datetime(2025, 4, 1, tzinfo=dt.UTC)
    found, _ = RecordSearch(res, tokens, start, end, []).month(2025, 3)
    return found.sort("record_id")


def test_the_vault_is_in_token_order_and_a_lookup_reads_the_row_groups_of_its_tokens(
    res: Resources, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tiers, "VAULT_GROUP", 20)
    monkeypatch.setattr(clustering, "BUFFER_ROWS", 300)  # the vault spilled too
    # Sorted in many ranges: token order must come from the ranges, not one sort of them all
    # (a vault whose tokens ranked alike was once written as runs sorted one at a time).
    monkeypatch.setattr(clustering, "SORT_ROWS", 64)
    _ingest_march(res, tmp_path, 3000, people=400)
    (key,) = [o.key for o in res.store.list(layout.VAULT)]
    with res.store.open_seekable(key) as src:
        vault = pq.ParquetFile(src)
        tokens = vault.read().column("token").to_pylist()
        assert tokens == sorted(tokens) and len(tokens) > 300
        assert vault.num_row_groups > 10
        one = tokens[len(tokens) // 2]
        assert list(token_index.covering(vault, "token", [one])) == [len(tokens) // 2 // 20]

    # Found records are re-identified alike from an older vault: unordered, no statistics.
    wanted = {one, tokens[3]}
    found = _search(res, wanted)
    assert len(found) > 0 and found.get_column("origin_identifier").null_count() < len(found)
    shuffled = pl.read_parquet(res.store.root / key).sample(fraction=1.0, shuffle=True, seed=1)
    shuffled.write_parquet(res.store.root / key, statistics=False)
    assert found.equals(_search(res, wanted))


def test_a_column_said_to_hold_one_value_is_written_back_or_refused(tmp_path: Path) -> None:
    frame = _rows(1, 50, 0, 5).with_columns(pl.lit(None, pl.String).alias("note"))
    clusterer = Clusterer(tmp_path, budget=10, constant=("source", "note"))
    clusterer.add("a", frame.slice(0, 25).to_arrow())
    clusterer.add("a", frame.slice(25).to_arrow())
    with pq.ParquetWriter(tmp_path / "a.parquet", frame.to_arrow().schema) as writer:
        clusterer.write("a", writer, 16)
    got = pl.read_parquet(tmp_path / "a.parquet")
    assert got.columns == frame.columns  # back in its place
    assert got.sort("leaf_index").equals(frame)
    # A batch whose "constant" column holds another value (or a null) is refused, not rewritten.
    for other in ("operator-b", None):
        bad = frame.slice(0, 5).with_columns(pl.lit(other, pl.String).alias("source"))
        with pytest.raises(ValueError, match="column source does not hold one value"):
            clusterer.add("b", frame.slice(0, 5).to_arrow())
            clusterer.add("b", bad.to_arrow())
        clusterer = Clusterer(tmp_path / str(other), budget=10, constant=("source",))


def test_a_part_gathered_after_another_was_written_keeps_its_own_spools(tmp_path: Path) -> None:
    clusterer = Clusterer(tmp_path, budget=10)
    first, second, third = (_rows(i, 30, 30 * i, 5) for i in range(3))
    clusterer.add("a", first.to_arrow())
    clusterer.add("b", second.to_arrow())
    schema = first.to_arrow().schema
    with pq.ParquetWriter(tmp_path / "a.parquet", schema) as writer:
        clusterer.write("a", writer, 16)
    clusterer.add("c", third.to_arrow())  # spilled beside b's spools, not into them
    for key, frame in (("b", second), ("c", third)):
        with pq.ParquetWriter(tmp_path / f"{key}.parquet", schema) as writer:
            clusterer.write(key, writer, 16)
        got = pl.read_parquet(tmp_path / f"{key}.parquet").sort("leaf_index")
        assert got.equals(frame.sort("leaf_index"))

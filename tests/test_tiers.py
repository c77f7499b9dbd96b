"""The vault's seen-token set and the batch prefetcher: small parts with exact contracts."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.prefetch import prefetch
from pipeline.records.fingerprints import Fingerprints
from pipeline.records.tokenise import token

KEY = "k" * 43


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.integers(0, 300), max_size=60, unique=True), max_size=8))
def test_seen_tokens_reports_each_token_new_exactly_once(batches: list[list[int]]) -> None:
    seen, reported = Fingerprints(), []
    for batch in batches:
        tokens = [token("msisdn", f"+92300{n:07d}", KEY, "v1") for n in batch]
        mask = seen.add_new(pl.Series(tokens, dtype=pl.String))
        reported += [t for t, new in zip(tokens, mask, strict=True) if new]
    everything = {token("msisdn", f"+92300{n:07d}", KEY, "v1") for b in batches for n in b}
    assert sorted(reported) == sorted(everything)
    assert len(seen) == len(everything)


def test_prefetch_keeps_order_and_raises_the_producers_error() -> None:
    assert list(prefetch(iter(range(50)))) == list(range(50))

    def failing() -> Iterator[int]:
        yield 1
        raise ValueError("broken batch")

    got = []
    with pytest.raises(ValueError, match="broken batch"):
        for item in prefetch(failing()):
            got.append(item)
    assert got == [1]


def test_prefetch_stops_its_thread_when_the_consumer_stops() -> None:
    before = threading.active_count()
    for item in prefetch(iter(range(1000))):
        if item == 3:
            break
    assert threading.active_count() <= before


def test_the_staged_vault_reads_back_as_written_in_chunks() -> None:
    from pipeline.records.tiers import TierWriter

    month_keys = {(2025, 3): b"\x01" * 32, (2025, 4): b"\x02" * 32}
    writer = TierWriter("ab" * 32, lambda y, m: month_keys[(y, m)], b"\x03" * 32, "src", "f.csv")
    numbers = [f"+9230012345{i:02d}" for i in range(7)]
    vault = pl.DataFrame(
        {
            "year": [2025] * 7,
            "month": [3, 3, 3, 4, 4, 4, 4],
            "token": [token("msisdn", n, KEY, "v1") for n in numbers],
            "kind": ["msisdn"] * 7,
            "identifier": numbers,
        },
        schema_overrides={"year": pl.Int32, "month": pl.Int32},
    )
    empty = pl.DataFrame()
    try:
        writer.add(empty, empty, vault, empty)
        chunks = list(writer.vault_entries(2))
        assert max(c.num_rows for c in chunks) == 2 and len(chunks) == 4  # 3 + 4 rows by 2
        back = pl.concat([pl.from_arrow(c) for c in chunks])  # type: ignore[misc]
        assert back.sort("identifier").to_dicts() == vault.sort("identifier").to_dicts()
        staged = [p.read_bytes() for k, p in writer.staged().items() if k.startswith("vault/")]
        assert staged and not any(b"+923001234" in data for data in staged)  # encrypted on disk
    finally:
        writer.close()

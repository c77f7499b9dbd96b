"""The vault's seen-token set and the batch prefetcher: small parts with exact contracts."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.fingerprints import Fingerprints
from pipeline.ingest import prefetch
from pipeline.tokenise import token

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

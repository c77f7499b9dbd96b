"""A file's seen-set answers like a Python set, whatever the order and sizes of the batches."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.records.fingerprints import Fingerprints

batches = st.lists(
    st.lists(st.integers(0, 400).map(lambda n: f"id-{n}"), max_size=60, unique=True),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(batches)
def test_new_values_are_those_no_earlier_batch_added(sequence: list[list[str]]) -> None:
    seen, reference = Fingerprints(), set()
    for batch in sequence:
        fresh = seen.add_new(pl.Series(batch, dtype=pl.String))
        assert fresh.tolist() == [v not in reference for v in batch]
        reference |= set(batch)
        assert len(seen) == len(reference)
    # runs stay few: about log2 of the batches
    assert len(seen._runs) <= max(1, len(sequence)).bit_length() + 1

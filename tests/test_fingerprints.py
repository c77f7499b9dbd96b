"""A file's seen-set answers like a Python set, whatever the order and sizes of the batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.records import fingerprints
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


def test_runs_stop_growing_at_max_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory: no run (and so no merge) grows past MAX_RUN; every value is still found."""
    monkeypatch.setattr(fingerprints, "MAX_RUN", 64)
    seen = Fingerprints()
    values = [f"id-{n}" for n in range(1000)]
    for start in range(0, 1000, 10):
        assert seen.add_new(pl.Series(values[start : start + 10])).all()
    assert max(len(r) for r in seen._runs) <= 64
    assert len(seen._runs) >= 1000 // 64
    assert not seen.add_new(pl.Series(values[::7])).any()


class _FewFirstHalves(Fingerprints):
    """First halves from four values only: most look-ups walk pairs with equal first halves."""

    @staticmethod
    def _halves(values: pl.Series) -> tuple[np.ndarray, np.ndarray]:
        lo = values.hash(seed=0x5EED).to_numpy()
        return lo % np.uint64(4), lo


@settings(max_examples=100, deadline=None)
@given(batches, st.sampled_from([1 << 30, 16]))
def test_equal_first_halves_are_told_apart_by_the_second(
    sequence: list[list[str]], spill_run: int
) -> None:
    """Also with second halves read from their files (runs of 16 values spilled)."""
    kept = fingerprints.SPILL_RUN
    fingerprints.SPILL_RUN = spill_run
    try:
        seen, reference = _FewFirstHalves(), set()
        for batch in sequence:
            fresh = seen.add_new(pl.Series(batch, dtype=pl.String))
            assert fresh.tolist() == [v not in reference for v in batch]
            reference |= set(batch)
        spilled = [r for r in seen._runs if r.spool is not None]
        assert spill_run > 16 or all(len(r) >= 16 for r in spilled)
        files = sorted(Path(seen._folder.name).iterdir()) if seen._folder else []
        assert files == sorted(r.spool for r in spilled), "a merged run's file left behind"
    finally:
        fingerprints.SPILL_RUN = kept

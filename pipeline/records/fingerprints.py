"""Set membership for millions of strings at 8 bytes each in memory (16 with the half kept in a
local file): what one file has seen so far."""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.core import staging
from pipeline.core.store import private_file

#: Values in one run at most (see `Fingerprints`): 32 MB of fingerprints.
MAX_RUN = 1 << 21
#: Runs of at least this many values keep their second halves in a local file.
SPILL_RUN = 1 << 18


class _Run:
    """One sorted run of fingerprints: first halves and second halves, in order of the first
    half (the rare pairs with equal first halves in any order: `contains` walks them).

    A big run's second halves live in a local file, mapped: a look-up reads one only where a
    first half matches (a value seen before, or a 64-bit collision), so they need no memory.
    """

    def __init__(self, hi: np.ndarray, lo: np.ndarray, spool: Path | None = None) -> None:
        self.hi, self.lo, self.spool = hi, lo, spool
        if spool is not None:
            lo.tofile(private_file(spool))
            self.lo = np.memmap(spool, dtype=np.uint64, mode="r", shape=(len(hi),))

    def __len__(self) -> int:
        return len(self.hi)

    def contains(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """Which of the values (`hi` best in ascending order: each search then starts where
        the one before ended) are in the run."""
        pos = np.searchsorted(self.hi, hi, side="left")
        found = np.zeros(len(hi), dtype=bool)
        inside = np.flatnonzero(pos < len(self.hi))
        same_hi = inside[self.hi[pos[inside]] == hi[inside]]
        first = self.lo[pos[same_hi]] == lo[same_hi]  # almost always the one candidate
        found[same_hi[first]] = True
        for i in same_hi[~first]:  # equal first halves, another second: walk the equal ones
            j = pos[i] + 1
            while j < len(self.hi) and self.hi[j] == hi[i]:
                if self.lo[j] == lo[i]:
                    found[i] = True
                    break
                j += 1
        return found

    def release(self) -> None:
        """Forget the run (its file, if any): it was merged into another."""
        self.lo = np.zeros(0, dtype=np.uint64)
        if self.spool is not None:
            self.spool.unlink(missing_ok=True)

    @staticmethod
    def merged(a: _Run, b: _Run, spool: Path | None) -> _Run:
        hi, lo = np.concatenate([a.hi, b.hi]), np.concatenate([a.lo, b.lo])
        order = np.argsort(hi, kind="stable")  # timsort: two sorted runs merge in linear time
        a.release()
        b.release()
        return _Run(hi[order], lo[order], spool)


class Fingerprints:
    """Strings already seen, as 128-bit fingerprints in sorted runs of uint64 pairs.

    Lets one file's batches share what they have seen (the vault's values per month, the
    record IDs) with O(log n) look-ups. The fingerprint is two independently seeded 64-bit
    hashes of the value; a match on the first is confirmed on the second, so a false "seen"
    needs a 128-bit collision among one file's values. Memory: 16 bytes a value in small runs,
    8 in big ones (`SPILL_RUN`), whose second halves are read from a local file.

    Each batch's new values form a run; runs of similar size are merged (as a binary counter
    carries), so adding costs O(n log n) in all and at most log2(batches) runs are searched,
    where inserting into one sorted array would copy the whole file's set on every batch.
    Runs stop growing at `MAX_RUN` values: merging two runs briefly takes about 40 bytes a
    value, so merging two halves of a 10 M-row file's set at once would cost 400 MB.
    """

    def __init__(self) -> None:
        self._runs: list[_Run] = []
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self._names = itertools.count()

    def _spool(self, values: int) -> Path | None:
        """Where a run of `values` keeps its second halves: None (in memory) for a small one."""
        if values < SPILL_RUN:
            return None
        if self._folder is None:
            self._folder = tempfile.TemporaryDirectory(prefix=staging.prefix("ingest"))
        return Path(self._folder.name) / f"{next(self._names)}.lo"

    def __len__(self) -> int:
        return sum(len(r) for r in self._runs)

    @staticmethod
    def _halves(values: pl.Series) -> tuple[np.ndarray, np.ndarray]:
        return values.hash(seed=0).to_numpy(), values.hash(seed=0x5EED).to_numpy()

    def _contains(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        found = np.zeros(len(hi), dtype=bool)
        for run in self._runs:
            found |= run.contains(hi, lo)
        return found

    def add_new(self, values: pl.Series) -> np.ndarray:
        """Record distinct values; returns a mask of those not seen before."""
        if not len(values):
            return np.zeros(0, dtype=bool)
        hi, lo = self._halves(values)
        # In order of the first half: the runs are searched with ascending keys (several
        # times faster than in file order), and the new run is already sorted.
        order = np.argsort(hi, kind="stable")
        hi, lo = hi[order], lo[order]
        new = ~self._contains(hi, lo)
        fresh = np.empty(len(new), dtype=bool)
        fresh[order] = new
        run = _Run(hi[new], lo[new])
        while (
            self._runs
            and len(self._runs[-1]) <= 2 * len(run)
            and len(self._runs[-1]) + len(run) <= MAX_RUN
        ):
            last = self._runs.pop()
            run = _Run.merged(last, run, self._spool(len(last) + len(run)))
        if len(run):
            self._runs.append(run)
        return fresh

"""Set membership for millions of strings at 16 bytes each: what one file has seen so far."""

from __future__ import annotations

import numpy as np
import polars as pl


class Fingerprints:
    """Strings already seen, as 128-bit fingerprints in two sorted uint64 arrays.

    Lets one file's batches share what they have seen (the vault's values per month, the
    record IDs) at 16 bytes a value and O(log n) look-ups. The fingerprint is two independently
    seeded 64-bit hashes of the value; a match on the first is confirmed on the second, so a
    false "seen" needs a 128-bit collision among one file's values.
    """

    def __init__(self) -> None:
        self._hi = np.empty(0, dtype=np.uint64)
        self._lo = np.empty(0, dtype=np.uint64)

    def __len__(self) -> int:
        return len(self._hi)

    @staticmethod
    def _halves(values: pl.Series) -> tuple[np.ndarray, np.ndarray]:
        return values.hash(seed=0).to_numpy(), values.hash(seed=0x5EED).to_numpy()

    def _contains(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self._hi, hi, side="left")
        found = np.zeros(len(hi), dtype=bool)
        inside = np.flatnonzero(pos < len(self._hi))
        same_hi = inside[self._hi[pos[inside]] == hi[inside]]
        for i in same_hi:  # almost always one candidate; walk the rare run of equal halves
            j = pos[i]
            while j < len(self._hi) and self._hi[j] == hi[i]:
                if self._lo[j] == lo[i]:
                    found[i] = True
                    break
                j += 1
        return found

    def add_new(self, values: pl.Series) -> np.ndarray:
        """Record distinct values; returns a mask of those not seen before."""
        if not len(values):
            return np.zeros(0, dtype=bool)
        hi, lo = self._halves(values)
        fresh = ~self._contains(hi, lo)
        order = np.lexsort((lo[fresh], hi[fresh]))
        new_hi, new_lo = hi[fresh][order], lo[fresh][order]
        at = np.searchsorted(self._hi, new_hi, side="right")
        self._hi = np.insert(self._hi, at, new_hi)
        self._lo = np.insert(self._lo, at, new_lo)
        return fresh

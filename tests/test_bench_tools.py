"""The benchmarks' own checks can see what they rule out."""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from same_outputs import differences


def _store(root: Path, tables: dict[str, pa.Table]) -> Path:
    for key, table in tables.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, root / key)
    return root


def test_the_differential_check_sees_rows_reordered_changed_or_missing(tmp_path: Path) -> None:
    rows = pa.table({"record_id": ["a", "b", "c"], "identifier_encrypted": [b"1", b"2", b"3"]})
    base = _store(tmp_path / "a", {"silver/p.parquet": rows, "gold/p.parquet": rows})
    # the same rows, other ciphertexts (random nonces): the same outputs
    nonces = rows.set_column(1, "identifier_encrypted", pa.array([b"x", b"y", b"z"]))
    same = _store(tmp_path / "b", {"silver/p.parquet": nonces, "gold/p.parquet": rows})
    assert differences(base, same) == []
    reordered = _store(tmp_path / "c", {"silver/p.parquet": rows.take([1, 0, 2]), "gold/p.parquet": rows})  # fmt: skip
    assert differences(base, reordered) == ["rows differ: silver/p.parquet"]
    changed = rows.set_column(0, "record_id", pa.array(["a", "b", "d"]))
    other = _store(tmp_path / "d", {"silver/p.parquet": rows, "gold/p.parquet": changed})
    assert differences(base, other) == ["rows differ: gold/p.parquet"]
    missing = _store(tmp_path / "e", {"silver/p.parquet": rows})
    assert differences(base, missing) == ["only in one store: gold/p.parquet"]

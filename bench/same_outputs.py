"""Differential check for performance work: the same file ingested by another revision and by
this working tree gives the same tiers, row for row and in the same order.

    python bench/same_outputs.py [--against REV] [file]    # REV: a git revision (HEAD)

Both ingests share one keyring (the second is given a copy of the first's), so tokens,
commitments and record-ID masks are computed under the same keys. Every Parquet object of the
two stores is compared: the same keys, and equal tables once the AES-GCM ciphertexts (random
nonces) are left out. The other revision runs from a temporary `git worktree`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent
DEFAULT = ROOT / "data" / "canonical_csv-1000000.csv"


def ingest(tree: Path, path: Path, home: Path) -> None:
    env = {**os.environ, "CDR_STORE": str(home / "store"), "CDR_KEYRING": str(home / "keyring")}
    cmd = [sys.executable, "-m", "pipeline", "ingest", "--as-of", "2025-06-01",
           "--default-region", "PK", str(path)]  # fmt: skip
    subprocess.run(cmd, cwd=tree, env=env, check=True, capture_output=True)


def differences(a: Path, b: Path) -> list[str]:
    """What differs between two stores' Parquet objects (nothing: an empty list)."""
    found = {p.relative_to(a) for p in a.rglob("*.parquet")}
    other = {p.relative_to(b) for p in b.rglob("*.parquet")}
    out = [f"only in one store: {k}" for k in sorted(found ^ other)]
    for key in sorted(found & other):
        left, right = pq.read_table(a / key), pq.read_table(b / key)
        sealed = [c for c in left.column_names if c.endswith("_encrypted")]
        if not left.drop_columns(sealed).equals(right.drop_columns(sealed)):
            out.append(f"rows differ: {key}")
    return out


def main() -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--against", default="HEAD")
    args.add_argument("file", nargs="?", type=Path, default=DEFAULT)
    opts = args.parse_args()
    if not opts.file.exists():
        raise SystemExit(f"{opts.file} is missing: `make bench` (bench/run.py) generates it")
    repo = ROOT.parent
    with tempfile.TemporaryDirectory(prefix="cdr-same-") as tmp:
        work = Path(tmp)
        tree = work / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), opts.against],
                       cwd=repo, check=True, capture_output=True)  # fmt: skip
        try:
            ingest(tree, opts.file.resolve(), work / "theirs")
            (work / "ours").mkdir()
            shutil.copytree(work / "theirs" / "keyring", work / "ours" / "keyring")
            ingest(repo, opts.file.resolve(), work / "ours")
            found = differences(work / "theirs" / "store", work / "ours" / "store")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=repo,
                           check=False, capture_output=True)  # fmt: skip
    for line in found:
        print(line)
    print(f"{opts.file.name}: {'the same outputs' if not found else 'OUTPUTS DIFFER'} as {opts.against}")  # fmt: skip
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())

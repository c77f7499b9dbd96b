"""A delivered file read once, into a private snapshot, before anything else reads it.

A source may still be writing a file when a run finds it (an SFTP upload in progress, a PBX
appending to `Master.csv`). Read in place, the seal, bronze and the parse would each see
different bytes, and rows appended at the end would be deleted unread with the landing file.
So the file is copied and hashed in one pass, and the copy is what the seal covers, bronze
stores and the parser reads. A file that changed while it was copied is refused
(`StillChanging`) and left where it is, for a later run.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import PipelineError
from pipeline.core.store import private_file

READ = 8 << 20


class StillChanging(PipelineError):
    """The file changed while it was being read: it is still being written."""


@dataclass(frozen=True)
class Snapshot:
    """A private copy of a delivered file, with the digest and size of its exact bytes."""

    path: Path
    sha256: str
    size: int


def stamp(path: Path) -> tuple[int, int, int]:
    """What changes when a file is written to: size, modification time, inode (a replace)."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ino


def take(source: Path, folder: Path) -> Snapshot:
    """Copy `source` into `folder` while hashing it; StillChanging if it changed meanwhile."""
    before = stamp(source)
    target = private_file(folder / "snapshot")
    digest, size = hashlib.sha256(), 0
    with open(source, "rb") as src, open(target, "wb") as dst:
        while block := src.read(READ):
            digest.update(block)
            dst.write(block)
            size += len(block)
    if stamp(source) != before or size != before[0]:
        target.unlink()
        raise StillChanging("the file changed while it was read: still being written")
    return Snapshot(target, digest.hexdigest(), size)

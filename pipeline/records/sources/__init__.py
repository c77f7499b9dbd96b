"""Source formats, detected from a file's first bytes or named with `--format`."""

from __future__ import annotations

from pathlib import Path

from pipeline.records.formats import FORMATS
from pipeline.records.sources.base import FileFormatError, ParseOptions, Source
from pipeline.records.sources.canonical import (
    CanonicalCsvSource,
    CanonicalParquetSource,
    foreign_separator,
)
from pipeline.records.sources.messaging import MessagingSource
from pipeline.records.sources.pbx import AsteriskSource, FreeswitchSource

# Order matters: the most specific signatures first.
SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        CanonicalParquetSource(),
        MessagingSource(),
        CanonicalCsvSource(),
        AsteriskSource(),
        FreeswitchSource(),
    )
}
assert tuple(SOURCES) == FORMATS, "pipeline.records.formats.FORMATS must list every source"


def detect(path: Path, fmt: str | None = None) -> Source:
    """The source for a file: the named format, or the first whose signature matches."""
    if fmt:
        if fmt not in SOURCES:
            raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
        return SOURCES[fmt]
    with open(path, "rb") as f:
        head = f.read(64 * 1024)
    for source in SOURCES.values():
        if source.sniff(head):
            return source
    sep = foreign_separator(head)
    if sep is not None:
        raise FileFormatError("delimiter", f"a canonical header separated by {sep!r}: canonical CSV is read with ',', ';' or a tab")  # fmt: skip
    raise FileFormatError("unrecognised_format", f"none of {', '.join(FORMATS)} matches")


__all__ = ["FORMATS", "SOURCES", "FileFormatError", "ParseOptions", "Source", "detect"]

"""The address book classifies each distinct address once per file, and stays exact when it
is full: a batch whose addresses were classified before the book started afresh still gets
every one of them (a 10 M-row file was once refused for the parties the book had dropped)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from pipeline.records.sources import ParseOptions, detect
from pipeline.records.synth import generate
from pipeline.records.transform import AddressBook, FileContext, prepare


def _context(path: Path) -> FileContext:
    source = detect(path)
    return FileContext(
        source="test", source_file=path.name, sha256="ab" * 32, as_of=dt.date(2025, 6, 1),
        default_region="PK", international=source.international,
        alphanumeric=source.alphanumeric, derived_ids=source.derived_ids, token_key="k" * 43,
        token_version="v1", identifier_purge=lambda y, m: dt.date(y + 2, 1, 1),
    )  # fmt: skip


@pytest.mark.parametrize("fmt", ["canonical_csv", "messaging_jsonl"])
def test_a_full_book_gives_every_batch_the_same_parties_as_an_empty_one(
    tmp_path: Path, fmt: str
) -> None:
    path = tmp_path / f"cdr.{'csv' if fmt == 'canonical_csv' else 'jsonl'}"
    generate(fmt, path, 6_000, seed=7, people=400)
    ctx = _context(path)
    batches = list(detect(path).parse(path, ParseOptions("PK", "UTC", 500)))
    assert len(batches) >= 10
    small, roomy = AddressBook(limit=150), AddressBook()
    for batch in batches:
        alone = prepare(batch, ctx, AddressBook()).frame  # a book of its own: nothing cached
        for book in (small, roomy):
            got = prepare(batch, ctx, book).frame
            assert got.equals(alone), "a cached party differs from one classified afresh"
            parties = got.select("o_kind", "d_kind", "o_token", "d_token")
            assert parties.equals(alone.select(parties.columns))
    # the small book really started afresh, and stayed near its limit
    assert len(small._known) < len(roomy._known)  # type: ignore[arg-type]
    assert pl.concat([b.get_column("origin_raw") for b in batches]).n_unique() > 150


def test_an_empty_batch_first_or_later_has_every_column(tmp_path: Path) -> None:
    path = tmp_path / "cdr.csv"
    generate("canonical_csv", path, 100, seed=1, people=10)
    ctx = _context(path)
    batch = next(iter(detect(path).parse(path, ParseOptions("PK", "UTC", 500))))
    book = AddressBook()
    first = prepare(batch.clear(), ctx, book).frame
    full = prepare(batch, ctx, book).frame
    later = prepare(batch.clear(), ctx, book).frame
    assert (len(first), len(full), len(later)) == (0, 100, 0)
    assert first.schema == full.schema == later.schema
    assert full.get_column("o_kind").null_count() == 0

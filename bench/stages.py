"""Where an ingest's CPU goes: each stage of the batch loop run alone, in this process.

    python bench/stages.py [file]    # default: the 1 M-row canonical CSV of `bench/run.py`

The ingest overlaps these stages on threads (reader: parse and `prepare`; main: `finish`;
two writers: Parquet and the batch evaluation), so its wall time is bounded below by their CPU
seconds spread over the machine's cores. This benchmark measures each stage's CPU seconds
(process time, every thread of the process) on the same batches, one stage after another
(the tier writer's tasks too run one at a time here), and writes the profile to the `stages`
section of bench/results.md.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent))

from measure import write_section  # noqa: E402

from pipeline.core.config import BATCH_ROWS  # noqa: E402
from pipeline.records import quality, transform  # noqa: E402
from pipeline.records.fingerprints import Fingerprints  # noqa: E402
from pipeline.records.sources import ParseOptions, detect  # noqa: E402
from pipeline.records.tiers import TierWriter  # noqa: E402
from pipeline.records.transform import AddressBook, FileContext, finish, prepare  # noqa: E402

DEFAULT = ROOT / "data" / "canonical_csv-1000000.csv"
SUITES = {"silver": "silver", "gold": "gold", "vault": "silver_identifiers"}
PARSE, PREPARE = "parse", "prepare: classify, free text, checks"
FINISH, COMMITS = "finish: repeats, routing, commitments, vault", "of which commitments"
RENDER = "Data Docs rendered by GX, with its import (the run's own step, not the ingest's)"


class _Inline:
    """An executor that runs each task at once, in the caller: the tier writer's two threads
    would otherwise run the suites and the Parquet encoding side by side, and the process's CPU
    clock could not tell one stage from the other."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        done: Future[Any] = Future()
        done.set_result(fn(*args))
        return done

    def map(self, fn: Callable[[Any], Any], items: Any) -> list[Any]:
        return [fn(item) for item in items]

    def shutdown(self) -> None:
        pass


def _timed(clock: dict[str, float], stage: str, step: Callable[[], Any]) -> Any:
    began = time.process_time()
    out = step()
    clock[stage] = clock.get(stage, 0.0) + time.process_time() - began
    return out


def profile(path: Path) -> tuple[int, dict[str, float]]:
    """Rows of `path` and the CPU seconds of each stage over all its batches."""
    # the table's order: commitments are timed inside `finish`, and listed under it
    clock: dict[str, float] = dict.fromkeys([PARSE, PREPARE, FINISH, COMMITS], 0.0)
    source = detect(path)
    batches = _timed(
        clock, PARSE, lambda: list(source.parse(path, ParseOptions("PK", "UTC", BATCH_ROWS)))
    )
    ctx = FileContext(
        source="bench", source_file=path.name, sha256="ab" * 32, as_of=dt.date(2025, 6, 1),
        default_region="PK", international=source.international,
        alphanumeric=source.alphanumeric, derived_ids=source.derived_ids, token_key="k" * 43,
        token_version="v1", identifier_purge=lambda y, m: dt.date(y + 2, 1, 1),
        commit_key=b"c" * 32, detector_region="PK",
    )  # fmt: skip
    commitments = transform._commitments  # timed where it runs, inside `finish`
    transform._commitments = lambda *a: _timed(clock, COMMITS, lambda: commitments(*a))  # fmt: skip
    book, seen, offset, outs = AddressBook(), Fingerprints(), 0, []
    for batch in batches:
        ready = _timed(clock, PREPARE, lambda b=batch: prepare(b, ctx, book))  # fmt: skip
        out = _timed(clock, FINISH, lambda r=ready, o=offset: finish(r, ctx, o, seen))  # fmt: skip
        offset += len(out.gold)
        outs.append(out)
    transform._commitments = commitments
    with tempfile.TemporaryDirectory() as docs:
        checks = quality.Quality(docs)
        tallies = {t: checks.tally(s, quality.INDEX_COLUMN if t != "vault" else None) for t, s in SUITES.items()}  # fmt: skip

        def check(tier: str, frame: Any) -> None:
            _timed(clock, "suites evaluated by polars", lambda: tallies[tier].add(frame))

        writer = TierWriter("ab" * 32, lambda y, m: b"m" * 32, b"c" * 32, "bench", path.name, check)  # fmt: skip
        writer._pool.shutdown()
        writer._pool = _Inline()  # type: ignore[assignment]  # one stage at a time (see _Inline)
        began = time.process_time()
        for out in outs:
            writer.add(out.silver, out.gold, out.vault, out.quarantine)
            writer.add_leaves(out.leaves)
        writer.staged()
        writer.close()
        clock["write: Parquet, vault encryption, token index"] = (
            time.process_time() - began - clock["suites evaluated by polars"]
        )

        def record() -> None:
            for tally in tallies.values():
                checks.write_result(quality.result_document(tally), "bench")

        _timed(clock, "results written as GX's JSON (no GX)", record)
        # Not part of the ingest: the run's Data Docs step, timed beside it for scale.
        _timed(clock, RENDER, checks.render_docs)
    return sum(len(b) for b in batches), clock


def main() -> int:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT
    if not path.exists():
        raise SystemExit(f"{path} is missing: `make bench` (bench/run.py) generates it")
    rows, clock = profile(path)
    total = sum(v for k, v in clock.items() if k not in (COMMITS, RENDER))
    cores = os.cpu_count() or 1
    lines = [
        "## Where the ingest's CPU goes",
        "",
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC (`python bench/stages.py`): each "
        f"stage of the batch loop alone, one after another, on the {rows:,} rows of "
        f"`{path.name}`; CPU seconds of the whole process (every thread).",
        "",
        "| stage | CPU s | share | µs per row |",
        "|---|---:|---:|---:|",
    ]
    for stage, cpu in clock.items():
        share = "" if stage in (COMMITS, RENDER) else f"{cpu / total:.0%}"
        lines.append(f"| {stage} | {cpu:.2f} | {share} | {cpu / rows * 1e6:.1f} |")
    lines += [
        f"| **total** | **{total:.2f}** | | **{total / rows * 1e6:.1f}** |",
        "",
        f"With the stages spread perfectly over {cores} cores the ingest could not be faster "
        f"than {total / cores:.1f} s for these rows, about **{rows * cores / total:,.0f} rows/s**, "
        "before sealing the file, encrypting it into bronze and publishing.",
    ]
    print("\n".join(lines))
    write_section("stages", "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

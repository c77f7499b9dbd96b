"""Great Expectations suites on every batch, before anything is published.

The suites are JSON files in `expectations/` (`silver`, `gold`, `original_form`), loaded as
they are, so a reviewer reads the rules where they live. GX has no polars engine: parts are read
back in chunks of `CHUNK_ROWS` and handed over as Arrow-backed pandas frames, so memory stays
bounded whatever the file size. Results keep counts but no failing values
(`partial_unexpected_count` 0): a failed expectation is named, never the values that failed it,
so neither logs nor Data Docs can echo an identifier. Data Docs (HTML) are built in `CDR_DATA_DOCS` (default `var/data_docs`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger("pipeline.quality")
logging.getLogger("great_expectations").setLevel(logging.WARNING)
# GX 1.24 announces, on every validation, that string row conditions go away in GX 2.0; the
# suites keep them because they are readable JSON. Said once here instead of per chunk.
warnings.filterwarnings(
    "ignore", message=".*row_condition parameter is deprecated", category=DeprecationWarning
)
warnings.filterwarnings(
    "ignore", message=".*condition_parser parameter is deprecated", category=DeprecationWarning
)
CHUNK_ROWS = 50_000
# Counts and observed schema, but no failing values: nothing a result holds can be an identifier.
RESULT_FORMAT = {
    "result_format": "SUMMARY",
    "partial_unexpected_count": 0,
    "include_unexpected_rows": False,
}
EXPECTATIONS = Path(__file__).resolve().parent.parent / "expectations"


def suites_dir() -> Path:
    return Path(os.environ.get("CDR_EXPECTATIONS") or EXPECTATIONS)


def load_suite_json(name: str) -> dict[str, Any]:
    suite: dict[str, Any] = json.loads((suites_dir() / f"{name}.json").read_text())
    return suite


class Quality:
    """Runs suites through a file-backed GX context whose Data Docs record every validation."""

    def __init__(self, docs_root: Path) -> None:
        self.root = docs_root
        self.root.mkdir(parents=True, exist_ok=True)
        self._checkpoints: dict[str, Any] = {}
        self._fast_defs: dict[str, tuple[Any, Any]] = {}
        self._ctx: Any = None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer of the GX project at a time (parallel tasks on one host share it)."""
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _context(self) -> Any:
        if self._ctx is None:
            import great_expectations as gx
            from great_expectations.data_context.types.base import ProgressBarsConfig

            self._ctx = gx.get_context(mode="file", project_root_dir=self.root)
            self._ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        return self._ctx

    def _checkpoint(self, name: str) -> Any:
        if name in self._checkpoints:
            return self._checkpoints[name]
        import great_expectations as gx

        ctx = self._context()
        try:
            source = ctx.data_sources.get("cdr")
        except (KeyError, ValueError):
            source = ctx.data_sources.add_pandas("cdr")
        try:
            asset = source.get_asset(name)
        except LookupError:
            asset = source.add_dataframe_asset(name)
        try:
            batch = asset.get_batch_definition("part")
        except (KeyError, LookupError):
            batch = asset.add_batch_definition_whole_dataframe("part")
        # The suite is always the file's current text: replace what the project holds.
        suite = gx.ExpectationSuite(**load_suite_json(name))
        for store in (ctx.checkpoints, ctx.validation_definitions, ctx.suites):
            with contextlib.suppress(Exception):  # absent on first use
                store.delete(f"{name}-check" if store is not ctx.suites else name)
        suite = ctx.suites.add(suite)
        definition = ctx.validation_definitions.add(
            gx.ValidationDefinition(name=f"{name}-check", data=batch, suite=suite)
        )
        checkpoint = ctx.checkpoints.add(
            gx.Checkpoint(
                name=f"{name}-check",
                validation_definitions=[definition],
                actions=[gx.checkpoint.UpdateDataDocsAction(name="data-docs")],
                result_format=RESULT_FORMAT,
            )
        )
        self._checkpoints[name] = checkpoint
        return checkpoint

    def _fast(self, name: str) -> tuple[Any, Any]:
        """An in-memory batch definition and suite: validates chunks without storing anything."""
        if name not in self._fast_defs:
            import great_expectations as gx
            from great_expectations.data_context.types.base import ProgressBarsConfig

            ctx = gx.get_context(mode="ephemeral")
            ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
            batch = (
                ctx.data_sources.add_pandas("chunks")
                .add_dataframe_asset(name)
                .add_batch_definition_whole_dataframe("chunk")
            )
            self._fast_defs[name] = (batch, gx.ExpectationSuite(**load_suite_json(name)))
        return self._fast_defs[name]

    @staticmethod
    def _failures(results: Any) -> list[str]:
        failed = []
        for r in results:
            if not r.success:
                cfg = r.expectation_config
                failed.append(f"{cfg.type}({cfg.kwargs.get('column', '')})")
        return failed

    def validate_frame(self, suite: str, frame: Any, run_name: str) -> list[str]:
        """Validate a pandas frame and record the result in Data Docs; the failing expectations."""
        import great_expectations as gx

        with self._locked():
            result = self._checkpoint(suite).run(
                batch_parameters={"dataframe": frame}, run_id=gx.RunIdentifier(run_name=run_name)
            )
        return [
            f for outcome in result.run_results.values() for f in self._failures(outcome.results)
        ]

    def validate_parquet(self, suite: str, paths: list[Path], run_name: str) -> list[str]:
        """Validate Parquet parts in chunks of up to CHUNK_ROWS rows (small parts together,
        large ones split), so memory stays bounded; the failing expectations.

        Every chunk is validated in memory; one chunk per call (the first that failed, else the
        first) is validated again into the Data Docs project, so the docs show each file's
        verdict without growing by a page per chunk.
        """
        batch_def, expectation_suite = self._fast(suite)
        failed: list[str] = []
        shown: Any = None

        def check(batches: list[pa.RecordBatch]) -> None:
            nonlocal shown
            frame = pa.Table.from_batches(batches).to_pandas()
            result = batch_def.get_batch(batch_parameters={"dataframe": frame}).validate(
                expectation_suite, result_format=RESULT_FORMAT
            )
            problems = self._failures(result.results)
            if shown is None or (problems and not failed):
                shown = frame
            failed.extend(f for f in problems if f not in failed)

        pending: list[pa.RecordBatch] = []
        rows = 0
        for path in paths:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=CHUNK_ROWS):
                pending.append(batch)
                rows += batch.num_rows
                if rows >= CHUNK_ROWS:
                    check(pending)
                    pending, rows = [], 0
        if pending:
            check(pending)
        if shown is not None:
            self.validate_frame(suite, shown, run_name)
        return failed

    def docs_index(self) -> Path:
        return self.root / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"

"""Great Expectations suites on every batch, before anything is published.

The suites are JSON files in `expectations/` (`silver`, `silver_identifiers`, `gold`,
`original_form`), loaded as they are, so a reviewer reads the rules where they live. GX has no
polars engine: data is handed over as Arrow-backed pandas frames, a small file whole, a large one
in chunks of `CHUNK_ROWS` rows of only the columns each group of expectations reads (`plan`), so
memory stays bounded whatever the file size. Results keep counts but no failing values
(`partial_unexpected_count` 0): a failed expectation is named, never the values that failed it,
so neither logs nor Data Docs can echo an identifier. Data Docs (HTML) are built in
`CDR_DATA_DOCS` (default `var/data_docs`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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
#: up to this many rows, a suite runs once on the whole frame (the common small file)
FULL_WIDTH_ROWS = 50_000
#: rows per chunk of a column group: a few columns of this many rows take tens of MiB
CHUNK_ROWS = 250_000
#: table-level expectations that need only the column list, checked once on the schema
SCHEMA_CHECKS = frozenset(
    {
        "expect_table_columns_to_match_ordered_list",
        "expect_table_columns_to_match_set",
        "expect_table_column_count_to_equal",
    }
)
# Counts and observed schema, but no failing values: nothing a result holds can be an identifier.
RESULT_FORMAT = {
    "result_format": "SUMMARY",
    "partial_unexpected_count": 0,
    "include_unexpected_rows": False,
}
EXPECTATIONS = Path(__file__).resolve().parent.parent / "expectations"


def _no_fingerprints() -> None:
    """Stop GX hashing every cell of every batch to label it.

    GX's pandas engine fingerprints a batch (md5 over `hash_pandas_object`) unless the frame is
    over `HASH_THRESHOLD` bytes. The fingerprint only labels the batch in its result, and it
    cost as much as all the expectations together; results here are labelled by run name.
    """
    from great_expectations.execution_engine import pandas_execution_engine

    pandas_execution_engine.HASH_THRESHOLD = 0


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
        self._fast_defs: dict[str, Any] = {}
        self._fast_lock = threading.Lock()
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

            _no_fingerprints()

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

    def _fast(self, name: str) -> Any:
        """An in-memory batch definition: validates chunks without storing anything."""
        with self._fast_lock:  # silver and gold are validated on two threads
            if name not in self._fast_defs:
                import great_expectations as gx
                from great_expectations.data_context.types.base import ProgressBarsConfig

                _no_fingerprints()
                ctx = gx.get_context(mode="ephemeral")
                ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
                self._fast_defs[name] = (
                    ctx.data_sources.add_pandas("chunks")
                    .add_dataframe_asset(name)
                    .add_batch_definition_whole_dataframe("chunk")
                )
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
        """Validate Parquet parts and record the result in Data Docs; the failing expectations.

        Up to FULL_WIDTH_ROWS rows are validated whole in one pass. Larger files are validated
        group by group (`plan`), each group reading only its columns in chunks of CHUNK_ROWS,
        so memory stays bounded by one chunk of a few columns whatever the file size.
        """
        rows = sum(pq.ParquetFile(path).metadata.num_rows for path in paths)
        if rows <= FULL_WIDTH_ROWS:
            table = pa.concat_tables(pq.read_table(path) for path in paths)
            return self.validate_frame(suite, table.to_pandas(), run_name)
        schema = pq.ParquetFile(paths[0]).schema_arrow
        run = self.run(suite, schema.names)
        run.check_schema(schema)
        for columns in run.column_sets():
            present = tuple(c for c in columns if c in schema.names)
            for chunk in _chunks(paths, present):
                run.check(columns, chunk)
        return run.finish(run_name)

    def run(self, suite: str, columns: list[str]) -> SuiteRun:
        """A validation of `suite` over data with `columns`, fed in chunks (`SuiteRun`)."""
        return SuiteRun(self, suite, plan(load_suite_json(suite), columns), self._fast(suite))

    def record(self, result: Any, run_name: str) -> None:
        """Store a validation result built from chunks in the Data Docs project and render it."""
        from great_expectations.core.run_identifier import RunIdentifier
        from great_expectations.data_context.types.resource_identifiers import (
            ExpectationSuiteIdentifier,
            ValidationResultIdentifier,
        )

        with self._locked():
            self._checkpoint(result.suite_name)  # the suite's current text, for its docs page
            ctx = self._context()
            run_id = RunIdentifier(run_name=run_name)
            result.meta["run_id"] = run_id
            result.meta["validation_time"] = run_id.run_time
            suite_id = ExpectationSuiteIdentifier(name=result.suite_name)
            key = ValidationResultIdentifier(
                expectation_suite_identifier=suite_id,
                run_id=run_id,
                batch_identifier=f"cdr-{result.suite_name}-{run_name}",
            )
            ctx.validation_results_store.store_validation_results(
                suite_validation_result=result,
                suite_validation_result_identifier=key,
                expectation_suite_identifier=suite_id,
            )
            ctx.build_data_docs(resource_identifiers=[key])

    def docs_index(self) -> Path:
        return self.root / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"


@dataclass(frozen=True)
class Plan:
    """A suite split by the columns its expectations read.

    GX's pandas engine filters the whole frame for every metric it computes, so a wide frame
    costs every expectation a copy of every column. Handing each group of expectations only the
    columns it reads gives the same verdicts at a fraction of the cost. Table-level
    expectations about the column list are checked once, on the schema (no rows).
    """

    expectations: list[dict[str, Any]]
    schema_checks: list[int]
    groups: dict[tuple[str, ...], list[int]] = field(default_factory=dict)


def plan(suite: dict[str, Any], columns: list[str]) -> Plan:
    """Group a suite's expectations by the columns each reads (its own and its row condition's)."""
    expectations = suite["expectations"]
    out = Plan(expectations, [])
    for index, expectation in enumerate(expectations):
        kind, kwargs = expectation["type"], expectation["kwargs"]
        if kind in SCHEMA_CHECKS:
            out.schema_checks.append(index)
            continue
        if kind.startswith("expect_table_"):
            raise ValueError(
                f"suite {suite['name']}: {kind} needs whole rows; suites are validated in "
                f"column groups and support only {', '.join(sorted(SCHEMA_CHECKS))} at table level"
            )
        read = {kwargs[k] for k in ("column", "column_A", "column_B") if k in kwargs}
        read.update(kwargs.get("column_list", []))
        read.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", kwargs.get("row_condition") or ""))
        key = tuple(c for c in columns if c in read) or tuple(sorted(read))
        out.groups.setdefault(key, []).append(index)
    return out


class SuiteRun:
    """One suite validated over data fed in chunks; the verdict is that of the whole data.

    Each expectation's results over the chunks are merged (counts summed, success only if every
    chunk passed), so the failing expectations and the Data Docs page describe the whole file.
    Uniqueness holds within a chunk (the ingest checks `record_id` over the file itself).
    """

    def __init__(self, quality: Quality, suite: str, plan: Plan, batch_def: Any) -> None:
        import great_expectations as gx

        self._quality, self.suite, self.plan, self._batch_def = quality, suite, plan, batch_def
        self._suites = {
            key: gx.ExpectationSuite(
                name=suite, expectations=[plan.expectations[i] for i in indices]
            )
            for key, indices in [(("",), plan.schema_checks), *plan.groups.items()]
            if indices
        }
        self._results: dict[int, list[Any]] = {}
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self.rows = 0
        self.seconds = 0.0  # spent validating (reported, never asserted)
        self._schema_checked = False
        #: the merged result, once `finish` has validated in chunks
        self.result: Any = None

    def column_sets(self) -> list[tuple[str, ...]]:
        return list(self.plan.groups)

    def _validate(self, key: tuple[str, ...], indices: list[int], frame: Any) -> None:
        started = time.perf_counter()
        result = self._batch_def.get_batch(batch_parameters={"dataframe": frame}).validate(
            self._suites[key], result_format=RESULT_FORMAT
        )
        self.seconds += time.perf_counter() - started
        for index, outcome in zip(indices, result.results, strict=True):
            self._results.setdefault(index, []).append(outcome)

    def check_schema(self, schema: pa.Schema) -> None:
        """The table-level expectations, once, on the column list (a frame with no rows)."""
        if self.plan.schema_checks and not self._schema_checked:
            self._validate(("",), self.plan.schema_checks, schema.empty_table().to_pandas())
        self._schema_checked = True

    def check(self, columns: tuple[str, ...], chunk: pa.Table) -> None:
        """Validate one chunk of one column group (a column the data lacks fails its checks)."""
        if columns == self.column_sets()[0]:
            self.rows += chunk.num_rows
        present = [c for c in columns if c in chunk.column_names]
        self._validate(columns, self.plan.groups[columns], chunk.select(present).to_pandas())

    def add(self, table: pa.Table) -> None:
        """Feed rows of every column (in-memory data); validated a chunk at a time."""
        self._buffer.append(table)
        self._buffered += table.num_rows
        if self._buffered >= CHUNK_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        chunk = pa.concat_tables(self._buffer).combine_chunks()
        self._buffer, self._buffered = [], 0
        self.check_schema(chunk.schema)
        for columns in self.column_sets():
            self.check(columns, chunk)

    def finish(self, run_name: str) -> list[str]:
        """Validate what is left, record the merged result in Data Docs; the failures."""
        if self._buffer and not self._results and self._buffered <= FULL_WIDTH_ROWS:
            # Small enough to validate whole through the project's checkpoint in one pass.
            frame = pa.concat_tables(self._buffer).to_pandas()
            self._buffer = []
            return self._quality.validate_frame(self.suite, frame, run_name)
        self._flush()
        if not self._results:
            return []
        results = [_merge(self._results[i]) for i in sorted(self._results)]
        self.result = _suite_result(self.suite, results, self.rows)
        self._quality.record(self.result, run_name)
        return Quality._failures(results)


def _chunks(paths: list[Path], columns: tuple[str, ...]) -> Iterator[pa.Table]:
    """The parts' `columns` in chunks of CHUNK_ROWS rows (the last one shorter)."""
    pending: list[pa.RecordBatch] = []
    rows = 0
    for path in paths:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=CHUNK_ROWS, columns=columns):
            pending.append(batch)
            rows += batch.num_rows
            while rows >= CHUNK_ROWS:
                table = pa.Table.from_batches(pending)
                yield table.slice(0, CHUNK_ROWS).combine_chunks()
                pending = table.slice(CHUNK_ROWS).to_batches()
                rows -= CHUNK_ROWS
    if rows:
        yield pa.Table.from_batches(pending).combine_chunks()


def _merge(parts: list[Any]) -> Any:
    """One expectation's results over several chunks, as one result over all of them."""
    from great_expectations.core import ExpectationValidationResult

    if len(parts) == 1:
        return parts[0]
    failed = [p for p in parts if not p.success]
    first = (failed or parts)[0]
    result = dict(first.result)
    if all("element_count" in p.result for p in parts):
        n = sum(p.result["element_count"] for p in parts)
        missing = sum(p.result.get("missing_count") or 0 for p in parts)
        unexpected = sum(p.result.get("unexpected_count") or 0 for p in parts)
        present = n - missing
        result.update(
            element_count=n,
            missing_count=missing,
            missing_percent=100 * missing / n if n else None,
            unexpected_count=unexpected,
            unexpected_percent=100 * unexpected / present if present else None,
            unexpected_percent_total=100 * unexpected / n if n else None,
            unexpected_percent_nonmissing=100 * unexpected / present if present else None,
            partial_unexpected_list=[],
        )
    return ExpectationValidationResult(
        success=not failed,
        expectation_config=first.expectation_config,
        result=result,
        exception_info=first.exception_info,
    )


def _suite_result(suite: str, results: list[Any], rows: int) -> Any:
    import great_expectations as gx
    from great_expectations.core import ExpectationSuiteValidationResult

    passed = sum(1 for r in results if r.success)
    return ExpectationSuiteValidationResult(
        success=passed == len(results),
        results=results,
        suite_name=suite,
        statistics={
            "evaluated_expectations": len(results),
            "successful_expectations": passed,
            "unsuccessful_expectations": len(results) - passed,
            "success_percent": 100 * passed / len(results) if results else None,
        },
        meta={
            "great_expectations_version": gx.__version__,
            "batch_spec": {"rows": rows, "validated": f"column groups, {CHUNK_ROWS} rows a chunk"},
            "active_batch_definition": {"data_asset_name": suite},
        },
    )

"""Great Expectations suites on every row, before anything is published; Data Docs in one place.

The suites are JSON files in `pipeline/expectations/` (`silver`, `silver_identifiers`, `gold`,
`original_form`), loaded as they are, so a reviewer reads the rules where they live.

Who evaluates them:
- every row of an ingested file, by polars in the ingest's batch loop
  (`pipeline.records.expectations_engine`: the same result fields as GX, merged over the
  batches), whose verdict is written as GX's own `ExpectationSuiteValidationResult` JSON
  without importing GX (`result_document`, `Quality.write_result`);
- every frame handed to `validate_frame` (`verify`'s checks), by GX's own pandas engine.

The results are kept where GX's validation results store keeps them and rendered by GX into
Data Docs once a run (`Quality.render_docs`: the ingest DAG's `data_docs` task, `pipeline
docs`). Each `Quality` has its own in-memory GX context
(nothing shared in memory or on disk but the results and the site), so parallel renderings on one
host or on many workers never see each other's suites; all of them write to one site: a folder
(`CDR_DATA_DOCS`, default `var/data_docs`) or, in production, the object store
(`CDR_DATA_DOCS=s3://bucket/data_docs`). Results name failing rows by `record_id` only, never
by value, so neither logs nor Data Docs can echo an identifier.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import threading
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.core.store import LocalStore, ObjectStore, open_store
from pipeline.records import detector
from pipeline.records.expectations_engine import (
    INDEX_COLUMN,
    CompiledSuite,
    SuiteTally,
    compile_suite,
)
from pipeline.records.normalise import numbering_plan
from pipeline.records.schema import CURRENCIES, OTHER

log = logging.getLogger("pipeline.records.quality")
logging.getLogger("great_expectations").setLevel(logging.WARNING)
# GX 1.24 announces, on every validation, that string row conditions go away in GX 2.0; the
# suites keep them because they are readable JSON. Said once here instead of per batch.
warnings.filterwarnings(
    "ignore", message=".*row_condition parameter is deprecated", category=DeprecationWarning
)
warnings.filterwarnings(
    "ignore", message=".*condition_parser parameter is deprecated", category=DeprecationWarning
)
#: where, under the site's root, GX's validation results store keeps the results (JSON)
RESULTS_PREFIX = "results"
#: the suites, shipped inside the package (the wheel carries them as package data)
EXPECTATIONS = Path(__file__).resolve().parents[1] / "expectations"
#: how a result's run time is written in its key (as GX's `RunIdentifier` writes it)
RUN_TIME_PATH = "%Y%m%dT%H%M%S.%fZ"
#: the counts GX and the evaluator must agree on for a file GX validates too
AGREED = ("element_count", "unexpected_count", "missing_count")


def result_format(index_column: str | None) -> dict[str, Any]:
    """GX's SUMMARY, failing rows named by `index_column` (values are scrubbed after)."""
    fmt: dict[str, Any] = {"result_format": "SUMMARY", "partial_unexpected_count": 20}
    if index_column:
        fmt["unexpected_index_column_names"] = [index_column]
    return fmt


def suites_dir() -> Path:
    return Path(os.environ.get("CDR_EXPECTATIONS") or EXPECTATIONS)


def load_suite_json(name: str, region: str | None = None) -> dict[str, Any]:
    """A suite as its file states it, with the placeholders the pipeline defines in one place
    filled in: `$identifier` (the identifier detector's pattern for the deployment's `region`,
    `pipeline.records.detector`) and `$currencies` (ISO 4217 and `other`,
    `pipeline.records.schema`).

    The detector's pattern (over 100 KB) is recorded in results by name (`as_written`): the
    expectation's `meta` says which argument held `$identifier`, the pattern's SHA-256, the
    region and the numbering plan it was built for, from which `detector.pattern` rebuilds it.
    Written out, nine expectations a suite made each file's results 2 MB."""
    suite: dict[str, Any] = json.loads((suites_dir() / f"{name}.json").read_text())
    filled = {"$identifier": lambda: detector.pattern(region), "$currencies": lambda: [*CURRENCIES, OTHER]}  # fmt: skip
    for expectation in suite.get("expectations", []):
        kwargs = expectation.get("kwargs", {})
        for key, value in kwargs.items():
            if isinstance(value, str) and value in filled:
                kwargs[key] = filled[value]()
                if value == "$identifier":
                    expectation.setdefault("meta", {}).update(
                        as_written={key: value},
                        pattern_sha256=hashlib.sha256(kwargs[key].encode()).hexdigest(),
                        detector_region=region,
                        numbering_plan=numbering_plan(),
                    )
    return suite


def as_written(config: dict[str, Any]) -> dict[str, Any]:
    """An expectation's arguments as its suite file writes them: the detector's pattern by its
    name (`load_suite_json`)."""
    return {**config.get("kwargs", {}), **config.get("meta", {}).get("as_written", {})}


def quiet_context(project_config: Any = None) -> Any:
    """An in-memory GX context without progress bars or per-batch fingerprints.

    GX's pandas engine fingerprints a batch (md5 over every cell) unless the frame is over
    `HASH_THRESHOLD` bytes; the fingerprint only labels the batch, and costs as much as the
    expectations. Results here are labelled by run name instead.
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.execution_engine import pandas_execution_engine

    pandas_execution_engine.HASH_THRESHOLD = 0
    _parse_each_regex_once()
    ctx = gx.get_context(mode="ephemeral", project_config=project_config)
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    return ctx


def _parse_each_regex_once() -> None:
    """pandas parses a regex with `re`'s parser on every `str.contains` to choose its engine;
    for the identifier detector's pattern (tens of kilobytes) that cost seconds per small file.
    The parse depends on the pattern alone, so it is kept (pandas' own function, cached)."""
    from pandas.core.arrays._arrow_string_mixins import ArrowStringArrayMixin as Mixin

    if not hasattr(Mixin._regex_nodes, "cache_info"):
        Mixin._regex_nodes = staticmethod(functools.lru_cache(maxsize=64)(Mixin._regex_nodes))


#: the object stores GX's store backends write to, by id (GX builds backends from plain config)
_SITE_STORES: dict[str, ObjectStore] = {}


def _backend_class() -> type:
    """`ObjectStoreBackend`, defined on first use so that importing this module stays light."""
    global ObjectStoreBackend
    if "ObjectStoreBackend" in globals():
        return ObjectStoreBackend  # type: ignore[no-any-return]
    from great_expectations.data_context.store.tuple_store_backend import TupleStoreBackend

    class _Backend(TupleStoreBackend):  # type: ignore[misc]
        """GX's tuple store over one of the pipeline's object stores (a folder or S3).

        GX 1.24 ships only a filesystem backend; this one writes the same keys through
        `pipeline.core.store`, whose writes are atomic (a reader never sees half a page) and which
        speaks S3 with the pipeline's endpoint and credentials.
        """

        def __init__(self, store_id: str, prefix: str = "", **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._store = _SITE_STORES[store_id]
            self._prefix = prefix.strip("/")
            self._config = {
                "store_id": store_id,
                "prefix": prefix,
                "module_name": __name__,
                "class_name": "ObjectStoreBackend",
                **kwargs,
            }

        def _path(self, key: Any) -> str:
            if not isinstance(key, tuple):
                key = key.to_tuple()
            rel = self._convert_key_to_filepath(key)
            return f"{self._prefix}/{rel}" if self._prefix else rel

        def _get(self, key: Any) -> str:
            from great_expectations.exceptions import InvalidKeyError

            try:
                return self._store.get_bytes(self._path(key)).decode().rstrip("\n")
            except (FileNotFoundError, KeyError) as exc:
                raise InvalidKeyError(f"no object at {self._path(key)}") from exc

        def _get_all(self) -> list[Any]:
            return [self._get(k) for k in self.list_keys() if k != self.STORE_BACKEND_ID_KEY]

        def _set(self, key: Any, value: Any, **kwargs: Any) -> str:
            data = value.encode() if isinstance(value, str) else value
            self._store.put_bytes(self._path(key), data)
            return self._path(key)

        def _move(self, source_key: Any, dest_key: Any, **kwargs: Any) -> Any:
            if not self._has_key(source_key):
                return False
            self._store.put_bytes(
                self._path(dest_key), self._store.get_bytes(self._path(source_key))
            )
            self._store.delete(self._path(source_key))
            return dest_key

        def list_keys(self, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
            root = "/".join(p for p in (self._prefix, *prefix) if p)
            keys = []
            for info in self._store.list(f"{root}/" if root else ""):
                rel = info.key[len(self._prefix) + 1 :] if self._prefix else info.key
                if self._is_missing_prefix_or_suffix(
                    self.filepath_prefix, self.filepath_suffix, rel
                ):
                    continue
                key = self._convert_filepath_to_key(rel)
                if key and not self.is_ignored_key(key):
                    keys.append(key)
            return keys

        def remove_key(self, key: Any) -> bool:
            if not self._has_key(key):
                return False
            self._store.delete(self._path(key))
            return True

        def _has_key(self, key: Any) -> bool:
            return self._store.exists(self._path(key))

        def get_url_for_key(self, key: Any, protocol: Any = None) -> str:
            uri = self._store.uri(self._path(key))
            return uri if "://" in uri else f"file://{uri}"

        @property
        def config(self) -> dict[str, Any]:
            return self._config

    _Backend.__name__ = _Backend.__qualname__ = "ObjectStoreBackend"
    ObjectStoreBackend = _Backend
    return _Backend


def __getattr__(name: str) -> Any:  # GX loads the backend class by module and name
    if name == "ObjectStoreBackend":
        return _backend_class()
    raise AttributeError(name)


class Quality:
    """The run's GX project (in memory) and the shared site its results and Data Docs go to."""

    def __init__(
        self,
        docs: str | Path,
        endpoint_url: str | None = None,
        credentials: dict[str, str] | None = None,
        client: Any = None,
        region: str | None = None,
    ) -> None:
        #: the deployment's region: the national numbers the identifier detector reads
        self.region = region
        self.location = str(docs)
        if self.location.startswith("s3://"):
            self.site: ObjectStore = open_store(
                self.location, endpoint_url, client=client, credentials=credentials
            )
        else:
            Path(self.location).mkdir(parents=True, exist_ok=True)
            self.site = LocalStore(self.location)
        self._ctx: Any = None
        self._lock = threading.Lock()
        self._gx_lock = threading.RLock()  # the GX context and suites, built once
        self._suites: dict[str, CompiledSuite] = {}
        self._gx_suites: dict[str, Any] = {}

    def _context(self) -> Any:
        """One in-memory context per run; its results store and Data Docs site are shared."""
        with self._gx_lock:
            return self._ctx or self._new_context()

    def _new_context(self) -> Any:
        if self._ctx is None:
            from great_expectations.data_context.types.base import (
                DataContextConfig,
                InMemoryStoreBackendDefaults,
            )

            _backend_class()
            store_id = uuid.uuid4().hex
            _SITE_STORES[store_id] = self.site
            backend = {"module_name": __name__, "class_name": "ObjectStoreBackend", "store_id": store_id}  # fmt: skip
            defaults = InMemoryStoreBackendDefaults()
            stores = dict(defaults.stores)
            stores[defaults.validation_results_store_name] = {
                "class_name": "ValidationResultsStore",
                "store_backend": {**backend, "prefix": RESULTS_PREFIX},
            }
            config = DataContextConfig(
                store_backend_defaults=defaults,
                stores=stores,
                data_docs_sites={
                    "cdr": {
                        "class_name": "SiteBuilder",
                        "store_backend": backend,
                        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                    }
                },
            )
            self._ctx = quiet_context(config)
        return self._ctx

    def compiled(self, suite: str) -> CompiledSuite:
        """The suite compiled for the batch evaluator (refused on load if unsupported)."""
        with self._lock:
            if suite not in self._suites:
                self._suites[suite] = compile_suite(load_suite_json(suite, self.region))
            return self._suites[suite]

    def tally(self, suite: str, index_column: str | None = INDEX_COLUMN) -> SuiteTally:
        """A fresh evaluation of `suite` over one file's batches."""
        return SuiteTally(self.compiled(suite), index_column)

    def _gx_suite(self, name: str) -> Any:
        import great_expectations as gx

        with self._gx_lock:
            if name not in self._gx_suites:
                self._gx_suites[name] = self._context().suites.add(
                    gx.ExpectationSuite(**load_suite_json(name, self.region))
                )
            return self._gx_suites[name]

    def gx_validate(self, suite: str, frame: Any, index_column: str | None) -> dict[str, Any]:
        """GX's own pandas engine on a pandas frame: the suite's result as GX's JSON, values
        scrubbed."""
        with self._lock:
            ctx = self._context()
            gx_suite = self._gx_suite(suite)
            try:
                source = ctx.data_sources.get("frames")
            except (KeyError, ValueError):
                source = ctx.data_sources.add_pandas("frames")
            try:
                asset = source.get_asset(suite)
            except LookupError:
                asset = source.add_dataframe_asset(suite)
            batch_def = next(iter(asset.batch_definitions), None) or (
                asset.add_batch_definition_whole_dataframe("whole")
            )
        if index_column and index_column not in frame.columns:
            index_column = None
        result = batch_def.get_batch(batch_parameters={"dataframe": frame}).validate(
            gx_suite, result_format=result_format(index_column)
        )
        document: dict[str, Any] = result.to_json_dict()
        for outcome in document["results"]:
            _scrub(outcome["result"], index_column)
        return document

    def validate_frame(
        self, suite: str, frame: Any, run_name: str, index_column: str | None = INDEX_COLUMN
    ) -> list[str]:
        """Validate a pandas frame with GX, record the result and render it; the failures."""
        document = self.gx_validate(suite, frame, index_column)
        self.write_result(document, run_name)
        self.render_docs()
        return failures(document)

    def write_result(self, document: dict[str, Any], run_name: str) -> str:
        """Store a suite's result where GX's validation results store keeps it, as GX's own
        JSON, without importing GX; `render_docs` turns it into a page. The key written."""
        run_time = dt.datetime.now(dt.UTC)
        document["meta"]["run_id"] = {"run_name": run_name, "run_time": run_time.isoformat()}
        document["meta"]["validation_time"] = run_time.isoformat()
        suite = document["suite_name"]
        key = "/".join((RESULTS_PREFIX, suite, run_name, run_time.strftime(RUN_TIME_PATH), f"cdr-{suite}-{run_name}.json"))  # fmt: skip
        self.site.put_bytes(key, json.dumps(document, sort_keys=True).encode())  # C encoder
        return key

    def pending(self) -> list[tuple[str, ...]]:
        """The stored results without a page yet: (suite, run name, run time, batch) each."""
        pages = {i.key[: -len(".html")] for i in self.site.list("validations/") if i.key.endswith(".html")}  # fmt: skip
        keys = []
        for info in self.site.list(f"{RESULTS_PREFIX}/"):
            rel = info.key[len(RESULTS_PREFIX) + 1 :]
            parts = tuple(rel[: -len(".json")].split("/"))
            if rel.endswith(".json") and len(parts) == 4 and f"validations/{rel[:-5]}" not in pages:
                keys.append(parts)
        return keys

    def render_docs(self) -> int:
        """Render the results stored since the last rendering into Data Docs, with GX, and the
        site's index over every result; how many results were rendered. Once per run (the DAG's
        `data_docs` task, `pipeline docs`), never per file: GX's import and the index rebuild
        are a fixed cost the ingest does not pay."""
        with self._lock, self._site_lock():
            pending = self.pending()
            if not pending:
                return 0
            from great_expectations.data_context.types.resource_identifiers import (
                ValidationResultIdentifier,
            )

            ctx = self._context()
            for suite in sorted({p[0] for p in pending}):
                if (suites_dir() / f"{suite}.json").exists():
                    self._gx_suite(suite)  # the suite's page is rendered beside its results
            ids = [ValidationResultIdentifier.from_tuple(p) for p in pending]
            ctx.build_data_docs(resource_identifiers=ids)
            return len(ids)

    @contextmanager
    def _site_lock(self) -> Iterator[None]:
        """On a local folder, one process rebuilds the index at a time (on S3 every object is
        written whole, and the last index written lists every result)."""
        if not isinstance(self.site, LocalStore):
            yield
            return
        with open(Path(self.location) / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def docs_index(self) -> str:
        """Where the site's index page is (a path, or an s3:// URI)."""
        return self.site.uri("index.html")

    def has_docs(self) -> bool:
        return self.site.exists("index.html")


def _scrub(result: dict[str, Any], index_column: str | None) -> None:
    """Keep counts and record ids; drop every failing value GX put in the result."""
    result.pop("partial_unexpected_counts", None)
    if "partial_unexpected_list" in result:
        result["partial_unexpected_list"] = []
        result["partial_unexpected_counts"] = []
    if "partial_unexpected_index_list" in result:
        result["partial_unexpected_index_list"] = [
            {index_column: row.get(index_column)} for row in result["partial_unexpected_index_list"]
        ] if index_column else []  # fmt: skip
    result.pop("unexpected_list", None)
    result.pop("unexpected_index_list", None)
    result.pop("unexpected_index_query", None)


def result_document(tally: SuiteTally) -> dict[str, Any]:
    """The tally's merged verdict as GX's `ExpectationSuiteValidationResult` JSON (the document
    its validation results store keeps and Data Docs render), built without importing GX: each
    expectation as GX serialises its configuration, in the suite's order, with an id fixed by
    the suite and position (GX's own would be a fresh uuid4 per context)."""
    results = []
    for n, (config, success, fields, error) in enumerate(tally.results()):
        expectation = {
            "id": str(uuid.uuid5(_IDS, f"{tally.suite.name}/{n}/{config['type']}")),
            "kwargs": as_written(config),
            "meta": config.get("meta", {}),
            "severity": config.get("severity", "critical"),
            "type": config["type"],
        }
        results.append({
            "exception_info": {"exception_message": error, "exception_traceback": None,
                               "raised_exception": error is not None},
            "expectation_config": expectation, "meta": {}, "result": fields, "success": success,
        })  # fmt: skip
    passed = sum(1 for r in results if r["success"])
    return {
        "id": None,
        "meta": {
            "active_batch_definition": {"data_asset_name": tally.suite.name},
            "batch_spec": {"rows": tally.rows, "validated": "every row, by polars, per batch"},
            "great_expectations_version": _gx_version(),
        },
        "results": results,
        "statistics": {
            "evaluated_expectations": len(results),
            "success_percent": 100 * passed / len(results) if results else None,
            "successful_expectations": passed,
            "unsuccessful_expectations": len(results) - passed,
        },
        "success": passed == len(results),
        "suite_name": tally.suite.name,
        "suite_parameters": {},
    }


#: the namespace of the evaluator's expectation ids
_IDS = uuid.UUID("5b1f3c2e-7d0a-4c61-9a57-0cd2b1e4f8a3")


@functools.cache
def _gx_version() -> str:
    """GX's version from its installed metadata (importing GX costs seconds)."""
    return importlib.metadata.version("great_expectations")


def failures(document: dict[str, Any]) -> list[str]:
    """The failing expectations of a result, by type and column (never a value)."""
    failed = []
    for r in document["results"]:
        if not r["success"]:
            cfg = r["expectation_config"]
            failed.append(f"{cfg['type']}({cfg['kwargs'].get('column', '')})")
    return failed


def frame_for_gx(frame: pl.DataFrame) -> Any:
    """A polars frame as GX's pandas engine reads it (through Arrow, as from Parquet)."""
    return frame.to_arrow().to_pandas()

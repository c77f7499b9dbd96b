"""OpenLineage events of the ingest and retention tasks, through Airflow's OpenLineage provider.

The provider emits a START and a COMPLETE event for every task once a transport is configured
(`[openlineage] transport`, or `OPENLINEAGE_URL` for Marquez; docs/operations.md); with none it
is off and costs nothing. For a `@lineage_task` it asks the operator for the task's datasets:

- **ingest**: as input, each landing file by its digest (`landing/<source>/sha256:<digest>`,
  never its name, which could hold a number), with its rows and bytes; as outputs, the silver,
  vault and gold month partitions and the quarantine part each file wrote, each with its schema,
  its row count and the data-quality assertions its suite checked on every row;
- **retention**: the month partitions whose identifiers it deleted and the gold years it
  removed, each marked `DROP` (lifecycle state change).

Names are the store's own (`s3://bucket` + key prefix, or `file` + path); no event carries a
record value, an identifier, a token or a file's name.
"""

from __future__ import annotations

import json
import logging
from functools import cache
from typing import Any

from airflow.providers.standard.decorators.python import _PythonDecoratedOperator
from airflow.sdk.bases.decorator import task_decorator_factory

from pipeline.core import layout
from pipeline.core.store import ObjectStore, split_s3

log = logging.getLogger(__name__)
#: tier → the suite that judges its rows
SUITES = {"silver": "silver", "vault": "silver_identifiers", "gold": "gold"}


class _LineageDecoratedOperator(_PythonDecoratedOperator):
    """A Python task whose datasets the OpenLineage provider asks for once it has run."""

    custom_operator_name = "@lineage_task"

    def execute(self, context: Any) -> Any:
        self._lineage: Any = None
        try:
            result = super().execute(context)
        except Exception:  # a batch with a failed file: the files it did publish still count
            ti = context["ti"]
            if lineage_on():
                self._lineage = _quietly(
                    lambda: task_lineage(
                        ti.xcom_pull(task_ids=ti.task_id, map_indexes=ti.map_index)
                    )
                )
            raise
        self._lineage = _quietly(lambda: task_lineage(result))
        return result

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """What `execute` found: the provider calls this in a forked process with a time
        limit, where nothing should be built (or locked) again."""
        from airflow.providers.openlineage.extractors import OperatorLineage

        return getattr(self, "_lineage", None) or OperatorLineage()


def task_lineage(result: Any) -> Any:
    """The task's datasets from what it returned (an ingest batch's reports, a retention
    report); None while OpenLineage is off."""
    if not lineage_on() or result is None:
        return None
    from airflow.providers.openlineage.extractors import OperatorLineage

    from cdr_airflow.settings import task_resources

    store = task_resources().store
    if isinstance(result, list):
        inputs, outputs = ingest_datasets(store, result)
    else:
        inputs, outputs = [], retention_datasets(store, result)
    return OperatorLineage(inputs=inputs, outputs=outputs)


def lineage_on() -> bool:
    """Whether the OpenLineage provider has somewhere to send events."""
    from airflow.providers.openlineage import conf

    return not conf.is_disabled()


def _quietly(build: Any) -> Any:
    """Lineage that could not be built is logged, never the task's failure."""
    try:
        return build()
    except Exception as exc:  # its text may quote a key: its type only
        log.warning("no lineage for this task (%s)", type(exc).__name__)
        return None


def lineage_task(python_callable: Any = None, **kwargs: Any) -> Any:
    """`@task`, with the task's datasets in its OpenLineage events."""
    return task_decorator_factory(
        python_callable=python_callable,
        decorated_operator_class=_LineageDecoratedOperator,
        **kwargs,
    )


def dataset_id(store: ObjectStore, key: str) -> tuple[str, str]:
    """OpenLineage's (namespace, name) of a key of the store: `s3://bucket` and the full key,
    or `file` and the absolute path."""
    uri = store.uri(key.rstrip("/"))
    if uri.startswith("s3://"):
        bucket, name = split_s3(uri)
        return f"s3://{bucket}", name
    return "file", uri


def ingest_datasets(store: ObjectStore, reports: list[dict[str, Any]]) -> tuple[list, list]:  # type: ignore[type-arg]
    """The landing files ingested (by digest) and the partitions they wrote."""
    from openlineage.client.event_v2 import InputDataset, OutputDataset
    from openlineage.client.facet_v2 import (
        input_statistics_input_dataset as istats,
    )
    from openlineage.client.facet_v2 import (
        output_statistics_output_dataset as ostats,
    )

    inputs, outputs = [], []
    rows: dict[tuple[str, str], int] = {}
    for report in (r for r in reports if r.get("status") == "ingested"):
        source = layout.file_label(report.get("source") or "unknown")
        landing = f"{layout.LANDING}{source}/sha256:{report['sha256']}"
        size = int((report.get("delivery") or {}).get("bytes") or 0)
        stats = istats.InputStatisticsInputDatasetFacet(rowCount=int(report["records"]), size=size)
        inputs.append(InputDataset(*dataset_id(store, landing), inputFacets={"inputStatistics": stats}))  # fmt: skip
        by_month = report.get("by_month") or {}
        for tier, counts in (("silver", "silver"), ("vault", "silver"), ("gold", "gold")):
            for month, n in (by_month.get(counts) or {}).items():
                key = layout.month_prefix(tier, layout.parse_month(month))
                rows[(tier, key)] = rows.get((tier, key), 0) + (n if tier != "vault" else 0)
        if int(report.get("quarantined") or 0):
            key = layout.quarantine_rows_key(report["sha256"])
            rows[("quarantine", key)] = int(report["quarantined"])
    for (tier, key), n in sorted(rows.items()):
        facets: dict[str, Any] = {"schema": _schema(tier)}
        if tier in SUITES:
            facets["dataQualityAssertions"] = _assertions(SUITES[tier])
        out: dict[str, Any] = {}
        if tier != "vault":  # a vault part holds one entry per token, not per record
            out["outputStatistics"] = ostats.OutputStatisticsOutputDatasetFacet(rowCount=n)
        outputs.append(OutputDataset(*dataset_id(store, key), facets=facets, outputFacets=out))
    return inputs, outputs


def retention_datasets(store: ObjectStore, report: dict[str, Any]) -> list:  # type: ignore[type-arg]
    """The month partitions whose identifiers a retention run deleted, and the gold years it
    removed, each marked DROP (nothing for a dry run)."""
    from openlineage.client.event_v2 import OutputDataset
    from openlineage.client.facet_v2 import lifecycle_state_change_dataset as lsc

    if report.get("dry_run"):
        return []
    drop = {"lifecycleStateChange": lsc.LifecycleStateChangeDatasetFacet(lsc.LifecycleStateChange.DROP)}  # fmt: skip
    keys = []
    for entry in report.get("months") or []:
        month = layout.parse_month(entry["month"])
        keys += [layout.month_prefix(t, month) for t in ("silver", "vault") if entry.get(f"{t}_objects")]  # fmt: skip
    keys += [layout.gold_year_prefix(e["year"]) for e in report.get("gold_years") or []]
    return [OutputDataset(*dataset_id(store, key), facets=dict(drop)) for key in keys]


def _schema(tier: str) -> Any:
    from openlineage.client.facet_v2 import schema_dataset

    from pipeline.records import schema  # polars: not at DAG parse time

    tables = {"silver": schema.SILVER, "vault": schema.VAULT, "gold": schema.GOLD}
    columns = schema.QUARANTINE_ROWS if tier == "quarantine" else tables[tier]
    fields = [schema_dataset.SchemaDatasetFacetFields(name, str(kind)) for name, kind in columns.items()]  # fmt: skip
    return schema_dataset.SchemaDatasetFacet(fields=fields)


@cache
def _expectations(suite: str) -> tuple[tuple[str, str | None], ...]:
    """Each expectation of a suite: its type and column (as the suite's file states them)."""
    from pipeline.records import quality

    found = json.loads((quality.suites_dir() / f"{suite}.json").read_text())
    return tuple(
        (e["type"], (e.get("kwargs") or {}).get("column")) for e in found.get("expectations", [])
    )


def _assertions(suite: str) -> Any:
    """The suite's expectations as assertions: a file is published only when each held on
    every row, so each is a success."""
    from openlineage.client.facet_v2 import data_quality_assertions_dataset as dq

    return dq.DataQualityAssertionsDatasetFacet(
        assertions=[
            dq.Assertion(assertion=kind, success=True, column=column)
            for kind, column in _expectations(suite)
        ]
    )

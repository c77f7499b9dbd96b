"""The tasks both ingest DAGs run after they know their batches of landing files (the hourly
sweep's listing, or the files a notification named): ingest each batch as a mapped task, print
the run's summary, render Data Docs once, and fail the run when a file of it failed."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, task

from cdr_airflow.assets import TIERS
from cdr_airflow.lineage import lineage_task
from pipeline.records.formats import FORMATS


def ingest_params() -> dict[str, Param]:
    """The ingest DAGs' parameters: a format instead of detecting one, the region of
    national-format numbers."""
    return {
        "format": Param(None, type=["null", "string"], enum=[None, *FORMATS],
                        description="Read every file as this format instead of detecting it"),
        "default_region": Param(None, type=["null", "string"], pattern="^[A-Z]{2}$",
                                description="ISO country of national-format numbers (empty: the deployment's CDR_DEFAULT_REGION)"),
    }  # fmt: skip


def ingest_and_report(batches: Any) -> None:
    """Wire the mapped ingest over `batches` (an XComArg of `landing_batches`) and what follows."""

    @lineage_task(  # its OpenLineage events name the files read and the partitions written
        outlets=[TIERS],  # events for cdr_gold, cdr_silver, cdr_vault when the file wrote rows
        map_index_template="{{ batch_name | default(task.op_kwargs['batch']['label']) }}",
        max_active_tis_per_dag=4,
        pool="cdr_store",  # caps concurrent S3 and KMS work across workers (docs/operations.md)
    )
    def ingest(
        batch: dict, params: dict, logical_date=None, dag_run=None, outlet_events=None
    ) -> list[dict]:  # type: ignore[no-untyped-def]
        from cdr_airflow.dag_defaults import run_day
        from cdr_airflow.ingest import ingest_batch_task

        as_of = run_day(logical_date, dag_run)
        return ingest_batch_task(batch, params, as_of, outlet_events)

    @task(trigger_rule="all_done", outlets=[TIERS])  # failed files are listed too
    def summarise(batches: list[list[dict]], outlet_events=None) -> dict:  # type: ignore[no-untyped-def]
        from cdr_airflow.ingest import summarise_task

        return summarise_task(batches, outlet_events)

    @task(trigger_rule="all_done")  # also after a failed file: its refusal has a result too
    def data_docs() -> int:
        """Render the run's suite results into Data Docs (GX), once for all its files."""
        from cdr_airflow.settings import task_resources

        return task_resources().quality.render_docs()

    @task(trigger_rule="all_done")
    def verdict(summary: dict | None) -> None:  # type: ignore[type-arg]
        """The run ends failed when a file of it was not ingested."""
        from cdr_airflow.ingest import verdict_task

        verdict_task(summary)

    reports = ingest.expand(batch=batches)
    summary = summarise(reports)
    docs = data_docs()
    reports >> docs
    [summary, docs] >> verdict(summary)

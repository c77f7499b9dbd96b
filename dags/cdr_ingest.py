"""Airflow DAG `cdr_ingest`: wiring only; the work is in `pipeline.flows.ingest`."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, dag, task

from cdr_airflow.assets import TIERS
from cdr_airflow.dag_defaults import dag_args
from pipeline.records.formats import FORMATS

DOC = """
### cdr_ingest — seal, tokenise and tier new CDR files

**Reads** every file under `landing/` of the store (`CDR_STORE`: a folder or `s3://bucket/prefix`).
One mapped task per file, named after it.

**Writes**, per file, keyed by its SHA-256 (a rerun overwrites, never appends):
- `seals/<sha256>.seal.json`: signed digest, size, source and arrival, made *before* parsing;
  `seals/<sha256>.parse.json`: signed counts and outputs, written last (the commit).
- `bronze/<source>/<sha256>.enc`: the original bytes, AES-GCM under the file's data key,
  under S3 Object Lock (COMPLIANCE) until the identifier purge date where the bucket has it.
- `silver/cdr/year=/month=/`: tokenised CDRs; `vault/year=/month=/`: token → identifier,
  encrypted under the month's data key; `gold/cdr/year=/month=/`: no personal values, no tokens.
- `quarantine/rows/` (reason per row, raw row encrypted) and `quarantine/files/` (unreadable files).

**Retention rule enforced here**: a record whose month is already past its 12-month identifier purge
date on the run's logical date (a late arrival) goes to gold only; no silver, vault or key is made.

The landing object is deleted once its original is sealed in bronze and the tiers are written.

**Task states**: a file ingested is a green mapped task, and emits an event on the `cdr_gold`,
`cdr_silver` and `cdr_vault` Assets (the store's real URI; counts in the event's extra) for each
tier it wrote. A file quarantined whole, refused by the data expectations or failed is a
**failed** mapped task (not retried; the alert names it by reference): the other files still
run, and the run ends failed because of it. Nothing new in landing: no events.

Params: `format` (skip detection), `default_region` (ISO country of national-format numbers).
"""


@dag(
    dag_id="cdr_ingest",
    schedule="@hourly",
    doc_md=DOC,
    **dag_args(tags=["ingest"], retries=2, retry_delay=dt.timedelta(minutes=2)),
    params={
        "format": Param(None, type=["null", "string"], enum=[None, *FORMATS],
                        description="Read every file as this format instead of detecting it"),
        "default_region": Param(None, type=["null", "string"], pattern="^[A-Z]{2}$",
                                description="ISO country of national-format numbers (empty: the deployment's CDR_DEFAULT_REGION)"),
    },
)  # fmt: skip
def cdr_ingest() -> None:
    @task
    def list_landing() -> list[str]:
        from cdr_airflow.settings import task_resources
        from pipeline.flows.ingest import list_landing_refs, sweep_leftovers

        res = task_resources()
        sweep_leftovers(res)  # what killed runs left: partial objects, staging
        return list_landing_refs(res.store)

    @task(
        outlets=[TIERS],  # events for cdr_gold, cdr_silver, cdr_vault when the file wrote rows
        map_index_template="{{ task.op_kwargs['ref'] }}",
        max_active_tis_per_dag=4,
        pool="cdr_store",  # caps concurrent S3 and KMS work across workers (README)
    )
    def ingest(ref: str, params: dict, logical_date=None, dag_run=None, outlet_events=None) -> dict:  # type: ignore[no-untyped-def]
        from cdr_airflow.dag_defaults import run_day
        from cdr_airflow.ingest import ingest_ref

        as_of = run_day(logical_date, dag_run)
        return ingest_ref(ref, params, as_of, outlet_events)

    @task
    def summarise(reports: list[dict]) -> dict:
        from pipeline.report import run_summary, totals

        print(run_summary(reports))
        return totals(reports)

    summarise(ingest.expand(ref=list_landing()))


cdr_ingest()

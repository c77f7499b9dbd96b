"""Airflow DAG `cdr_ingest`: wiring only; the work is in `pipeline.flows.ingest`."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Asset, Param, dag, task

from cdr_airflow.dag_defaults import dag_args
from pipeline.records.formats import FORMATS

SILVER = Asset(name="cdr_silver", uri="file:///cdr/silver/cdr")
GOLD = Asset(name="cdr_gold", uri="file:///cdr/gold/cdr")
VAULT = Asset(name="cdr_vault", uri="file:///cdr/vault")

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
        outlets=[SILVER, GOLD, VAULT],
        map_index_template="{{ task.op_kwargs['ref'] }}",
        max_active_tis_per_dag=4,
        pool="cdr_store",  # caps concurrent S3 and KMS work across workers (README)
    )
    def ingest(ref: str, params: dict, logical_date=None, dag_run=None) -> dict:  # type: ignore[no-untyped-def]
        from airflow.sdk.observability.stats import Stats

        from cdr_airflow.settings import task_resources
        from pipeline.flows.ingest import IngestRequest, landing_key_of, run_ingest
        from pipeline.report import ingest_metrics

        as_of = (logical_date or dag_run.run_after).date()
        res = task_resources()
        request = IngestRequest(as_of, params["format"], params["default_region"])
        report = run_ingest(res, request, landing_key_of(res.store, ref)).to_dict()
        for name, value in ingest_metrics(report).items():
            Stats.incr(name, value)
        return report

    @task
    def summarise(reports: list[dict]) -> dict:
        from pipeline.report import run_summary, totals

        print(run_summary(reports))
        return totals(reports)

    summarise(ingest.expand(ref=list_landing()))


cdr_ingest()

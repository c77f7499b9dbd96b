"""Airflow DAG `cdr_retention`: wiring only; the work is in `pipeline.flows.retention`."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import dag

from cdr_airflow.assets import TIERS
from cdr_airflow.dag_defaults import dag_args
from cdr_airflow.lineage import lineage_task

DOC = """
### cdr_retention — purge identifiers at 12 months, gold at 10 years, honour legal holds

Runs daily with `as_of` = the run's **logical date**, so a rerun or a backfill of a day gives that
day's answer. Applies the retention policy (`pipeline/core/retention.toml`, or `CDR_RETENTION_POLICY`):

- **Identifiers** (rule: deleted 12 months after the end of the month of the communication): for
  each month due, records under an active legal hold (or a country override of the policy) are
  copied to `holds/<case>/` under the hold's own key; then the month's data key is destroyed
  (crypto-shred) and its `silver/` and `vault/` partitions deleted (every version).
- **Originals**: files whose months are all purged lose their key, `bronze/` object and
  quarantined raw rows; objects still under Object Lock are reported, never forced.
- **Gold** (rule: kept 10 years after the end of the year): years due are deleted.
- Released or expired holds are purged.

Then it **verifies** that nothing identifying is left for each purged month and fails loudly if
anything is. Every step is in the hash-chained audit log (`python -m pipeline audit verify`).
A retention run that silently stops is a compliance breach: watch this DAG's failures.
"""


@dag(
    dag_id="cdr_retention",
    schedule="@daily",
    doc_md=DOC,
    **dag_args(
        tags=["retention"],
        retries=2,
        retry_delay=dt.timedelta(minutes=10),
        timeout=dt.timedelta(hours=6),
    ),
)
def cdr_retention() -> None:
    @lineage_task(outlets=[TIERS])  # a cdr_gold event when gold years were removed; lineage: DROPs
    def apply_retention(logical_date=None, dag_run=None, outlet_events=None) -> dict:  # type: ignore[no-untyped-def]
        from cdr_airflow.assets import retention_events
        from cdr_airflow.dag_defaults import run_day
        from cdr_airflow.settings import task_resources
        from pipeline.flows.retention import RetentionRequest, run_retention
        from pipeline.report import retention_summary

        as_of = run_day(logical_date, dag_run)
        res = task_resources()
        report = run_retention(res, RetentionRequest(as_of)).to_dict()
        print(retention_summary(report))
        for asset, extra in retention_events(res.store, report):
            outlet_events[TIERS].add(asset, extra=extra)
        return report

    apply_retention()


cdr_retention()

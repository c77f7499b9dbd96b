"""Airflow DAG `cdr_integrity_audit`: wiring only; the work is in `pipeline.flows.verify`."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import dag, task

from cdr_airflow.dag_defaults import audit_schedule, dag_args

DOC = """
### cdr_integrity_audit — prove the kept records are the sealed originals (Pakistan's original form)

Weekly by default; with `CDR_AUDIT_SCHEDULE=gold`, after each new event on the `cdr_gold` Asset
(an ingest that wrote gold rows), so new data is verified as soon as it lands. **Reads** `seals/`, `bronze/`, `proofs/`, `silver/`, `gold/`, `audit/`; writes nothing.
For every ingested file it re-verifies: the two signed seal entries and their link; the bronze
original's SHA-256 against the seal (while bronze exists, i.e. within 12 months); the stored
Merkle leaves against the signed root; every gold and silver record's leaf recomputed from its
fields (a changed, added, duplicated or deleted record is named by its id); counts against the
seal; and the audit log's hash chain. Gold records verify after the 12-month purge too.
Files ingested since the last successful run are also verified **deeply**: each original is
re-read from bronze by an independent reference reader and every kept record's ID and retained
fields compared with it (`python -m pipeline verify --deep`), which catches a reader that
reshaped rows before they were sealed.

**Fails** on any mismatch, listing each: an integrity failure is an incident to investigate.

`risk_reports`, beside it, measures the re-identification risk of each gold month written since its
last report (every month the first time): equivalence classes over gold's quasi-identifiers,
against the policy's `[gold_risk]` thresholds (docs/risk.md). Each report is written as JSON
and HTML beside Data Docs (`risk/<YYYY-MM>`), the thresholds' result into Data Docs. Months over
a threshold are sent as one alert through the notifier (`CDR_NOTIFY`) and listed in the task's
result; the task stays green, so that the audit's own window moves on. Gold is never changed.
"""


@dag(
    dag_id="cdr_integrity_audit",
    schedule=audit_schedule(),
    doc_md=DOC,
    **dag_args(
        tags=["integrity", "audit"],
        retries=1,
        retry_delay=dt.timedelta(minutes=10),
        timeout=dt.timedelta(hours=6),
    ),
)
def cdr_integrity_audit() -> None:
    @task
    def verify_integrity(prev_start_date_success=None) -> dict:  # type: ignore[no-untyped-def]
        from airflow.sdk.exceptions import AirflowFailException

        from cdr_airflow.settings import task_resources
        from pipeline.flows.verify import VerifyRequest, run_verify, verify_summary

        # Deep on what arrived since the last successful run (everything, the first time).
        request = VerifyRequest(deep=True, deep_since=prev_start_date_success or None)
        report = run_verify(task_resources(), request)
        print(verify_summary(report))
        if not report.ok:  # neither a mismatch nor a file left to ingest heals on retry
            raise AirflowFailException(
                f"{len(report.problems())} integrity mismatches, "
                f"{len(report.gaps())} sealed files not ingested"
            )
        deep = sum("original (deep)" in f.checks for f in report.files)
        return {"files": len(report.files), "deep": deep, "audit": report.audit}

    @task  # beside the audit, not after it: the run's state stays the audit's verdict
    def risk_reports() -> dict:  # type: ignore[type-arg]
        from cdr_airflow.watch import report_gold_risk

        return report_gold_risk()

    verify_integrity()
    risk_reports()


cdr_integrity_audit()

"""The ingest DAG's task body, and what Airflow shows of each file: its state and its assets.

The mapped task takes a batch of landing files (`pipeline.flows.ingest_batches`): one file
alone when it is big, else up to `CDR_INGEST_BATCH_FILES` small ones. Each file is its own
delivery, and what the task shows follows its files:

- every file ingested (or found done, or taken by another run): the task is **success**, and
  an asset event is emitted for each tier each file wrote (`cdr_gold`, `cdr_silver`,
  `cdr_vault`), on the store's real URI (`s3://bucket/prefix/...` or `file://...`), with the
  file's counts in the event's `extra`;
- a file quarantined whole (no reader for it), refused by the data expectations, or failed for
  good: the other files of the batch are still ingested and their events emitted, then the task
  ends **failed**, without retry. Its name becomes `FAILED <reference>` and the failure alert
  names the file by its reference (`landing/<source>/file-<digest>`), never by its name. Its
  original is sealed in bronze and nothing of it was published;
- a file that could not be ingested this time (the store failed): the task fails and is
  retried, unless a file of it failed for good (the retry would no longer see that one); the
  files already done are found ingested, the rest taken again (or by the next run).
"""

from __future__ import annotations

from typing import Any

from cdr_airflow.assets import TIERS, tier_events


def ingest_batch_task(
    batch: dict[str, Any], params: dict[str, Any], as_of: Any, outlet_events: Any
) -> list[dict[str, Any]]:
    """Ingest the landing files a batch names; their reports (each named by its reference)
    go to XCom."""
    from airflow.sdk import get_current_context
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    from cdr_airflow.metrics import emit
    from cdr_airflow.settings import task_resources
    from pipeline.flows.ingest import IngestRequest
    from pipeline.flows.ingest_batches import batch_label, ingest_batch
    from pipeline.health import ingest_metrics

    res = task_resources()
    request = IngestRequest(as_of, params["format"], params["default_region"])
    refs = batch["refs"]
    outcome = ingest_batch(res, request, refs)
    for report in outcome.reports:
        emit(ingest_metrics(report))
    if not outcome.failures:
        _announce(res.store, outcome.reports, outlet_events)
        return outcome.reports
    # A failed task's asset events are dropped: the summary emits those of its files instead.
    pending = [{**r, EVENTS_PENDING: True} for r in outcome.reports]
    context = get_current_context()  # the task's name is rendered from it once it has run
    context["ti"].xcom_push("return_value", pending)  # the summary lists every file
    context["batch_name"] = batch_label(refs, [f.ref for f in outcome.failures])
    said = "; ".join(f"{f.ref}: {f.why}" for f in outcome.failures)
    if any(f.terminal for f in outcome.failures):  # a retry would no longer see it: not retried
        raise AirflowFailException(
            f"{said}. Nothing of a failed file is published, its original is sealed in bronze; "
            f"{len(outcome.reports)} file(s) of the batch done"
        )
    raise AirflowException(f"{said}; retried (the files done are not ingested again)")


#: marks the reports of a batch that failed: their files' asset events are still to be emitted
EVENTS_PENDING = "events_pending"


def _announce(store: Any, reports: list[dict[str, Any]], outlet_events: Any) -> None:
    """An asset event per tier each file wrote (none for a file that wrote nothing)."""
    for report in reports:
        for asset, extra in tier_events(store, report["file"], report):
            outlet_events[TIERS].add(asset, extra=extra)


def summarise_task(
    batches: list[list[dict[str, Any]] | None], outlet_events: Any
) -> dict[str, Any]:
    """Print the run's table of files (those that failed too), and emit the asset events of
    the files ingested in a batch that failed; the run's totals, and the files that failed."""
    from cdr_airflow.settings import task_resources
    from pipeline.report import failed_files, run_summary, totals

    reports = [report for batch in batches for report in batch or ()]
    print(run_summary(reports))
    pending = [r for r in reports if r.pop(EVENTS_PENDING, False)]
    if pending:
        _announce(task_resources().store, pending, outlet_events)
    return {**totals(reports), "failed": failed_files(reports)}


def verdict_task(summary: dict[str, Any] | None) -> None:
    """End the run failed when a file of it was not ingested (each is named)."""
    from airflow.sdk.exceptions import AirflowFailException

    failed = (summary or {}).get("failed", [])
    if summary is None or failed:
        said = ", ".join(failed) if failed else "the summary did not run"
        raise AirflowFailException(f"{len(failed)} file(s) not ingested: {said}")

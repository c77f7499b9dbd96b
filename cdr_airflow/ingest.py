"""The ingest DAG's task body, and what Airflow shows of each file: its state and its assets.

- A file ingested ends its mapped task **success**; an asset event is emitted for each tier it
  wrote (`cdr_gold`, `cdr_silver`, `cdr_vault`), on the store's real URI (`s3://bucket/prefix/...`
  or `file://...`), with the file's counts in the event's `extra`. A file already ingested, or
  one another run holds, writes nothing and emits nothing.
- A file quarantined whole (no reader for it), refused by the data expectations, or failed for
  good ends its mapped task **failed**, without retry: its original is sealed in bronze and
  nothing was published. The other files' tasks still run; the run ends failed because of it,
  and the failure alert names the file by its reference (`landing/<source>/file-<digest>`),
  never by its name.
"""

from __future__ import annotations

from typing import Any

from cdr_airflow.assets import TIERS, tier_events
from pipeline.core import layout


def ingest_ref(ref: str, params: dict[str, Any], as_of: Any, outlet_events: Any) -> dict[str, Any]:
    """Ingest the landing file `ref` names; its report (named by `ref`) goes to XCom."""
    from airflow.sdk.exceptions import AirflowException, AirflowFailException
    from airflow.sdk.observability.stats import Stats

    from cdr_airflow.settings import task_resources
    from pipeline.flows.ingest import IngestError, IngestRequest, landing_key_of, run_ingest
    from pipeline.report import ingest_metrics

    res = task_resources()
    request = IngestRequest(as_of, params["format"], params["default_region"])
    try:
        report = run_ingest(res, request, landing_key_of(res.store, ref)).to_dict()
    except IngestError as exc:  # its text may hold the file's name: say only the reference
        if exc.terminal:
            what = "refused by the data expectations" if exc.status == "refused" else "failed"
            raise AirflowFailException(
                f"{ref}: {what}; nothing published, the original is sealed in bronze"
            ) from None
        raise AirflowException(f"{ref}: not ingested this time ({type(exc).__name__})") from None
    report["file"] = ref
    for name, value in ingest_metrics(report).items():
        Stats.incr(name, value)
    if report["status"] == "quarantined_file":
        raise AirflowFailException(
            f"{ref}: quarantined whole ({report['reason']}); no reader for it, nothing "
            f"published, the original is sealed in bronze ({layout.quarantine_file_key(report['sha256'])})"
        )
    for asset, extra in tier_events(res.store, ref, report):
        outlet_events[TIERS].add(asset, extra=extra)
    return report

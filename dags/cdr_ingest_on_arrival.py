"""Airflow DAG `cdr_ingest_on_arrival`: wiring only; the work is in `pipeline.flows.ingest`."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import dag, task

from cdr_airflow.arrivals import arrivals_asset
from cdr_airflow.dag_defaults import dag_args
from cdr_airflow.ingest_tasks import ingest_and_report, ingest_params

DOC = """
### cdr_ingest_on_arrival — ingest a file as soon as it lands

Scheduled on the `cdr_landing_arrivals` Asset, which Airflow's triggerer watches through the
bucket's object-created notifications on an SQS queue (`CDR_ARRIVALS_QUEUE`, polled every
`CDR_ARRIVALS_POLL_SECONDS`, default 30). A notification names a landing object; the event
Airflow keeps names it by its reference only (`landing/<source>/file-<digest>` where the name
could hold a number). The run ingests just the files named that are still in `landing/`, in the
same batches, by the same settled-snapshot rule and with the same outcome per file as the hourly
`cdr_ingest`, which stays as the safety net: a lost notification's file is taken by the next
sweep, and a duplicate or late one finds its file ingested (or gone) and does nothing.

Without `CDR_ARRIVALS_QUEUE` the Asset has no watcher and this DAG runs only when an event is
posted on `cdr_landing_arrivals` with the files' references (as `cdr_ingest` names them) in its
extra: `{"refs": ["landing/sw1/calls-0001.csv"]}`. Tasks, states and alerts are those
of `cdr_ingest` (see its documentation).
"""


@dag(
    dag_id="cdr_ingest_on_arrival",
    schedule=[arrivals_asset()],
    doc_md=DOC,
    **dag_args(tags=["ingest"], retries=2, retry_delay=dt.timedelta(minutes=2),
               one_run_at_a_time=False),
    params=ingest_params(),
)  # fmt: skip
def cdr_ingest_on_arrival() -> None:
    @task
    def list_arrivals(triggering_asset_events=None) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
        from cdr_airflow.arrivals import arrival_batches

        return arrival_batches(triggering_asset_events)

    ingest_and_report(list_arrivals())


cdr_ingest_on_arrival()

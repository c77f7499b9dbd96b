"""Airflow DAG `cdr_source_watch`: wiring only; the check is `pipeline.core.alerts`."""

from __future__ import annotations

from airflow.sdk import dag, task

from cdr_airflow.dag_defaults import watch_args

DOC = """
### cdr_source_watch — alert when a source stops delivering

Hourly. The policy file's source registry (`[[source]]`: name, `interval_hours`, optional
`timezone`) says how often each source delivers; every ingest marks the hour each source's files
arrived in (`index/deliveries/<source>/`). This DAG fails, and so alerts through the failure
notifier (`CDR_NOTIFY`), when a registered source has sent nothing for longer than its interval:
a switch that stopped writing, a transfer that broke. It reports each source's hours since its
last delivery as the StatsD gauge `cdr.source.<source>.hours_since_delivery` (-1: nothing in the
window looked at, twice the interval and a day) and `cdr.sources.silent`. Without a registry
there is nothing to check.
"""


@dag(
    dag_id="cdr_source_watch",
    schedule="@hourly",
    doc_md=DOC,
    **watch_args(tags=["ingest"]),
)
def cdr_source_watch() -> None:
    @task
    def check_sources() -> dict:
        from cdr_airflow.watch import check_sources

        return check_sources()

    check_sources()


cdr_source_watch()

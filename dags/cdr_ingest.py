"""Airflow DAG `cdr_ingest`: wiring only; the work is in `pipeline.flows.ingest`."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import dag, task

from cdr_airflow.dag_defaults import dag_args
from cdr_airflow.ingest_tasks import ingest_and_report, ingest_params

DOC = """
### cdr_ingest — seal, tokenise and tier new CDR files

**Reads** every file under `landing/` of the store (`CDR_STORE`: a folder or `s3://bucket/prefix`).
One mapped task per batch of files: small files together, up to `CDR_INGEST_BATCH_FILES` files
(50) and `CDR_INGEST_BATCH_BYTES` bytes (64 MiB); a file that big has a task of its own. A task
is named after its file, or its first file and how many more. Each file is still its own
delivery (its own seal, parse entry, audit entries and outcome).

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

Each file's suite results are stored as GX validation results; the `data_docs` task renders
them into Data Docs once for the whole run (`CDR_DATA_DOCS`), after every file's task.

The landing object is deleted once its original is sealed in bronze and the tiers are written.

**Task states**: a batch whose files were all ingested is a green mapped task, and each file
emits an event on the `cdr_gold`, `cdr_silver` and `cdr_vault` Assets (the store's real URI;
counts in the event's extra) for each tier it wrote. A file quarantined whole, refused by the
data expectations or failed makes its batch a **failed** mapped task renamed `FAILED <reference>`
(not retried; the alert names the file by reference): the other files of the batch and the
other batches are still ingested, and the run ends failed because of it. Nothing new in
landing: no events.

Params: `format` (skip detection), `default_region` (ISO country of national-format numbers).
"""


@dag(
    dag_id="cdr_ingest",
    schedule="@hourly",
    doc_md=DOC,
    **dag_args(tags=["ingest"], retries=2, retry_delay=dt.timedelta(minutes=2)),
    params=ingest_params(),
)
def cdr_ingest() -> None:
    @task
    def list_landing() -> list[dict]:  # type: ignore[type-arg]
        from cdr_airflow.settings import task_resources
        from pipeline.flows.ingest import sweep_leftovers
        from pipeline.flows.ingest_batches import landing_batches

        res = task_resources()
        sweep_leftovers(res)  # what killed runs left: partial objects, staging
        limits = res.settings.batch_files, res.settings.batch_bytes
        return landing_batches(res.store, *limits)

    ingest_and_report(list_landing())


cdr_ingest()

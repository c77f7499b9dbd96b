"""Landing files taken in batches: one task, one process, many small deliveries.

A platform that drops a small file per switch every few minutes would otherwise pay a task
process (its start, its imports, its resources) per file. The DAG maps over batches bounded by
count and bytes (`CDR_INGEST_BATCH_FILES`, `CDR_INGEST_BATCH_BYTES`); a file at least that big
is a batch of its own. Within a batch each file is still its own delivery: its own seal, parse
entry, audit entries and outcome, and one file's failure is that file's. A batch stopped midway
(a killed worker) is simply run again: the files it finished are found ingested by their digest
and cost a look-up, the others are ingested then, once each.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from pipeline.core import layout
from pipeline.core.resources import Resources
from pipeline.core.store import ObjectStore, store_errors
from pipeline.flows.ingest import (
    IngestError,
    IngestRequest,
    landing_objects,
    list_landing,
    run_ingest,
)
from pipeline.report import COUNTS

log = logging.getLogger(__name__)


def landing_batches(
    store: ObjectStore, max_files: int, max_bytes: int, only: Collection[str] | None = None
) -> list[dict[str, Any]]:
    """The files waiting in landing/ (oldest name first) in batches of at most `max_files`
    files and `max_bytes` bytes, each `{"label", "refs"}` with references safe for XCom;
    with `only`, just the files of those references still waiting (ingest on arrival)."""
    batches: list[list[str]] = []
    size = 0
    for info in landing_objects(store):
        ref = layout.landing_ref(info.key)
        if only is not None and ref not in only:
            continue
        alone = info.size >= max_bytes
        if alone or not batches or len(batches[-1]) >= max_files or size + info.size > max_bytes:
            batches.append([])
            size = 0
        batches[-1].append(ref)
        size += info.size
        if alone:
            size = max_bytes  # nothing joins a file that has a batch of its own
    return [{"label": batch_label(refs), "refs": refs} for refs in batches]


def batch_label(refs: list[str], failed: list[str] | None = None) -> str:
    """How the batch's task is named: its file, or its first file and how many more; once it
    has run, the files that failed first."""
    if failed:
        rest = len(refs) - len(failed)
        return f"{FAILED}{', '.join(failed)}" + (
            f" (+{rest} ingested or unchanged)" if rest else ""
        )
    return refs[0] if len(refs) == 1 else f"{refs[0]} (+{len(refs) - 1} more)"


def failed_in_label(label: str | None) -> list[str]:
    """The references a batch's name (`batch_label`) says failed, if any."""
    if not label or not label.startswith(FAILED):
        return []
    return label[len(FAILED) :].split(" (+", 1)[0].split(", ")


FAILED = "FAILED "


@dataclass
class Failure:
    """A file of the batch that did not end ingested: its reference and why (no name, no
    value), and whether a rerun could change that (`terminal`: it cannot)."""

    ref: str
    why: str
    terminal: bool


@dataclass
class BatchOutcome:
    """Each file's report (named by its reference), and the files that failed."""

    reports: list[dict[str, Any]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    def fail(self, ref: str, why: str, terminal: bool) -> None:
        self.failures.append(Failure(ref, why, terminal))
        log.error("%s: %s", ref, why)

    def failed(self, ref: str, why: str, terminal: bool, status: str = "not_ingested") -> None:
        """A file that ended without a report of its own: a report of nothing, so that the
        run's summary still lists it."""
        self.fail(ref, why, terminal)
        self.reports.append({"file": ref, "status": status, **dict.fromkeys(COUNTS, 0)})


def freeze_startup() -> None:
    """Leave what the imports and resources built out of the garbage collector's walks (it
    lives as long as the process): collections during the files then walk only their own."""
    gc.collect()
    gc.freeze()


def ingest_batch(res: Resources, request: IngestRequest, refs: list[str]) -> BatchOutcome:
    """Ingest each file a batch names, one after another in this process, each on its own:
    a file that fails is recorded and the next one is taken."""
    freeze_startup()
    keys = {layout.landing_ref(k): k for k in list_landing(res.store)}
    outcome = BatchOutcome()
    for ref in refs:
        key = keys.get(ref)
        if key is None:  # taken by another run since the batch was listed
            log.info("%s is no longer in landing/ (ingested by another run?)", ref)
            continue
        try:
            report = run_ingest(res, request, key).to_dict()
        except IngestError as exc:  # its text may hold the file's name: say only the reference
            why = "refused by the data expectations" if exc.status == "refused" else "failed"
            if not exc.terminal:
                why = f"not ingested this time ({type(exc).__name__})"
            status = (exc.status or "failed") if exc.terminal else "not_ingested"
            outcome.failed(ref, why, exc.terminal, status)
            continue
        except store_errors() as exc:  # the store failed us (its text may name the key)
            outcome.failed(ref, f"store error ({type(exc).__name__})", False)
            continue
        report["file"] = ref
        outcome.reports.append(report)
        if report["status"] == "quarantined_file":
            why = (
                f"quarantined whole ({report['reason']}); no reader for it, nothing published, "
                f"the original is sealed in bronze ({layout.quarantine_file_key(report['sha256'])})"
            )
            outcome.fail(ref, why, True)
    return outcome

"""Ingest one CDR file: seal, store the original in bronze, parse, tokenise, write the tiers.

The steps, each safe to repeat:
1. digest the exact bytes; if the file's parse entry exists it was ingested already: stop;
2. seal it (signed digest, size, source, arrival) before anything parses it;
3. encrypt the original into bronze under the file's data key (never rewritten);
4. parse in batches → silver, gold, vault, quarantine parts in local files;
5. publish the parts under keys derived from the digest (a rerun overwrites, never appends);
6. write the signed parse entry with the counts: this is the commit.
A crash anywhere before 6 leaves the file un-ingested, and a rerun produces the same result.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import polars as pl
import pyarrow as pa

from pipeline import __version__
from pipeline.core import layout, snapshot, staging
from pipeline.core.errors import PipelineError, failures
from pipeline.core.keys import TOKEN_KEY_VERSION
from pipeline.core.lease import LeaseLost, confirm, lease, lease_of
from pipeline.core.prefetch import prefetch
from pipeline.core.progress import watch
from pipeline.core.resources import Resources
from pipeline.core.store import LocalStore, ObjectInfo, ObjectStore, store_errors
from pipeline.proof import audit
from pipeline.proof.commitments import ENCODING, block_roots, file_root
from pipeline.proof.integrity import read_entry, record_parse, seal_original, sha256_file
from pipeline.records import normalise, quality, unpack
from pipeline.records.bronze import (
    LockError,
    hold_until,
    lock_date,
    read_original,
    require_lock,
    store_original,
)
from pipeline.records.fingerprints import Fingerprints
from pipeline.records.lookup import default_region as resolve_region
from pipeline.records.redelivery import IndexSpool, PriorIds
from pipeline.records.sources import FileFormatError, ParseOptions, Source, detect
from pipeline.records.tiers import TierWriter
from pipeline.records.transform import AddressBook, FileContext, finish, prepare

log = logging.getLogger("pipeline.flows.ingest")


class IngestError(PipelineError):
    """An ingest that could not complete; the message never holds a record's content.

    `terminal` is true once the file has its final signed parse entry (`refused`, `failed`):
    rerunning will not change the outcome, so its landing copy can go; `status` is that entry's.
    """

    def __init__(self, message: str, terminal: bool = False, status: str | None = None) -> None:
        super().__init__(message)
        self.terminal = terminal
        self.status = status


class StillChanging(IngestError):
    """A delivered file changed while it was read: left where it is, for a later run."""


#: the states a sealed file ends in, each with a signed parse entry
TERMINAL = ("ingested", "quarantined_file", "refused", "failed", "empty")


@dataclass
class FileReport:
    """What happened to one file: the numbers a data engineer reconciles."""

    file: str
    sha256: str
    status: str  # one of TERMINAL, already_ingested, in_progress (another run has it) or
    #              not_settled (a landing file still being written: left for a later run)
    source: str
    format: str | None = None
    records: int = 0
    silver: int = 0
    gold: int = 0
    gold_only: int = 0
    quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    #: free-text values cleaned of control characters (`control:<field>`) or masked because they
    #: held an identifier (`masked:<field>`)
    scrubbed: dict[str, int] = field(default_factory=dict)
    months: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    detail: str | None = None
    reason: str | None = None  # why a file was quarantined whole
    merkle_root: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    by_month: dict[str, dict[str, int]] = field(default_factory=dict)
    batch_leaves: list[int] = field(default_factory=list)
    batch_roots: list[str] = field(default_factory=list)
    #: suite → failed expectations, when the data expectations refused the file
    refused: dict[str, list[str]] = field(default_factory=dict)
    #: the zone naive source times were read in (`verify --deep` reads them in it again)
    source_timezone: str | None = None
    #: what went wrong after the file's outcome was recorded (never its content)
    warnings: list[str] = field(default_factory=list)
    #: a compressed or re-encoded delivery: its compression and each member's digest
    unpacked: dict[str, Any] = field(default_factory=dict)
    #: for the health metrics: bytes, arrival, publish time and seconds of an ingested file
    delivery: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The report without the per-batch roots (in the signed parse entry, not in XCom)."""
        out = asdict(self)
        out.pop("batch_roots")
        return out

    def parse_entry(self, seal: dict[str, Any], as_of: dt.date) -> dict[str, Any]:
        """The body of the signed parse entry: the report as recorded, plus what made it."""
        body = {k: v for k, v in asdict(self).items() if k not in _NOT_RECORDED}
        body["arrived_at"] = seal["body"]["arrived_at"]
        body["as_of"] = as_of.isoformat()
        body["pipeline_version"] = __version__
        if self.status == "ingested":
            body["token_key_version"] = TOKEN_KEY_VERSION
            body["commitment_encoding"] = ENCODING
            body["numbering_plan"] = normalise.numbering_plan()
        return body


#: Report fields that describe one run, not the file: kept out of the signed parse entry.
_NOT_RECORDED = frozenset({"sha256", "timings", "delivery"})


def sweep_leftovers(res: Resources) -> dict[str, int]:
    """Remove what runs killed mid-way left behind: partial objects in the stores (unlisted,
    so no purge would find them) and staging folders on this host. Counted, and said."""
    objects = res.store.sweep_temporary()
    if res.bronze is not res.store:
        objects += res.bronze.sweep_temporary()
    counts = {"temporary_objects": objects, "staging": staging.sweep()}
    if any(counts.values()):
        log.warning(
            "removed what interrupted runs left: %d temporary objects, %d staging folders/files",
            counts["temporary_objects"],
            counts["staging"],
        )
    return counts


def landing_objects(store: ObjectStore) -> list[ObjectInfo]:
    """Files waiting in landing/, oldest name first (hidden and temporary files skipped)."""
    return sorted(
        (o for o in store.list(layout.LANDING) if not PurePosixPath(o.key).name.startswith(".")),
        key=lambda o: o.key,
    )


def list_landing(store: ObjectStore) -> list[str]:
    """The keys of the files waiting in landing/, oldest name first."""
    return [o.key for o in landing_objects(store)]


@dataclass(frozen=True)
class IngestRequest:
    """How one run reads its files: the run's date (late arrivals and future dates are judged
    as of it), a format instead of detecting one, the region of national-format numbers (else
    `CDR_DEFAULT_REGION`), and the source of files given by path (a landing file's folder
    names its own)."""

    as_of: dt.date
    fmt: str | None = None
    default_region: str | None = None
    source: str | None = None


def run_ingest(
    res: Resources,
    request: IngestRequest,
    target: str | Path,
    progress: Callable[[int], None] | None = None,
) -> FileReport:
    """Ingest one file: a landing object (its key, `landing/...`) or a local path."""
    options: dict[str, Any] = {
        "fmt": request.fmt,
        "default_region": request.default_region,
        "as_of": request.as_of,
        "progress": progress,
    }
    if isinstance(target, str) and target.startswith(layout.LANDING):
        return ingest_landing(res, target, **options)
    return ingest_file(res, Path(target), source=request.source, **options)


def ingest_landing(
    res: Resources,
    key: str,
    *,
    fmt: str | None = None,
    default_region: str | None = None,
    as_of: dt.date,
    progress: Callable[[int], None] | None = None,
) -> FileReport:
    """Ingest one object of landing/ and remove it from landing once it is safely in bronze.

    The object is taken once it has settled (`CDR_LANDING_SETTLE_SECONDS`: size and time
    unchanged that long) and read from one snapshot (a copy, or on S3 its version). It is
    removed only if it is still what was read: content written to it since is a new delivery,
    sealed on its own by a later run."""
    name = PurePosixPath(key).name
    info = _settled(res, key)
    if info is None:
        return _not_settled(key, "still being written")
    with tempfile.TemporaryDirectory(prefix=staging.prefix("stage")) as tmp:
        local = isinstance(res.store, LocalStore)
        if local:
            path = Path(res.store.uri(key))
        else:
            path = Path(tmp) / "original"
            res.store.download(key, path, version=info.version)
        try:
            report = ingest_file(
                res,
                path,
                name=name,
                source=layout.source_of_landing_key(key),
                arrived_at=info.modified,
                fmt=fmt,
                default_region=default_region,
                as_of=as_of,
                progress=progress,
                private=not local,
            )
        except StillChanging:
            return _not_settled(key, "changed while it was read")
        except IngestError as exc:
            if exc.terminal:  # refused or failed for good: the original is in bronze
                _clear_landing(res, key, info, None)
            raise
    if report.status == "in_progress":
        return report  # the run holding the lease removes it from landing
    _clear_landing(res, key, info, report)
    return report


def _not_settled(key: str, why: str) -> FileReport:
    """A landing file left for a later run, as the run's report shows it."""
    name = layout.file_label(PurePosixPath(key).name)
    log.warning("%s %s: left in landing for a later run", name, why)
    folder = layout.source_of_landing_key(key)  # not checked yet as a source: its label
    return FileReport(name, "", "not_settled", folder and layout.file_label(folder))


def _settled(res: Resources, key: str) -> ObjectInfo | None:
    """The landing object's description once it has settled, or None while it changes: one
    younger than the settle time is waited for, then looked at again."""
    info = res.store.info(key)
    if info is None:
        raise IngestError(f"{key} is not in the store (already ingested by another run?)")
    wait = res.settings.landing_settle_seconds
    age = (dt.datetime.now(dt.UTC) - info.modified).total_seconds()
    if age >= wait:
        return info
    time.sleep(wait - max(age, 0.0))
    again = res.store.info(key)
    return info if again == info else None


def _clear_landing(res: Resources, key: str, info: ObjectInfo, report: FileReport | None) -> None:
    """Remove a landing object once its outcome is recorded, unless it changed since it was
    read (then its new content is a new delivery, left for the next run). Every version goes
    (a plain delete on a versioned bucket would leave the original behind a delete marker); a
    newer upload under the same name stays. A delete that fails leaves the file ingested,
    with a warning: the next run finds it already ingested and removes it."""
    name = layout.file_label(PurePosixPath(key).name)
    now = res.store.info(key)
    rewritten = now is not None and now.version == info.version  # not a newer version
    if rewritten and (now.size, now.modified) != (info.size, info.modified):  # type: ignore[union-attr]
        why = "changed since it was read: left in landing, a later run ingests it as a new delivery"
    else:
        try:
            res.store.purge(key, through=info.version)
            return
        except store_errors() as exc:  # its text may quote the path: name the error only
            why = (
                f"ingested, but not removed from landing ({type(exc).__name__}): the next run will"
            )
    log.warning("%s: %s", name, why)
    if report is not None:
        report.warnings.append(why)


def ingest_file(
    res: Resources,
    path: Path,
    *,
    name: str | None = None,
    source: str | None = None,
    arrived_at: dt.datetime | None = None,
    fmt: str | None = None,
    default_region: str | None = None,
    as_of: dt.date,
    progress: Callable[[int], None] | None = None,
    private: bool = False,
) -> FileReport:
    """Ingest a local file (see the module docstring for the steps); `private` says it is a
    copy nothing else writes to (else it is read once, into a snapshot).

    The source is checked before anything is written, and the file is named by
    `layout.file_label` everywhere outside its encrypted original (seal, audit, tiers, notes,
    logs, report), so a name holding a number or an address is never kept.
    """
    name = layout.file_label(name or path.name)
    if source is not None:
        try:
            layout.source(source)
        except layout.LayoutError as exc:
            raise IngestError(f"{name}: not ingested: {exc}") from None
    with tempfile.TemporaryDirectory(prefix=staging.prefix("stage")) as tmp:
        if private:  # already a copy of its own (a download): nothing else writes to it
            digest, size = sha256_file(path)
            snap = snapshot.Snapshot(path, digest, size)
        else:  # the seal, bronze and the parse read one copy, never the file in place
            try:
                snap = snapshot.take(path, Path(tmp))
            except snapshot.StillChanging as exc:
                raise StillChanging(f"{name}: not ingested: {exc}") from None
        return _ingest_snapshot(
            res, snap, name, source, arrived_at, fmt, default_region, as_of, progress
        )


def _ingest_snapshot(
    res: Resources,
    snap: snapshot.Snapshot,
    name: str,
    source: str | None,
    arrived_at: dt.datetime | None,
    fmt: str | None,
    default_region: str | None,
    as_of: dt.date,
    progress: Callable[[int], None] | None,
) -> FileReport:
    """Ingest a file's snapshot once nobody else holds its digest (the lease)."""
    settings = res.settings
    region = resolve_region(default_region, settings.default_region)
    path, sha256, size = snap.path, snap.sha256, snap.size
    existing = read_entry(res.store, layout.parse_key(sha256))
    if existing is not None and existing["body"].get("status") != "failed":
        return _already_ingested(res, name, sha256, existing)
    with lease(res.store, sha256, settings.lease_seconds) as held:
        if not held:
            holder = lease_of(res.store, sha256)
            where = holder.describe() if holder else "just finished"
            log.warning("%s (sha256 %s…) is being ingested by another run: %s", name, sha256[:12], where)  # fmt: skip
            return FileReport(name, sha256, "in_progress", source or "", fmt, detail=where)
        # The other run may have committed between our first look and the lease.
        existing = read_entry(res.store, layout.parse_key(sha256))
        if existing is not None and existing["body"].get("status") != "failed":
            return _already_ingested(res, name, sha256, existing)
        with watch(name, path, settings.progress_seconds, progress) as counter:
            return _ingest_leased(
                res, path, name, sha256, size, source, arrived_at, fmt, region, as_of, counter
            )


def _ingest_leased(
    res: Resources,
    path: Path,
    name: str,
    sha256: str,
    size: int,
    source: str | None,
    arrived_at: dt.datetime | None,
    fmt: str | None,
    region: str | None,
    as_of: dt.date,
    progress: Callable[[int], None] | None,
) -> FileReport:
    """Seal, store, parse, publish and commit a file this run holds the lease on."""
    started = time.perf_counter()
    settings = res.settings
    source = source or settings.default_source
    declared = res.format_for(source)  # the source registry's; a run's own `fmt` wins
    if settings.bronze_lock:
        _locked(lambda: require_lock(res.bronze))
    with tempfile.TemporaryDirectory(prefix=staging.prefix("unpack")) as tmp:
        try:  # what the delivery holds: itself, or its members decompressed and decoded
            unpacked = unpack.open_delivery(
                path, name, sha256, size, Path(tmp), unpack.Limits.of(settings)
            )
            parser = _format_of(unpacked, fmt, declared)
            format_error: FileFormatError | None = None
        except FileFormatError as exc:
            unpacked, parser, format_error = None, None, exc
        signer = res.keyring.signing_key()
        now = dt.datetime.now(dt.UTC)
        seal = seal_original(res.store, signer, sha256, size, source, name, arrived_at or now, now)
        _audit_seal(res, seal)
        _heard_from(res, source, dt.datetime.fromisoformat(seal["body"]["arrived_at"]))
        file_key = res.keyring.data_key(layout.file_key_name(sha256))
        b_key = layout.bronze_key(source, sha256)
        # Locked in the upload from the month it arrived in; the commit extends it if need be.
        upload_lock = lock_date(res.policy, [], seal["body"]["arrived_at"])
        store_original(res.bronze, b_key, path, sha256, file_key, upload_lock)
        if res.settings.bronze_lock:  # read back: fail closed on a lock the store did not set
            _hold(res, b_key, [], seal)
        log.info("%s sealed (sha256 %s…, %d bytes) and stored in bronze", name, sha256[:12], size)

        if format_error is not None or unpacked is None:
            assert format_error is not None
            return _quarantine_file(
                res, seal, name, source, sha256, size, b_key, format_error, as_of
            )
        if parser is None:  # no bytes, or a compressed delivery of nothing: no records, no fault
            empty = FileReport(name, sha256, "empty", source, None, reason="empty_file")
            empty.detail = "the file has no bytes" if size == 0 else "it decompresses to no bytes"
            empty.unpacked = unpacked.entry()
            _record_outcome(res, seal, b_key, empty, as_of)
            log.warning("%s is empty (%s): sealed, nothing to parse", name, empty.detail)
            return empty
        try:
            report = _parse_into_tiers(
                res, parser, unpacked, name, source, sha256, region, as_of, file_key, progress
            )
        except FileFormatError as exc:
            return _quarantine_file(res, seal, name, source, sha256, size, b_key, exc, as_of)
        except failures() as exc:  # an engine panic on a hostile file too: the file failed
            if _transient(exc):
                raise  # the store or network: nothing was committed, a rerun retries the file
            # Engine messages can quote values from the file: say only what failed.
            reason = exc.args[0] if isinstance(exc, IngestError) else type(exc).__name__
            failed = FileReport(name, sha256, "failed", source, parser.name, detail=reason)
            failed.reason = reason
            _record_outcome(res, seal, b_key, failed, as_of)
            raise IngestError(f"{name}: FAILED ({reason}); the original is kept in bronze", terminal=True, status="failed") from None  # fmt: skip
        if report.status == "refused":
            report.outputs.append(_refusal_note(res, report))
            _record_outcome(res, seal, b_key, report, as_of)
            note = layout.quarantine_file_key(sha256)
            raise IngestError(f"{report.detail} ({note})", terminal=True, status="refused")
        _record_outcome(res, seal, b_key, report, as_of)
        report.delivery = {
            "bytes": size,
            "arrived_at": seal["body"]["arrived_at"],
            "published_at": dt.datetime.now(dt.UTC).isoformat(),
            "seconds": round(time.perf_counter() - started, 3),
        }
        log.info(
            "%s ingested: %d records → silver %d, gold %d (%d gold only), quarantined %d",
            name,
            report.records,
            report.silver,
            report.gold,
            report.gold_only,
            report.quarantined,
        )
        return report


def _format_of(
    unpacked: unpack.Unpacked, fmt: str | None, declared: str | None = None
) -> Source | None:
    """The one format of every part with bytes (None: nothing to parse): `fmt` when the run
    names one; else detected, the source registry's `declared` format read where nothing is
    detected, and a part detected as another format quarantined (never read by a guess)."""
    found: dict[str, Source] = {}
    for part in (p for p in unpacked.parts if p.readable):
        try:
            parser = _detect_declared(part.path, declared) if declared and not fmt else detect(part.path, fmt)  # fmt: skip
        except FileFormatError as exc:
            if unpacked.plain:
                raise
            where = f"{part.label} (in the {unpacked.compression or part.encoding} delivery)"
            raise FileFormatError(exc.reason, f"{where}: {exc}") from None
        found[parser.name] = parser
    if len(found) > 1:
        raise FileFormatError("compressed:mixed_formats", f"members in {', '.join(sorted(found))}: send one format per delivery")  # fmt: skip
    return next(iter(found.values()), None)


def _detect_declared(path: Path, declared: str) -> Source:
    """A part of a source whose registry entry declares its format: read as it when no
    format's signature matches (a known fault, such as a foreign delimiter, is still said)."""
    try:
        parser = detect(path)
    except FileFormatError as exc:
        if exc.reason != "unrecognised_format":
            raise
        return detect(path, declared)
    if parser.name != declared:
        raise FileFormatError("format_mismatch", f"a {parser.name} file from a source the registry declares as {declared}")  # fmt: skip
    return parser


#: why each terminal outcome of a parse is in the audit log
INGEST_WHY = {
    "ingested": "tiers written; counts reconcile to the sealed file",
    "refused": "refused by the data expectations; nothing published",
    "failed": "the file could not be read to the end; nothing published",
    "empty": "the file has no bytes; nothing to parse",
}


def _transient(exc: BaseException) -> bool:
    """A failure of the store or the network rather than of the file (or the file's lease
    taken over by another run): worth a rerun, never the file's recorded outcome."""
    return isinstance(exc, (LeaseLost, *store_errors()))


def _record_outcome(
    res: Resources, seal: dict[str, Any], b_key: str, report: FileReport, as_of: dt.date
) -> None:
    """The file's terminal signed parse entry (ingested, refused or failed) and its audit
    entry; bronze held until the purge date of the earliest month it holds."""
    _hold(res, b_key, report.months, seal)
    report.outputs = sorted({*report.outputs, b_key})
    confirm(res.store, report.sha256)
    record_parse(res.store, res.keyring.signing_key(), seal, report.parse_entry(seal, as_of))
    _audit_ingest(res, {**asdict(report), "sha256": report.sha256, "file": report.file})


def _locked(step: Callable[[], object]) -> None:
    """Run a lock step; a lock that cannot be read or set fails the ingest, never passes."""
    try:
        step()
    except LockError as exc:
        raise IngestError(f"Object Lock: {exc}") from exc


def _hold(res: Resources, b_key: str, months: list[str], seal: dict[str, Any]) -> None:
    """Lock the original until the policy's purge date of its earliest month."""
    until = lock_date(res.policy, months, seal["body"]["arrived_at"])
    _locked(lambda: hold_until(res.bronze, b_key, until, required=res.settings.bronze_lock))


def _heard_from(res: Resources, source: str, arrived_at: dt.datetime) -> None:
    """Mark the hour the source delivered in (one small object an hour and source, whatever
    arrives in it): the source watch tells a source gone silent from these."""
    res.store.put_new(layout.delivery_key(source, arrived_at), b"{}")  # once an hour


def _audit_seal(res: Resources, seal: dict[str, Any]) -> None:
    """The seal's audit entry, written once per file however often ingest reruns."""
    body = seal["body"]
    audit.append(
        res.store,
        res.keyring.signing_key(),
        "seal",
        what={k: body[k] for k in ("sha256", "file", "source", "size")},
        why="original sealed on arrival, before parsing",
        event=f"seal:{body['sha256']}",
    )


def _audit_ingest(res: Resources, facts: dict[str, Any]) -> None:
    """The ingest's audit entry, once per file: a rerun after a lost write records it then."""
    counts = {k: facts.get(k, 0) for k in ("records", "silver", "gold", "quarantined")}
    status = facts.get("status") or "ingested"
    audit.append(
        res.store,
        res.keyring.signing_key(),
        "ingest",
        what={
            "sha256": facts["sha256"],
            "file": facts["file"],
            "months": facts.get("months", []),
            "status": status,
            **counts,
        },
        why=INGEST_WHY[status],
        # one entry per outcome: a failed file ingested later gets its own `ingest` entry
        event=f"{'ingest' if status == 'ingested' else status}:{facts['sha256']}",
    )


def _already_ingested(res: Resources, name: str, sha256: str, parsed: dict[str, Any]) -> FileReport:
    """A file whose parse entry exists: nothing to redo, but an audit entry an earlier run
    failed to write after its commit is written now."""
    body = parsed["body"]
    seal = read_entry(res.store, layout.seal_key(sha256))
    if seal is not None:
        _audit_seal(res, seal)
    if body.get("status") in INGEST_WHY:
        _audit_ingest(res, {"sha256": sha256, "file": body.get("file") or name, **body})
    log.info("%s (sha256 %s…) was ingested before: nothing to do", name, sha256[:12])
    return FileReport(name, sha256, "already_ingested", body.get("source", ""), body.get("format"))


#: the suite that judges each tier's batches, and the column naming a failing row
SUITES = {"silver": "silver", "gold": "gold", "vault": "silver_identifiers"}
INDEX = {"silver": quality.INDEX_COLUMN, "gold": quality.INDEX_COLUMN, "silver_identifiers": None}


def _suite_tallies(res: Resources) -> dict[str, quality.SuiteTally]:
    """One evaluation per suite for this file (an unsupported suite is refused here)."""
    return {suite: res.quality.tally(suite, INDEX[suite]) for suite in SUITES.values()}


def _validate(
    res: Resources, tallies: dict[str, quality.SuiteTally], name: str, sha256: str
) -> dict[str, list[str]]:
    """Record each suite's verdict on the whole file: the failed expectations by suite.

    Every row was evaluated in the batch loop (`tallies`); each suite's merged result is
    stored as GX's validation-result JSON, rendered into Data Docs once per run (`pipeline
    docs`, the DAG's `data_docs` task), so GX is never imported by an ingest.

    Nothing has been published yet, so a refused file leaves silver and gold unchanged; it is
    recorded as `refused` with the failing expectations named (never the values that failed).
    """
    failed: dict[str, list[str]] = {}
    run_name = f"{name}-{sha256[:16]}"
    for suite, tally in tallies.items():
        if not tally.rows:
            continue
        document = quality.result_document(tally)
        res.quality.write_result(document, run_name)
        if problems := quality.failures(document):
            failed[suite] = problems
    if not failed:
        log.info("%s passed the silver and gold suites", name)
    return failed


def _publish_index(res: Resources, source: str, sha256: str, index: IndexSpool) -> list[str]:
    """The file's record-ID index, per month (pipeline.records.redelivery): the keys written."""
    keys = []
    for month, path in index.parts():
        key = layout.record_id_index_key(source, month, sha256)
        res.store.put_file(key, path)
        keys.append(key)
    return keys


def _refusal_note(res: Resources, report: FileReport) -> str:
    """Write the note of a file the expectations refused: which expectations, never values."""
    key = layout.quarantine_file_key(report.sha256)
    note = {
        "file": report.file,
        "sha256": report.sha256,
        "reason": "expectations_failed",
        "failed": report.refused,
        "data_docs": str(res.quality.docs_index()),
    }
    res.store.put_bytes(key, json.dumps(note, indent=1).encode())
    return key


def _parse_into_tiers(
    res: Resources,
    parser: Source,
    unpacked: unpack.Unpacked,
    name: str,
    source: str,
    sha256: str,
    region: str | None,
    as_of: dt.date,
    file_key: bytes,
    progress: Callable[[int], None] | None,
    zone: str | None = None,
) -> FileReport:
    """Parse a file into staged tiers and publish them; `zone` (a replay: the one the ingest
    read its times in) over the source's configured zone."""
    ctx = FileContext(
        source=source,
        source_file=name,
        sha256=sha256,
        as_of=as_of,
        default_region=region,
        international=parser.international,
        alphanumeric=parser.alphanumeric,
        derived_ids=parser.derived_ids,
        token_key=res.keyring.token_key(TOKEN_KEY_VERSION),
        token_version=TOKEN_KEY_VERSION,
        identifier_purge=res.policy.identifier_purge,
        purged_months=frozenset(layout.purged_months(res.store)),
        commit_key=file_key,
        suppressed=frozenset(layout.listed_tokens(res.store, "suppressed")),
        commitment_encoding=ENCODING,
        detector_region=res.quality.region,
    )
    zone = zone if zone is not None else res.zone_for(source)
    opts = ParseOptions(region, zone, res.settings.batch_rows)
    book = AddressBook()
    tallies = _suite_tallies(res)
    validating = [0.0]

    def check(tier: str, frame: pl.DataFrame) -> None:
        began = time.perf_counter()
        tallies[SUITES[tier]].add(frame)
        validating[0] += time.perf_counter() - began

    writer = TierWriter(
        sha256,
        lambda y, m: res.keyring.data_key(layout.month_key_name((y, m))),
        file_key,
        source,
        name,
        check,
    )
    seen_ids = Fingerprints()
    prior = PriorIds(res.store, source, sha256)
    index = IndexSpool()
    report = FileReport(name, sha256, "ingested", source, parser.name)
    report.source_timezone = opts.timezone
    report.unpacked = unpacked.entry()
    reasons: Counter[str] = Counter()
    scrubbed: Counter[str] = Counter()
    by_month: dict[str, dict[str, int]] = {"gold": {}, "silver": {}}
    timings = report.timings = {"commit_s": 0.0, "validate_s": 0.0}
    try:
        # Parsing and the row-by-row checks (`prepare`) of the next batch run on the reader
        # thread while this one is finished, committed and handed to the writers.
        batches = (prepare(b, ctx, book) for b in member_batches(parser, unpacked, opts))
        for parsed in prefetch(batches):
            out = finish(parsed, ctx, report.gold, seen_ids, prior.earlier)
            index.add(out.gold)
            writer.add(out.silver, out.gold, out.vault, out.quarantine)
            if len(out.leaves):
                started = time.perf_counter()
                writer.add_leaves(out.leaves)
                for size, root in block_roots(out.leaves):
                    report.batch_leaves.append(size)
                    report.batch_roots.append(root)
                timings["commit_s"] += out.commit_seconds + time.perf_counter() - started
            report.records += len(parsed)
            report.silver += len(out.silver)
            report.gold += len(out.gold)
            report.quarantined += len(out.quarantine)
            reasons.update(out.quarantine.get_column("reason").to_list())
            scrubbed.update(out.scrubbed)
            for tier, frame in (("gold", out.gold), ("silver", out.silver)):
                counts = by_month[tier]
                for y, m, n in frame.group_by("year", "month").len().iter_rows():
                    counts[f"{y:04d}-{m:02d}"] = counts.get(f"{y:04d}-{m:02d}", 0) + n
            if progress:
                progress(report.records)
        if report.records != report.gold + report.quarantined:
            raise IngestError(
                f"{name}: counts do not reconcile ({report.records} records, "
                f"{report.gold} kept, {report.quarantined} quarantined)"
            )
        # What the batches shared is no longer needed: give its memory back before the ordered
        # parts are sorted and written, when memory peaks.
        del seen_ids, prior, book, batches
        parsed = out = frame = None  # nor is the last batch
        pa.default_memory_pool().release_unused()
        writer.staged()
        index.sort()
        started = time.perf_counter()
        report.refused = _validate(res, tallies, name, sha256)
        # Batch evaluation runs on the writer threads (summed over both), plus the verdict.
        timings["validate_s"] = validating[0] + time.perf_counter() - started
        if report.refused:
            listing = "; ".join(f"{k}: {', '.join(v)}" for k, v in report.refused.items())
            report.status, report.reason = "refused", "expectations_failed"
            report.detail = (
                f"{name}: refused by data expectations, nothing published, file quarantined. "
                f"Failed: {listing}. Data Docs: {res.quality.docs_index()}"
            )
        else:
            confirm(res.store, sha256)
            report.outputs = writer.publish(res.store) + _publish_index(res, source, sha256, index)
    finally:
        writer.close()
        index.close()
    report.gold_only = report.gold - report.silver
    report.merkle_root = file_root(report.batch_roots)
    report.reasons = dict(sorted(reasons.items()))
    report.scrubbed = dict(sorted(scrubbed.items()))
    report.months = sorted(by_month["gold"])
    report.by_month = {t: dict(sorted(c.items())) for t, c in by_month.items()}
    return report


def member_batches(
    parser: Source, unpacked: unpack.Unpacked, opts: ParseOptions
) -> Iterator[pl.DataFrame]:
    """The parsed batches of every part in order; a later member's lines are numbered on from
    the last record line of the ones before (as if they were one file), so that lines and the
    record IDs derived from them stay unique in the delivery."""
    offset = 0
    for part in unpacked.parts:
        last = 0
        for frame in parser.parse(part.path, opts) if part.readable else ():
            if len(frame):
                if offset:
                    frame = frame.with_columns(pl.col("source_line") + offset)
                last = max(last, int(frame.get_column("source_line").max()))  # type: ignore[arg-type]
            yield frame
        offset = max(offset, last)


def _quarantine_file(
    res: Resources,
    seal: dict[str, Any],
    name: str,
    source: str,
    sha256: str,
    size: int,
    b_key: str,
    error: FileFormatError,
    as_of: dt.date,
) -> FileReport:
    """A file no parser can read: quarantined whole (its bytes are already sealed in bronze)."""
    key = layout.quarantine_file_key(sha256)
    note = {
        "file": name,
        "source": source,
        "sha256": sha256,
        "size": size,
        "reason": error.reason,
        "detail": str(error),
        "bronze": b_key,
    }
    res.store.put_bytes(key, json.dumps(note, indent=1).encode())
    _hold(res, b_key, [], seal)
    report = FileReport(name, sha256, "quarantined_file", source, None)
    report.reason, report.detail, report.outputs = error.reason, str(error), [key, b_key]
    record_parse(res.store, res.keyring.signing_key(), seal, report.parse_entry(seal, as_of))
    log.warning("%s QUARANTINED whole: %s (see %s)", name, error, key)
    return report


def reparse_original(
    res: Resources,
    sha256: str,
    wanted: Callable[[dict[str, Any]], bool],
    *,
    default_region: str | None,
    as_of: dt.date,
    note: dict[str, Any],
    progress: Callable[[int], None] | None = None,
    zone: str | None = None,
) -> tuple[dict[str, Any], FileReport | None]:
    """Parse an ingested file again from its sealed original in bronze (a replay, docs/operations.md
    "Replaying quarantined rows"): (the parse entry's body before, the new report), or None
    for the report when `wanted` declines the file as it now stands.

    Under the file's lease, as an ingest: the outputs keyed by its digest are overwritten,
    those the new parse no longer has are removed, and a new signed parse entry completes the
    same seal, its `replays` listing `note` and the counts before. Until that entry is written the old one stands,
    so a run killed mid-way is redone whole by the next. Times without an offset are read in
    `zone` if given (the fix a replay brings), else in the zone the ingest read them in.
    """
    with lease(res.store, sha256, res.settings.lease_seconds) as held:
        if not held:
            raise IngestError(f"{sha256[:12]}…: another run is ingesting or replaying this file")
        seal = read_entry(res.store, layout.seal_key(sha256))
        entry = read_entry(res.store, layout.parse_key(sha256))
        if seal is None or entry is None:
            raise IngestError(f"{sha256[:12]}…: not ingested, nothing to replay")
        before = entry["body"]
        if not wanted(before):
            return before, None
        b_key = next((k for k in before.get("outputs", []) if layout.is_bronze(k)), "")
        with tempfile.TemporaryDirectory(prefix=staging.prefix("stage")) as tmp:
            path, file_key = Path(tmp) / "original", _restore(res, before, b_key, sha256)
            with open(path, "wb") as out:
                for chunk in read_original(res.bronze, b_key, sha256, file_key):
                    out.write(chunk)
            digest, size = sha256_file(path)
            if digest != sha256:
                raise IngestError(f"{before.get('file')}: the original does not match its seal")
            unpacked = unpack.open_delivery(
                path, before["file"], sha256, size, Path(tmp), unpack.Limits.of(res.settings)
            )
            if unpacked.entry() != (before.get("unpacked") or {}):
                raise IngestError(f"{before.get('file')}: its members differ from those recorded")
            parser = _format_of(unpacked, before.get("format"))
            assert parser is not None  # an ingested file has a format
            with watch(before["file"], path, res.settings.progress_seconds, progress) as counter:
                report = _parse_into_tiers(
                    res, parser, unpacked, before["file"], before["source"], sha256,
                    default_region, as_of, file_key, counter,
                    zone or res.settings.zone_read_in(before),
                )  # fmt: skip
        if report.refused or report.records != before.get("records"):
            raise IngestError(report.detail or f"{report.file}: the replay does not reconcile")
        for key in set(before.get("outputs", [])) - {*report.outputs, b_key}:
            res.store.purge(key)  # a part the new parse no longer has (a month now gold only)
        _hold(res, b_key, report.months, seal)
        report.outputs = sorted({*report.outputs, b_key})
        counts = {k: int(before.get(k) or 0) for k in ("records", "silver", "gold", "quarantined")}
        done = {**note, "before": counts}
        body = report.parse_entry(seal, as_of) | {"replays": [*before.get("replays", []), done]}
        confirm(res.store, sha256)
        record_parse(res.store, res.keyring.signing_key(), seal, body)
        return before, report


def _restore(res: Resources, body: dict[str, Any], b_key: str, sha256: str) -> bytes:
    """The file key of an original still in bronze; refused once retention purged it."""
    key_name = layout.file_key_name(sha256)
    if not (b_key and res.keyring.has_data_key(key_name) and res.bronze.exists(b_key)):
        raise IngestError(
            f"{body.get('file')}: its original was purged (retention): "
            "its quarantined rows are gone with it and cannot be replayed"
        )
    return res.keyring.data_key(key_name, create=False)


def copy_into_landing(store: ObjectStore, path: Path, source: str) -> str:
    """Drop a local file into landing/<source>/ (what a source system's upload does)."""
    key = layout.landing_key(source, path.name)
    store.put_file(key, path)
    return key

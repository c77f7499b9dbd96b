"""Re-verify that what the store keeps is what was sealed (Pakistan's "original form").

For each ingested file: both seal entries' signatures and their link; the bronze original's
SHA-256 and size against the seal (while bronze exists); the stored leaves against the signed
Merkle root; every gold and silver record's leaf recomputed from its fields and found at its
index (so a changed, added, duplicated or deleted record is named); counts against the signed
parse entry; each silver part's token index against the part (none left without its part); then the audit log's chain. Works after the 12-month purge too: gold records need
neither the vault nor any destroyed key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from pipeline.core import layout, staging
from pipeline.core.errors import USAGE, PipelineError, failures, one_line
from pipeline.core.keys import KeyDestroyed, LocalKeyring
from pipeline.core.lease import lease_of
from pipeline.core.policy import RetentionPolicy
from pipeline.core.store import ObjectStore, read_parquet, store_errors
from pipeline.proof.audit import verify_log
from pipeline.proof.commitments import (
    NAME_FIELDS,
    encoding_of,
    file_root,
    gold_form,
    leaves_of,
    subtree_roots,
)
from pipeline.proof.crypto import DecryptionError
from pipeline.proof.integrity import SealError, verify_pair
from pipeline.proof.reference import READERS, RETAINED, Reader
from pipeline.records import normal_course, token_index, unpack
from pipeline.records.bronze import file_blocks, lock_date, read_original
from pipeline.records.detector import identifying
from pipeline.records.schema import FREE_TEXT_COLUMNS
from pipeline.records.sources.base import FileFormatError

if TYPE_CHECKING:
    from pipeline.core.resources import Resources


@dataclass
class FileCheck:
    """The verdict on one file, per check, with the problems found (named, never valued)."""

    sha256: str
    file: str
    checks: dict[str, str] = field(default_factory=dict)  # check → "ok" | "skipped: …" | "FAIL"
    problems: list[str] = field(default_factory=list)
    #: why the file is not whole yet (sealed and not parsed, or failed): its records are in
    #: bronze and nowhere else, so the store cannot verify until it is ingested
    gap: str | None = None

    def fail(self, check: str, problem: str) -> None:
        self.checks[check] = "FAIL"
        self.problems.append(f"{self.file} ({self.sha256[:12]}…): {check}: {problem}")


@dataclass
class VerifyReport:
    files: list[FileCheck] = field(default_factory=list)
    audit: str = ""
    audit_problem: str | None = None
    expectations_failed: list[str] = field(default_factory=list)
    data_docs: str | None = None

    @property
    def ok(self) -> bool:
        """Green only when everything is whole: no mismatch, and no sealed file not ingested."""
        files_ok = not any(f.problems for f in self.files) and not self.gaps()
        return self.audit_problem is None and files_ok and not self.expectations_failed

    def gaps(self) -> list[FileCheck]:
        return [f for f in self.files if f.gap]

    def problems(self) -> list[str]:
        out = [p for f in self.files for p in f.problems]
        return out + ([f"audit log: {self.audit_problem}"] if self.audit_problem else [])


class DamagedObject(Exception):
    """An object that cannot be read back: named by its key and what failed, never its content."""

    def __init__(self, key: str, exc: BaseException) -> None:
        first_line = (str(exc).splitlines() or [""])[0][:160]
        super().__init__(f"{key} cannot be read ({type(exc).__name__}: {first_line})")


class NothingToVerify(PipelineError, ValueError):
    """A filter that matches no ingested file: verifying nothing is not a pass."""

    exit_status = USAGE


MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def _parquet(store: ObjectStore, key: str) -> pl.DataFrame:
    """A Parquet object read whole, or DamagedObject naming it (a flipped byte, a short file)."""
    try:
        return read_parquet(store, key)
    except failures() as exc:  # any reader or store failure is a finding about this object
        raise DamagedObject(key, exc) from exc


def _json(store: ObjectStore, key: str) -> dict[str, Any]:
    try:
        entry = json.loads(store.get_bytes(key))
        if not isinstance(entry, dict):
            raise ValueError("not a JSON object")
    except failures() as exc:  # see _parquet
        raise DamagedObject(key, exc) from exc
    return entry


@dataclass(frozen=True)
class VerifyRequest:
    """Which files to verify: all, those with records of one month (`YYYY-MM`), or one file
    (by digest prefix, file name or object key); `expectations` also runs the original-form
    suite over the verdicts."""

    month: str | None = None
    file: str | None = None
    expectations: bool = True
    #: also re-read each original from bronze with the reference readers (pipeline.proof.reference)
    deep: bool = False
    #: with `deep`, only files whose parse entry was written at or after this instant
    deep_since: dt.datetime | None = None


def run_verify(res: Resources, request: VerifyRequest) -> VerifyReport:
    """Verify the files the request names (see the module docstring for the checks).

    A damaged object is a named failure of its file and the other files are still checked; a
    malformed month or a filter that matches no file raises NothingToVerify.
    """
    store, bronze, keyring = res.store, res.bronze, res.keyring
    month, file = request.month, request.file
    quality = res.quality if request.expectations else None
    if month is not None and not MONTH.match(month):
        raise NothingToVerify(f"--month must be YYYY-MM (e.g. 2025-03), not {month!r}")
    # Where originals must be locked, each one's lock date is checked against the policy.
    lock_policy = res.policy if res.settings.bronze_lock else None
    public = keyring.public_key()
    report = VerifyReport()
    for obj in store.list(layout.SEALS):  # not layout.ingested_files: a damaged entry is a finding
        sha = layout.sha_of_parse_key(obj.key)
        if sha is None:
            continue
        try:
            parsed_entry = _json(store, obj.key)
        except DamagedObject as exc:
            if not file or sha.startswith(file):
                report.files.append(_damaged(sha, "seal", exc))
            continue
        body = parsed_entry.get("body", {})
        if file and not (
            sha.startswith(file) or body.get("file") == file or file in body.get("outputs", [])
        ):
            continue
        # A failed file's records are nowhere but in bronze, whatever month they are of.
        if month and month not in (body.get("months") or []) and body.get("status") != "failed":
            continue
        try:
            checked = _verify_file(
                store, bronze, keyring, public, sha, parsed_entry, month, lock_policy,
                res.quality.region,
            )  # fmt: skip
            if request.deep and body.get("status") == "ingested" and _since(store, sha, request):
                check_original(res, checked, body)
        except store_errors() as exc:  # an unreadable object fails this file, not the run
            checked = FileCheck(sha, body.get("file") or "?")
            checked.fail("read", one_line(exc))
        except failures() as exc:  # whatever else breaks is this file's failure, not the run's
            checked = _damaged(sha, "verify", DamagedObject(obj.key, exc))
        report.files.append(checked)
    # Their months are unknown: listed for every month; where originals must be locked, the
    # original of each is checked too (the upload locks it, before any commit).
    report.files += _unparsed(store, file, bronze if lock_policy else None, lock_policy)
    if (file or month) and not report.files:
        wanted = " and ".join(
            f"{k} {v!r}" for k, v in (("file", file), ("month", month)) if v is not None
        )
        raise NothingToVerify(f"no ingested file matches {wanted}: nothing was verified")
    verdict = verify_log(store, public)
    report.audit = f"{verdict.entries} entries"
    if not verdict.ok:
        report.audit_problem = f"entry {verdict.first_bad}: {verdict.problem}"
    if quality is not None and report.files:
        report.expectations_failed = quality.validate_frame(
            "original_form", original_form_frame(report), f"verify-{month or 'all'}"
        )
        report.data_docs = str(quality.docs_index())
    return report


def _since(store: ObjectStore, sha: str, request: VerifyRequest) -> bool:
    if request.deep_since is None:
        return True
    info = store.info(layout.parse_key(sha))
    return info is not None and info.modified >= request.deep_since


def check_original(res: Resources, check: FileCheck, body: dict[str, Any]) -> None:
    """Re-read the original from bronze with the reference reader of its format and compare
    every record with the one gold keeps: row count, record ID and each retained field."""
    label = "original (deep)"
    key = next((k for k in body.get("outputs", []) if layout.is_bronze(k)), None)
    reader = READERS.get(body.get("format") or "")
    if key is None or not res.keyring.has_data_key(layout.file_key_name(check.sha256)):
        check.checks[label] = "skipped: purged (file key destroyed)"
        return
    if reader is None:
        check.checks[label] = "skipped: no reference reader for this format"
        return
    file_key = res.keyring.data_key(layout.file_key_name(check.sha256), create=False)
    chunks = read_original(res.bronze, key, check.sha256, file_key)
    # PBX times are read in the zone the ingest read them in, whatever this process's setting.
    zone = res.settings.zone_read_in(body)
    ctx = {"source": body.get("source"), "sha256": check.sha256, "timezone": zone}
    try:
        with tempfile.TemporaryDirectory(prefix=staging.prefix("unpack")) as tmp:
            rows = list(_reread(res, reader, chunks, ctx, body, Path(tmp)))
        original = pl.DataFrame(rows, schema=REFERENCE_SCHEMA)
    except (KeyDestroyed, DecryptionError, ValueError) as exc:
        check.fail(label, f"the original cannot be read back ({type(exc).__name__})")
        return
    except FileFormatError as exc:
        check.fail(label, f"the original no longer opens as it did at ingest ({exc.reason})")
        return
    if len(original) != body.get("records"):
        check.fail(label, f"{len(original):,} records in the original where {body.get('records'):,} were sealed")  # fmt: skip
        return
    problem = _differs(_kept(res.store, check.sha256, body), original, file_key)
    if problem:
        check.fail(label, problem)
    else:
        check.checks[label] = f"ok ({len(original):,} records re-read)"


def _reread(
    res: Resources,
    reader: Reader,
    chunks: Iterator[bytes],
    ctx: dict[str, Any],
    body: dict[str, Any],
    tmp: Path,
) -> Iterator[dict[str, Any]]:
    """The original's records as the reference reader finds them: a compressed or re-encoded
    original is opened again as ingest opened it, each member checked against the digest its
    parse entry signed, and its lines numbered on across members as ingest numbers them."""
    recorded = body.get("unpacked") or {}
    if not recorded:
        for line, fields in reader(chunks, ctx):
            yield {"source_line": line, **fields}
        return
    path = tmp / "original"
    with open(path, "wb") as out:
        for chunk in chunks:
            out.write(chunk)
    limits = unpack.Limits.of(res.settings)
    opened = unpack.open_delivery(path, body["file"], ctx["sha256"], path.stat().st_size, tmp, limits)  # fmt: skip
    if opened.entry() != recorded:
        raise FileFormatError("members", "the members differ from those the parse entry signed")
    offset = 0
    for part in opened.parts:
        last = 0
        for line, fields in reader(file_blocks(part.path), {**ctx, "line_offset": offset}) if part.readable else ():  # fmt: skip
            last = max(last, line + offset)
            yield {"source_line": line + offset, **fields}
        offset = max(offset, last)


_TYPES = {"event_time": pl.Datetime("us", "UTC"), "end_time": pl.Datetime("us", "UTC"),
          "duration_s": pl.Float64(), "units": pl.Int64(), "price": pl.Float64()}  # fmt: skip
REFERENCE_SCHEMA: dict[str, pl.DataType] = {
    "source_line": pl.Int64(),
    **{f: _TYPES.get(f, pl.String()) for f in RETAINED},
}


def _kept(store: ObjectStore, sha: str, body: dict[str, Any]) -> pl.DataFrame:
    """The file's records as gold keeps them: line and retained fields."""
    parts = [
        read_parquet(store, layout.partition("gold", layout.parse_month(m), sha)).select(
            "source_line", *RETAINED
        )
        for m in (body.get("by_month") or {}).get("gold", {})
    ]
    return pl.concat(parts) if parts else pl.DataFrame(schema=REFERENCE_SCHEMA)


def _differs(kept: pl.DataFrame, original: pl.DataFrame, file_key: bytes) -> str | None:
    """The first kept record that differs from the original beyond the documented
    normal-course changes (`normal_course`: one definition with ingest): its ID, line and
    field."""
    joined = kept.join(
        normal_course.closed(original), on="source_line", how="left", suffix="_o"
    ).sort("source_line")
    for name in RETAINED:
        same = normal_course.matches(name, pl.col(f"{name}_o"), pl.col(name), file_key)
        bad = joined.filter(~same)
        if len(bad):
            rid, line = bad.get_column("record_id")[0], bad.get_column("source_line")[0]
            return (
                f"record {rid} (line {line}): {name} is not what the original holds; "
                f"{len(bad):,} records differ in {name}"
            )
    return None


#: the state of a file sealed without a parse entry: nothing of it was checked
UNPARSED = "skipped: sealed, not parsed"


def _unparsed(
    store: ObjectStore,
    file: str | None,
    bronze: ObjectStore | None = None,
    lock_policy: RetentionPolicy | None = None,
) -> list[FileCheck]:
    """Files sealed without a parse entry (an ingest interrupted): listed, for a rerun; with
    `lock_policy`, an original already in bronze must carry its lock."""
    out = []
    for digest in layout.unparsed_seals(store):
        try:
            body = layout.unparsed_file(store, digest)
        except failures() as exc:  # a damaged seal is this file's finding, not the run's
            out.append(_damaged(digest, "seal", DamagedObject(layout.seal_key(digest), exc)))
            continue
        if file and not (digest.startswith(file) or body.get("file") == file):
            continue
        check = FileCheck(digest, body.get("file") or "?")
        holder = lease_of(store, digest)
        if holder is None:
            check.checks["state"] = f"{UNPARSED} (ingest interrupted: rerun ingest)"
            check.gap = "sealed, not parsed: rerun ingest"
        else:  # a run has it, or had it and is gone (then its lease is soon taken over)
            check.checks["state"] = f"{UNPARSED} ({holder.describe()})"
            check.gap = f"sealed, not parsed: {holder.describe()}"
        if bronze is not None and lock_policy is not None:
            try:
                if bronze.exists(body["outputs"][0]):
                    _check_lock(bronze, check, body, body, lock_policy)
            except store_errors() as exc:  # this file's finding, not the run's
                check.fail("lock", one_line(exc))
        out.append(check)
    return out


def _damaged(sha: str, check_name: str, exc: Exception) -> FileCheck:
    check = FileCheck(sha, "?")
    check.fail(check_name, str(exc))
    return check


def _verify_file(
    store: ObjectStore,
    bronze: ObjectStore,
    keyring: LocalKeyring,
    public: Any,
    sha: str,
    parsed_entry: dict[str, Any],
    month: str | None,
    lock_policy: RetentionPolicy | None = None,
    region: str | None = None,
) -> FileCheck:
    body = parsed_entry.get("body", {})
    check = FileCheck(sha, body.get("file") or "?")
    try:
        seal = _json(store, layout.seal_key(sha)) if store.exists(layout.seal_key(sha)) else None
        if seal is None:
            raise SealError("no seal entry")
        seal_body, _ = verify_pair(seal, parsed_entry, public, sha)
        check.checks["seal"] = "ok"
    except (SealError, DamagedObject) as exc:
        check.fail("seal", str(exc))
        return check
    _check_bronze(bronze, keyring, check, seal_body, body)
    if lock_policy is not None and check.checks.get("bronze") == "ok":
        _check_lock(bronze, check, body, seal_body, lock_policy)
    if body.get("status") != "ingested":
        check.checks["state"] = f"{body.get('status')}: {body.get('reason') or '-'}"
        if body.get("status") == "failed" and keyring.has_data_key(layout.file_key_name(sha)):
            # while its original exists it can still be ingested; once purged, never again
            check.gap = "failed: fix the cause in the log, then ingest the file again"
        return check
    leaves = _check_tree(store, check, body)
    if leaves is None:
        return check
    _check_records(store, check, body, leaves, month, seal_body, region)
    _check_quarantine(store, keyring, check, body)
    return check


def _check_quarantine(
    store: ObjectStore, keyring: LocalKeyring, check: FileCheck, body: dict[str, Any]
) -> None:
    """Sealed records = kept + quarantined: the quarantined rows must all still be there."""
    key = next((k for k in body.get("outputs", []) if k.startswith(layout.QUARANTINE_ROWS)), None)
    if key is None:
        return
    if not keyring.has_data_key(layout.file_key_name(check.sha256)):
        check.checks["quarantine"] = "skipped: purged (file key destroyed)"
        return
    try:
        rows = len(_parquet(store, key)) if store.exists(key) else 0
    except DamagedObject as exc:
        check.fail("quarantine", str(exc))
        return
    if rows != body.get("quarantined") or body.get("records") != body.get("gold", 0) + rows:
        check.fail(
            "quarantine", f"{rows:,} quarantined rows where {body.get('quarantined'):,} were sealed"
        )
    else:
        check.checks["quarantine"] = f"ok ({rows:,} rows)"


def _check_bronze(
    bronze: ObjectStore,
    keyring: LocalKeyring,
    check: FileCheck,
    seal: dict[str, Any],
    body: dict[str, Any],
) -> None:
    key = next((k for k in body.get("outputs", []) if layout.is_bronze(k)), None)
    file_key = layout.file_key_name(check.sha256)
    if key is None or not keyring.has_data_key(file_key):
        check.checks["bronze"] = "skipped: purged (file key destroyed)"
        return
    if not bronze.exists(key):
        check.fail("bronze", f"{key} is missing while the file is within retention")
        return
    h, size = hashlib.sha256(), 0
    try:
        for part in read_original(
            bronze, key, check.sha256, keyring.data_key(file_key, create=False)
        ):
            h.update(part)
            size += len(part)
    except failures() as exc:  # a destroyed key, a failed tag, a short or unreadable object
        check.fail("bronze", str(DamagedObject(key, exc)))
        return
    if h.hexdigest() != seal["sha256"] or size != seal["size"]:
        check.fail("bronze", f"{key} does not hash to the sealed digest")
    else:
        check.checks["bronze"] = "ok"


def _check_lock(
    bronze: ObjectStore,
    check: FileCheck,
    body: dict[str, Any],
    seal: dict[str, Any],
    policy: RetentionPolicy,
) -> None:
    """The original is under Object Lock until at least the date the policy gives it."""
    key = next(k for k in body.get("outputs", []) if layout.is_bronze(k))
    expected = lock_date(policy, body.get("months") or [], seal["arrived_at"])
    until = bronze.lock_until(key)
    if until is None:
        check.fail("lock", f"{key} is not under Object Lock (policy: until {expected})")
    elif until.date() < expected:
        check.fail("lock", f"{key} is locked until {until.date()}, the policy says {expected}")
    else:
        check.checks["lock"] = f"ok (until {until.date()})"


def _check_tree(store: ObjectStore, check: FileCheck, body: dict[str, Any]) -> pl.Series | None:
    key = layout.proof_key(check.sha256)
    if body.get("gold") == 0 and key not in body.get("outputs", []):
        # Nothing kept (a header-only file, or every record quarantined): no leaves to store.
        if body.get("batch_roots") or body.get("merkle_root") != file_root([]):
            check.fail("proofs", "no record was kept, yet the entry seals a Merkle root")
            return None
        check.checks["proofs"] = "ok (no record kept)"
        return pl.Series("leaf", [], pl.String)
    if not store.exists(key):
        check.fail("proofs", f"{key} is missing")
        return None
    try:
        leaves = _parquet(store, key).get_column("leaf").bin.encode("hex")
    except (DamagedObject, pl.exceptions.ColumnNotFoundError) as exc:
        check.fail("proofs", str(exc))
        return None
    sizes = body.get("batch_leaves") or []
    if len(leaves) != sum(sizes) or len(leaves) != body.get("gold"):
        check.fail("proofs", f"{len(leaves)} leaves stored, {body.get('gold')} records sealed")
        return None
    roots = subtree_roots(leaves, sizes)
    if roots != body.get("batch_roots") or file_root(roots) != body.get("merkle_root"):
        check.fail("proofs", "the stored leaves do not reach the sealed Merkle root")
        return None
    check.checks["proofs"] = "ok"
    return leaves


def _check_records(
    store: ObjectStore,
    check: FileCheck,
    body: dict[str, Any],
    leaves: pl.Series,
    month: str | None,
    seal: dict[str, Any],
    region: str | None = None,
) -> None:
    by_month = body.get("by_month") or {}
    for tier in ("gold", "silver"):
        expected = by_month.get(tier, {})
        for name, count in sorted(expected.items()):
            if month and name != month:
                continue
            key = layout.partition(tier, layout.parse_month(name), check.sha256)
            label = f"{tier} {name}"
            if tier == "silver":
                _check_token_index(store, check, key, name)
            if not store.exists(key):
                if tier == "silver" and store.exists(layout.purge_marker(layout.parse_month(name))):
                    check.checks[label] = "skipped: identifiers purged"
                else:
                    check.fail(label, f"{key} is missing")
                continue
            try:
                rows = _parquet(store, key)
                problem = _record_problem(rows, leaves, tier, encoding_of(body), seal)
                problem = problem or _identifiers_in(rows, region)
            except DamagedObject as exc:
                check.fail(label, str(exc))
                continue
            except pl.exceptions.PolarsError as exc:  # a column missing or of the wrong type
                check.fail(label, f"{key} does not have the record schema ({type(exc).__name__})")
                continue
            if problem is None and len(rows) != count:
                problem = f"{len(rows):,} records where {count:,} were sealed (records deleted)"
            if problem:
                check.fail(label, problem)
            else:
                check.checks[label] = f"ok ({count:,} records)"


def _check_token_index(store: ObjectStore, check: FileCheck, silver_key: str, name: str) -> None:
    """A silver part's token index agrees with the part; none outlives the part."""
    index_key, label = layout.token_index_key(silver_key), f"token index {name}"
    if not store.exists(silver_key):
        if store.exists(index_key):
            check.fail(label, f"{index_key} is left without the part it describes")
        return
    try:
        problem = token_index.disagreement(store, silver_key)
    except (OSError, ValueError) as exc:  # unreadable: pyarrow raises these
        problem = f"{index_key} cannot be read ({type(exc).__name__})"
    if problem:
        check.fail(label, problem)
    elif store.exists(index_key):
        check.checks[label] = "ok"


def _identifiers_in(rows: pl.DataFrame, region: str | None) -> str | None:
    """A free-text column holding what the identifier detector reads as a phone number or an
    address (the check ingest and the suites make, made again on what is stored): its name
    and how many values, never a value."""
    columns = [c for c in FREE_TEXT_COLUMNS if c in rows.columns]
    hits = rows.select(identifying(pl.col(c), region).sum() for c in columns).row(0, named=True)
    found = {c: int(n) for c, n in hits.items() if n}
    if not found:
        return None
    named = ", ".join(f"{c} ({n:,})" for c, n in found.items())
    return f"values the identifier detector reads as a phone number or address in {named}"


def _record_problem(
    rows: pl.DataFrame, leaves: pl.Series, tier: str, encoding: int, seal: dict[str, Any]
) -> str | None:
    """The first record that does not match its sealed leaf, named by record id.

    Fields the leaf does not cover (the name and folder the file arrived under, from encoding 2)
    must equal what the signed seal entry states.
    """
    if tier == "silver":  # silver holds tokens where gold holds nothing: compare as gold
        rows = gold_form(rows)
    sealed_names = {"source": seal.get("source"), "source_file": seal.get("file")}
    for column in NAME_FIELDS:
        other = rows.filter(pl.col(column).ne_missing(sealed_names[column]))
        if len(other):
            return (
                f"record {other.get_column('record_id')[0]}: {column} differs from the sealed "
                f"{'file name' if column == 'source_file' else 'source'}"
            )
    dup = rows.filter(pl.col("leaf_index").is_duplicated())
    if len(dup):
        return f"record {dup.get_column('record_id')[0]} appears more than once (leaf {dup.get_column('leaf_index')[0]})"
    idx = rows.get_column("leaf_index")
    outside = rows.filter((idx < 0) | (idx >= len(leaves)) | idx.is_null())
    if len(outside):
        return f"record {outside.get_column('record_id')[0]} is not in the sealed tree (added)"
    computed = rows.select("record_id", "leaf_index").with_columns(
        leaves_of(rows, encoding).alias("_leaf"), pl.Series("_sealed", leaves.gather(idx))
    )
    # A missing identity commitment gives no leaf: it differs, never passes as unknown.
    bad = computed.filter(pl.col("_leaf").ne_missing(pl.col("_sealed")))
    if len(bad):
        return (
            f"record {bad.get_column('record_id')[0]} (leaf {bad.get_column('leaf_index')[0]}) "
            f"differs from its sealed original; {len(bad):,} records differ"
        )
    return None


def original_form_frame(report: VerifyReport) -> Any:
    """One row per file and check (True = verified or rightly skipped), for the original_form suite."""
    import pandas as pd

    def ok(check: FileCheck, *names: str) -> bool:
        return not any(
            result == "FAIL"
            for name, result in check.checks.items()
            if any(name == n or name.startswith(n + " ") for n in names)
        )

    rows = [
        {
            "file": f"{f.sha256[:16]}",
            "seal_ok": ok(f, "seal"),
            "bronze_ok": ok(f, "bronze"),
            "proofs_ok": ok(f, "proofs"),
            "records_ok": ok(f, "gold", "silver"),
            "counts_ok": ok(f, "quarantine"),
            "audit_ok": report.audit_problem is None,
        }
        for f in report.files
    ]
    columns = ["file", "seal_ok", "bronze_ok", "proofs_ok", "records_ok", "counts_ok", "audit_ok"]
    return pd.DataFrame(rows, columns=columns)


def verify_data(report: VerifyReport) -> dict[str, Any]:
    """The verdict as data (`verify --json`): per file its checks and problems, named by key,
    record ID and count, never by value."""
    return {
        "ok": report.ok,
        "files": [
            {
                "file": f.file,
                "sha256": f.sha256,
                "ok": not f.problems and not f.gap,
                "gap": f.gap,
                "checks": f.checks,
                "problems": f.problems,
            }
            for f in report.files
        ],
        "audit": {"entries": report.audit, "problem": report.audit_problem},
        "expectations_failed": report.expectations_failed,
        "data_docs": report.data_docs,
    }


def verify_summary(report: VerifyReport) -> str:
    lines = []
    for f in report.files:
        verdict = "FAIL" if f.problems else "GAP" if f.gap else "ok"
        lines.append(f"{verdict:4}  {f.file}  sha256 {f.sha256[:12]}…")
        for name, result in f.checks.items():
            lines.append(f"        {name:16} {result}")
    lines.append(
        f"audit log: {'FAIL: ' + report.audit_problem if report.audit_problem else 'ok'} ({report.audit})"
    )
    if report.expectations_failed:
        lines.append("original_form suite failed: " + ", ".join(report.expectations_failed))
    if report.data_docs:
        lines.append(f"Data Docs: {report.data_docs}")
    gaps = report.gaps()
    checked = len(report.files) - len(gaps)
    if report.ok and not checked:
        lines.append("\nNo file has been ingested yet: only the audit log was verified.")
    elif report.ok:
        lines.append(f"\nVERIFIED: {checked} files, every record matches its sealed original.")
    elif report.problems():
        lines.append("\nMISMATCHES:")
        lines += [f"  - {p}" for p in report.problems()]
    if gaps:  # records sealed in bronze and nowhere else: the store is not whole
        lines.append(
            f"\nNOT VERIFIED: {len(gaps)} sealed file{'s' if len(gaps) > 1 else ''} not "
            "ingested yet, so records are missing from the tiers:"
        )
        lines += [f"  - {f.file} ({f.sha256[:12]}…): {f.gap}" for f in gaps]
    return "\n".join(lines)

"""Retention: identifiers gone at 12 months, gold gone at 10 years, legal holds honoured.

One run, for a date `as_of` (the DAG's logical date, so reruns and backfills agree):

1. holds: records covered by an active hold (and, per the policy's country overrides, a
   statutory hold) are copied into the hold's own store before anything is destroyed;
2. each month whose identifier purge date has come: the month's data key is destroyed
   (crypto-shred), then its silver, vault and token-index partitions are deleted (every version), then a
   `retention/purged/<YYYY-MM>.json` marker is written, which also stops a late or replayed
   ingest from re-creating identifiers for the month;
3. each sealed file (whatever its state) whose earliest month is purged: its file key is
   destroyed and its bronze original and quarantined raw rows deleted, every version (an object
   still under Object Lock is reported once, `locked until <date>`, never forced, and deleted by
   the first run after the lock);
4. each year whose 10 years have passed: its gold partitions are deleted;
5. released or expired holds are purged, and their records forget the tokens they named;
   subject requests answered more than `REQUEST_IDENTIFIER_DAYS` ago forget the person (request
   key destroyed, record deleted);
6. earlier versions left in landing/ are deleted, unfinished multipart uploads older than a day
   aborted;
7. verification proves, over versions and not only current objects, that nothing identifying is
   left for every purged month; the run fails loudly if anything is. Every step is recorded in
   the audit log once (by its event id), without identifiers.

Each step is idempotent, and the order (copy, destroy, delete, mark) means a crash anywhere and a
rerun end in the same state as one clean run; a purge begun and not recorded leaves a note of
what it found (`retention/attempts/`), so the rerun records what the first attempt destroyed.
A month or file whose store requests fail is reported (`FAILED <what>: <one line>`), the others
are still purged, and the run fails at the end.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import polars as pl
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pipeline.core import layout, staging
from pipeline.core.alerts import prune_delivery_markers, record_retention_success
from pipeline.core.errors import PipelineError, one_line
from pipeline.core.keys import LocalKeyring
from pipeline.core.layout import Month
from pipeline.core.policy import RetentionPolicy
from pipeline.core.store import ObjectStore, VersionInfo, read_parquet, store_errors
from pipeline.flows import holds
from pipeline.proof import audit
from pipeline.records.search import candidate_rows

if TYPE_CHECKING:
    from pipeline.core.resources import Resources

log = logging.getLogger("pipeline.flows.retention")
T = TypeVar("T")


class RetentionError(PipelineError):
    """Something identifying is left after a purge, or a purge could not proceed."""


@dataclass
class Inventory:
    """What the store and keyring hold, by month, year and file."""

    month_objects: dict[Month, list[str]] = field(default_factory=lambda: defaultdict(list))
    month_keys: set[Month] = field(default_factory=set)
    gold_years: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))
    files: list[dict[str, Any]] = field(default_factory=list)


def inventory(store: ObjectStore, keyring: LocalKeyring) -> Inventory:
    inv = Inventory()
    for prefix in (layout.MONTH_TIERS[t] for t in layout.IDENTIFYING_MONTH_TIERS):
        for obj in store.list(prefix):
            m = layout.month_of(obj.key)
            if m:
                inv.month_objects[m].append(obj.key)
    for obj in store.list(layout.GOLD):
        year = layout.gold_year_of(obj.key)
        if year is not None:
            inv.gold_years[year].append(obj.key)
    for name in keyring.data_key_names(layout.MONTH_KEY_PREFIX):
        m = layout.month_of_key_name(name)
        if m:
            inv.month_keys.add(m)
    inv.files = layout.sealed_files(store)
    return inv


@dataclass
class RetentionReport:
    """What a run purged (or would purge), per month, file, year and hold."""

    as_of: str
    dry_run: bool
    months: list[dict[str, Any]] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    gold_years: list[dict[str, Any]] = field(default_factory=list)
    holds: list[dict[str, Any]] = field(default_factory=list)
    left_locked: list[str] = field(default_factory=list)
    #: what interrupted runs had left and this run removed (partial objects, staging)
    swept: dict[str, int] = field(default_factory=dict)
    landing_versions_deleted: int = 0
    #: the sources' delivery markers older than any silence check looks back
    delivery_markers_deleted: int = 0
    uploads_aborted: int = 0
    requests_forgotten: list[str] = field(default_factory=list)
    verified: bool = False

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _statutory_holds(policy: RetentionPolicy, m: Month, as_of: dt.date) -> list[holds.Hold]:
    """Holds the policy's country overrides demand for a month being purged by default."""
    out = []
    for country, override in policy.overrides.items():
        until = policy.identifier_purge(m[0], m[1], country)
        if as_of < until:
            out.append(
                holds.Hold(
                    case=f"policy-{country}-{layout.month_name(m)}",
                    reason=override.reason,
                    placed_at=as_of.isoformat(),
                    placed_by="retention-policy",
                    countries=[country],
                    until=until.isoformat(),
                    statutory=True,
                )
            )
    return out


@dataclass(frozen=True)
class RetentionRequest:
    """Apply the retention policy as of a day (the DAG's logical date), or say what would go."""

    as_of: dt.date
    dry_run: bool = False


def run_retention(res: Resources, request: RetentionRequest) -> RetentionReport:
    """Apply the run's policy as of `request.as_of` (see the module docstring); raises
    RetentionError if verification finds anything identifying left."""
    store, bronze, keyring, policy = res.store, res.bronze, res.keyring, res.policy
    as_of, dry_run = request.as_of, request.dry_run
    signer = keyring.signing_key()
    report = RetentionReport(as_of.isoformat(), dry_run)
    if not dry_run:
        report.swept = _sweep(store, bronze)
    inv = inventory(store, keyring)
    all_holds = holds.list_holds(store)
    active = [h for h in all_holds if h.active(as_of)]

    open_attempts = layout.open_purge_attempts(store)
    resumed = {m for name in open_attempts if (m := layout.month_of_key_name(name)) is not None}
    known_months = set(inv.month_objects) | inv.month_keys | resumed
    due = sorted(m for m in known_months if policy.identifier_purge(*m) <= as_of)
    failures: list[str] = []

    def isolated(label: str, step: Callable[[], T]) -> T | None:
        """One month's or one file's failure is reported and the run goes on with the rest."""
        try:
            return step()
        except store_errors() as exc:
            failures.append(f"{label}: {one_line(exc)}")
            log.error("FAILED %s: %s", label, one_line(exc))
            return None

    for m in due:
        name = layout.month_name(m)
        statutory = _statutory_holds(policy, m, as_of)
        entry = isolated(
            f"month {name}",
            lambda m=m, statutory=statutory: _month_step(
                store, keyring, signer, policy, m, active + statutory, inv, dry_run, as_of
            ),
        )
        if entry is not None:
            report.months.append(entry)

    for body in inv.files:
        label = f"{body.get('file') or '?'} ({body['sha256'][:12]}…)"
        step = partial(_file_step, store, bronze, keyring, signer, policy, body, open_attempts)
        if (entry := isolated(label, lambda step=step: step(as_of, dry_run))) is not None:
            report.files.append(entry)
            report.left_locked += entry.get("left_locked", [])

    for year in sorted(inv.gold_years):
        if policy.record_delete(year) <= as_of:
            entry = _purge_gold_year(store, keyring, year, inv.gold_years[year], active, dry_run)
            report.gold_years.append(entry)
            if not dry_run:
                event = f"purge-gold-year:{year}"
                audit.append(
                    store, signer, "purge_gold_year", what=entry, why=policy.reason, event=event
                )

    for hold in all_holds:
        if hold.active(as_of):
            continue
        has_data = any(True for _ in store.list(layout.hold_data_prefix(hold.case, "records")))
        has_key = keyring.has_data_key(layout.hold_key_name(hold.case))
        if not (has_data or has_key or hold.remembers_anyone()):
            continue
        entry = {"case": hold.case, "released_at": hold.released_at, "until": hold.until}
        if not dry_run:
            deleted, left = holds.purge_hold(store, keyring, hold.case, as_of)
            entry |= {"objects_deleted": deleted}
            report.left_locked += left
            event = f"purge-hold:{hold.case}:{hold.placed_at}"
            why = "hold released or expired"
            audit.append(store, signer, "purge_hold", what=entry, why=why, event=event)
        report.holds.append(entry)

    report.requests_forgotten = _forget_answered_requests(res, as_of, dry_run)

    if not dry_run:
        report.landing_versions_deleted = (
            isolated(layout.LANDING, lambda: sweep_landing(store)) or 0
        )
        report.delivery_markers_deleted = (
            isolated(
                layout.DELIVERIES,
                lambda: prune_delivery_markers(store, policy.sources, dt.datetime.now(dt.UTC)),
            )
            or 0
        )
        day_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
        for target in {id(store): store, id(bronze): bronze}.values():
            aborted = isolated("multipart uploads", lambda t=target: t.abort_stale_uploads(day_ago))
            report.uploads_aborted += aborted or 0
        try:
            verify_purged(store, bronze, keyring, due, inv.files, as_of, policy)
        except RetentionError as exc:
            failures.append(str(exc))
        if failures:
            raise RetentionError("; ".join(failures))
        report.verified = True
        record_retention_success(store, as_of, dt.datetime.now(dt.UTC))
    return report


def _month_step(
    store: ObjectStore,
    keyring: LocalKeyring,
    signer: Ed25519PrivateKey,
    policy: RetentionPolicy,
    m: Month,
    active: list[holds.Hold],
    inv: Inventory,
    dry_run: bool,
    as_of: dt.date,
) -> dict[str, Any]:
    """Purge one month and record it once (a resumed purge finishes and records it)."""
    entry = _purge_month(
        store, keyring, m, policy.identifier_purge(*m), active, inv, dry_run, as_of
    )
    if not dry_run:
        event = f"purge-month:{layout.month_name(m)}"
        audit.append(store, signer, "purge_month", what=entry, why=policy.reason, event=event)
        _end_attempt(store, layout.month_key_name(m))
    return entry


def _locked_now(target: ObjectStore, key: str) -> bool:
    """Whether Object Lock still forbids deleting the object (the store's clock decides)."""
    until = target.lock_until(key)
    return until is not None and until > dt.datetime.now(dt.UTC)


def _file_step(
    store: ObjectStore,
    bronze: ObjectStore,
    keyring: LocalKeyring,
    signer: Ed25519PrivateKey,
    policy: RetentionPolicy,
    body: dict[str, Any],
    open_attempts: set[str],
    as_of: dt.date,
    dry_run: bool,
) -> dict[str, Any] | None:
    """Destroy a due file's key and delete its originals; None when there is nothing to do.

    An original still under Object Lock is reported once (`locked until <date>`) by the run that
    destroys the file's key; later runs stay silent until the lock ends, and the first run after
    it deletes the object and records that."""
    entry = _file_due(body, as_of, policy)
    if entry is None:
        return None
    remaining = [k for k in entry["deleted"] if _holder(k, store, bronze).exists(k)]
    file_key = layout.file_key_name(body["sha256"])
    has_key = keyring.has_data_key(file_key)
    purged_before = not has_key and file_key not in open_attempts
    if purged_before and all(_locked_now(_holder(k, store, bronze), k) for k in remaining):
        return None  # nothing left, or only what a lock still holds (reported when it began)
    entry["deleted"] = remaining
    entry["key_destroyed"] = has_key
    if dry_run:
        return entry
    attempt = _begin_attempt(store, file_key, has_key)
    entry["left_locked"] = _purge_file(store, bronze, keyring, body)
    entry["key_destroyed"] = attempt["key_present"] and not keyring.has_data_key(file_key)
    entry |= {"resumed": True} if attempt["resumed"] else {}
    kind = "purge-file-after-lock" if purged_before else "purge-file"
    event = f"{kind}:{body['sha256']}"
    audit.append(store, signer, "purge_file", what=entry, why=policy.reason, event=event)
    _end_attempt(store, file_key)
    return entry


def _begin_attempt(store: ObjectStore, name: str, key_present: bool) -> dict[str, Any]:
    """What the first attempt at a purge found (whether the key existed), kept until the purge
    is recorded, so a resumed run says what the earlier attempt destroyed."""
    marker = layout.purge_attempt_key(name)
    mine = uuid.uuid4().hex
    store.put_new(marker, json.dumps({"key_present": key_present, "attempt": mine}).encode())
    state: dict[str, Any] = json.loads(store.get_bytes(marker))
    return state | {"resumed": state.get("attempt") != mine}


def _end_attempt(store: ObjectStore, name: str) -> None:
    store.purge(layout.purge_attempt_key(name))


def _purge_month(
    store: ObjectStore,
    keyring: LocalKeyring,
    m: Month,
    purge_date: dt.date,
    active: list[holds.Hold],
    inv: Inventory,
    dry_run: bool,
    as_of: dt.date,
) -> dict[str, Any]:
    name = layout.month_name(m)
    objects = sorted(inv.month_objects.get(m, []))
    silver = [k for k in objects if k.startswith(layout.SILVER)]
    vault_keys = [k for k in objects if k.startswith(layout.VAULT)]
    entry: dict[str, Any] = {
        "month": name,
        "identifier_purge_date": purge_date.isoformat(),
        "silver_objects": len(silver),
        "vault_objects": len(vault_keys),
        "held": {},
    }
    has_key = keyring.has_data_key(layout.month_key_name(m))
    if dry_run:
        for hold in active:
            entry["held"][hold.case] = sum(
                len(_held_candidates(store, k, hold).filter(hold.matches())) for k in silver
            )
        return entry
    attempt = _begin_attempt(store, layout.month_key_name(m), has_key)
    # 1. copy held records out, while the month key can still open the vault
    for hold in active:  # copied by an earlier attempt: say how many
        marker = layout.hold_copied_marker(hold.case, name)
        if store.exists(marker):
            entry["held"][hold.case] = json.loads(store.get_bytes(marker))["records"]
    if has_key:
        month_key = keyring.data_key(layout.month_key_name(m), create=False)
        vault = pl.concat([read_parquet(store, k) for k in vault_keys]) if vault_keys else None
        for hold in active:
            marker = layout.hold_copied_marker(hold.case, name)
            if store.exists(marker):
                continue
            if hold.statutory and holds.load(store, hold.case) is None:
                holds.save(store, hold)
            copied = sum(
                holds.copy_into_hold(
                    store, keyring, hold, k, _held_candidates(store, k, hold), vault, month_key
                )
                for k in silver
            )
            store.put_bytes(marker, json.dumps({"month": name, "records": copied}).encode())
            entry["held"][hold.case] = copied
    # 2. crypto-shred, 3. delete, 4. mark
    key_name = layout.month_key_name(m)
    keyring.destroy_data_key(key_name)
    entry["key_destroyed"] = attempt["key_present"] and not keyring.has_data_key(key_name)
    entry |= {"resumed": True} if attempt["resumed"] else {}
    for key in objects:
        store.purge(key)
    store.put_bytes(
        layout.purge_marker(m),
        json.dumps({"month": name, "purged_as_of": as_of.isoformat()}).encode(),
    )
    log.info("purged identifiers of %s: %d objects, key destroyed", name, len(objects))
    return entry


def _held_candidates(store: ObjectStore, silver_key: str, hold: holds.Hold) -> pl.DataFrame:
    """A silver part's rows a hold may cover: where it names tokens, only the row groups the
    part's token index names for them (the person search's reading)."""
    if hold.tokens:
        return candidate_rows(store, silver_key, hold.tokens)
    return read_parquet(store, silver_key)


def _file_due(
    body: dict[str, Any], as_of: dt.date, policy: RetentionPolicy
) -> dict[str, Any] | None:
    """A file whose original may go: the EARLIEST month in it is past its identifier purge
    date (the original holds that month's identifiers; later months keep their records and
    proofs in the tiers).

    A file whose months are unknown (unreadable, failed, interrupted) follows its arrival month.
    """
    months = body.get("months") or []
    arrived = body.get("arrived_at") or body["as_of"]
    dates = [policy.identifier_purge(int(m[:4]), int(m[5:7])) for m in months] or [
        policy.identifier_purge(int(arrived[:4]), int(arrived[5:7]))
    ]
    if min(dates) > as_of:
        return None
    sha = body["sha256"]
    return {
        "sha256": sha,
        "file": body.get("file"),
        "months": months,
        "deleted": [k for k in body.get("outputs", []) if layout.is_file_output(k)],
    }


def _holder(key: str, store: ObjectStore, bronze: ObjectStore) -> ObjectStore:
    """The store an output key lives in: bronze objects may be in a bucket of their own."""
    return bronze if layout.is_bronze(key) else store


def _purge_file(
    store: ObjectStore, bronze: ObjectStore, keyring: LocalKeyring, body: dict[str, Any]
) -> list[str]:
    left: list[str] = []
    keyring.destroy_data_key(layout.file_key_name(body["sha256"]))
    for key in body.get("outputs", []):
        if layout.is_file_output(key):
            left += _holder(key, store, bronze).purge(key)
    return left


def _purge_gold_year(
    store: ObjectStore,
    keyring: LocalKeyring,
    year: int,
    keys: list[str],
    active: list[holds.Hold],
    dry_run: bool,
) -> dict[str, Any]:
    entry: dict[str, Any] = {"year": year, "gold_objects": len(keys), "held": {}}
    if dry_run:
        return entry
    for hold in active:
        marker = layout.hold_copied_marker(hold.case, f"gold-{year:04d}")
        if store.exists(marker) or hold.tokens:
            continue  # gold holds no tokens: an identifier hold cannot match it
        copied = sum(
            holds.copy_into_hold(store, keyring, hold, k, read_parquet(store, k), None, None)
            for k in keys
        )
        store.put_bytes(marker, json.dumps({"year": year, "records": copied}).encode())
        entry["held"][hold.case] = copied
    # The record-ID index of the year's months goes with the records it indexes.
    index = [
        o.key for o in store.list(layout.RECORD_IDS) if layout.record_id_index_year(o.key) == year
    ]
    for key in keys + index:
        store.purge(key)
    entry["index_objects"] = len(index)
    return entry


def _sweep(store: ObjectStore, bronze: ObjectStore) -> dict[str, int]:
    """Partial objects and staging that killed runs left: they can hold identifiers that no
    listing shows, so they go before anything is verified."""
    objects = store.sweep_temporary() + (bronze.sweep_temporary() if bronze is not store else 0)
    return {"temporary_objects": objects, "staging": staging.sweep()}


def _leftovers(store: ObjectStore, bronze: ObjectStore, files: list[dict[str, Any]]) -> list[str]:
    """Anything a purge cannot see by listing: partial objects, staging of dead runs, and
    bronze originals that no sealed file accounts for."""
    problems = [f"temporary object left: {k}" for k in store.stale_temporary()]
    if bronze is not store:
        problems += [f"temporary object left in bronze: {k}" for k in bronze.stale_temporary()]
    problems += [f"staging left by a dead run: {p}" for p in staging.leftovers()]
    known = {k for body in files for k in body.get("outputs", []) if layout.is_bronze(k)}
    problems += [
        f"bronze object of no sealed file: {o.key}"
        for o in bronze.list(layout.BRONZE)
        if o.key not in known
    ]
    return problems


def _stale(v: VersionInfo) -> bool:
    """A version no reader sees: overwritten, or hidden behind a delete marker."""
    return not v.latest or v.delete_marker


def sweep_landing(store: ObjectStore) -> int:
    """Delete earlier versions and delete markers in landing/: originals a plain delete (or an
    overwrite) left behind on a versioned bucket, every number in them in clear."""
    stale = [v for v in store.versions(layout.LANDING) if _stale(v)]
    for v in stale:
        store.delete_version(v.key, v.version)
    if stale:
        log.warning("deleted %d earlier versions of landing files", len(stale))
    return len(stale)


def _left(target: ObjectStore, key: str) -> bool:
    """Whether any version of the object is left (current or not)."""
    return any(v.key == key for v in target.versions(key))


def verify_purged(
    store: ObjectStore,
    bronze: ObjectStore,
    keyring: LocalKeyring,
    months: list[Month],
    files: list[dict[str, Any]],
    as_of: dt.date,
    policy: RetentionPolicy,
) -> None:
    """Prove nothing identifying is left for the purged months and files, nor anywhere a listing
    does not show; RetentionError names what is."""
    problems = _leftovers(store, bronze, files)
    for m in months:
        name = layout.month_name(m)
        for prefix in (layout.month_prefix(t, m) for t in layout.IDENTIFYING_MONTH_TIERS):
            if any(True for _ in store.versions(prefix)):
                problems.append(f"{name}: objects or versions left under {prefix}")
        if keyring.has_data_key(layout.month_key_name(m)):
            problems.append(f"{name}: the month's data key still exists")
        if not store.exists(layout.purge_marker(m)):
            problems.append(f"{name}: no purge marker")
    for body in files:
        if _file_due(body, as_of, policy) is None:
            continue
        if keyring.has_data_key(layout.file_key_name(body["sha256"])):
            problems.append(f"file {body['sha256'][:12]}…: its data key still exists")
        for key in body.get("outputs", []):
            target = _holder(key, store, bronze)
            # A version Object Lock still holds is reported by the purge, not a failure here.
            if layout.is_file_output(key) and _left(target, key) and not _locked_now(target, key):
                problems.append(f"file {body['sha256'][:12]}…: {key} still exists")
    if any(_stale(v) for v in store.versions(layout.LANDING)):
        problems.append(f"{layout.LANDING}: earlier versions of ingested originals are kept")
    for hold in holds.list_holds(store):
        if not hold.active(as_of) and hold.remembers_anyone():
            problems.append(f"hold {hold.case}: ended, and its record still names its tokens")
    if problems:
        raise RetentionError("identifying data left after purge: " + "; ".join(problems))


#: Days an answered subject request keeps the person's identifiers (to re-run or correct the
#: answer); after them retention shreds the request's key and deletes its record and packages.
REQUEST_IDENTIFIER_DAYS = 30


def _forget_answered_requests(res: Resources, as_of: dt.date, dry_run: bool) -> list[str]:
    """Cases whose answered request no longer needs the person's identifiers: the encrypted
    request and any undelivered package deleted (every version), the request's key destroyed.
    The status, response and audit entries stay: they never held an identifier."""
    store, keyring = res.store, res.keyring
    forgotten = []
    for obj in store.list(layout.REQUESTS):
        if not layout.is_request_status(obj.key):
            continue
        status = json.loads(store.get_bytes(obj.key))
        answered = status.get("answered_at")
        if status.get("state") != "answered" or not answered or status.get("forgotten_at"):
            continue
        if dt.date.fromisoformat(answered[:10]) + dt.timedelta(REQUEST_IDENTIFIER_DAYS) > as_of:
            continue
        case = status["case"]
        forgotten.append(case)
        if dry_run:
            continue
        keyring.destroy_data_key(layout.request_key_name(case))
        for held in list(store.list(layout.request_prefix(case))):
            if layout.holds_request_identifiers(held.key):
                store.purge(held.key)
        status["forgotten_at"] = as_of.isoformat()
        store.put_bytes(obj.key, json.dumps(status, indent=1).encode())
        audit.append(
            store,
            keyring.signing_key(),
            "subject_request_forgotten",
            what={"case": case, "answered_at": answered},
            why=f"identifiers of an answered request kept {REQUEST_IDENTIFIER_DAYS} days",
            event=f"subject-request-forgotten:{case}",
        )
    return forgotten

"""Retention: identifiers gone at 12 months, gold gone at 10 years, legal holds honoured.

One run, for a date `as_of` (the DAG's logical date, so reruns and backfills agree):

1. holds: records covered by an active hold (and, per the policy's country overrides, a
   statutory hold) are copied into the hold's own store before anything is destroyed;
2. each month whose identifier purge date has come: the month's data key is destroyed
   (crypto-shred), then its silver and vault partitions are deleted (every version), then a
   `retention/purged/<YYYY-MM>.json` marker is written, which also stops a late or replayed
   ingest from re-creating identifiers for the month;
3. each sealed file (whatever its state) whose earliest month is purged: its file key is
   destroyed and its bronze original and quarantined raw rows deleted (an object still under Object Lock is reported, never forced);
4. each year whose 10 years have passed: its gold partitions are deleted;
5. released or expired holds are purged;
6. verification proves that nothing identifying is left for every purged month; the run fails
   loudly if anything is. Every step is recorded in the audit log, without identifiers.

Each step is idempotent, and the order (copy, destroy, delete, mark) means a crash anywhere and a
rerun end in the same state as one clean run.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from pipeline import audit, holds
from pipeline.alerts import record_retention_success
from pipeline.bronze import bronze_key
from pipeline.dates import identifier_purge_date
from pipeline.keys import LocalKeyring
from pipeline.policy import RetentionPolicy
from pipeline.store import ObjectStore

log = logging.getLogger("pipeline.retention")
PURGED = "retention/purged/"
PART = re.compile(r"year=(\d{4})/month=(\d{2})/")
GOLD_PART = re.compile(r"^gold/cdr/year=(\d{4})/")

Month = tuple[int, int]


class RetentionError(Exception):
    """Something identifying is left after a purge, or a purge could not proceed."""


def month_name(m: Month) -> str:
    return f"{m[0]:04d}-{m[1]:02d}"


def month_key_name(m: Month) -> str:
    return f"month-{month_name(m)}"


def purged_months(store: ObjectStore) -> set[str]:
    """Months whose identifiers were purged ("YYYY-MM"): ingest sends their records to gold only."""
    return {
        o.key[len(PURGED) : -len(".json")] for o in store.list(PURGED) if o.key.endswith(".json")
    }


@dataclass
class Inventory:
    """What the store and keyring hold, by month, year and file."""

    month_objects: dict[Month, list[str]] = field(default_factory=lambda: defaultdict(list))
    month_keys: set[Month] = field(default_factory=set)
    gold_years: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))
    files: list[dict[str, Any]] = field(default_factory=list)


def inventory(store: ObjectStore, keyring: LocalKeyring) -> Inventory:
    inv = Inventory()
    for prefix in ("silver/cdr/", "vault/"):
        for obj in store.list(prefix):
            m = PART.search(obj.key)
            if m:
                inv.month_objects[(int(m.group(1)), int(m.group(2)))].append(obj.key)
    for obj in store.list("gold/cdr/"):
        g = GOLD_PART.match(obj.key)
        if g:
            inv.gold_years[int(g.group(1))].append(obj.key)
    for name in keyring.data_key_names("month-"):
        y, m = name[len("month-") :].split("-")
        inv.month_keys.add((int(y), int(m)))
    inv.files = sealed_files(store)
    return inv


def sealed_files(store: ObjectStore) -> list[dict[str, Any]]:
    """Every sealed file's parse entry body; a file sealed but never parsed (an interrupted
    ingest) appears with status `sealed` and its bronze original, so it too is purged on time."""
    parsed, seals = {}, {}
    for obj in store.list("seals/"):
        name = obj.key[len("seals/") :]
        if name.endswith(".parse.json"):
            parsed[name[: -len(".parse.json")]] = obj.key
        elif name.endswith(".seal.json"):
            seals[name[: -len(".seal.json")]] = obj.key
    files = [json.loads(store.get_bytes(key))["body"] for key in parsed.values()]
    for sha in sorted(set(seals) - set(parsed)):
        seal = json.loads(store.get_bytes(seals[sha]))["body"]
        files.append(
            {
                "sha256": sha,
                "status": "sealed",
                "file": seal.get("file"),
                "source": seal.get("source"),
                "arrived_at": seal.get("arrived_at"),
                "months": [],
                "outputs": [bronze_key(seal.get("source", "unknown"), sha)],
            }
        )
    return files


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
    verified: bool = False

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _read_parquet(store: ObjectStore, key: str) -> pl.DataFrame:
    frame = pl.from_arrow(pq.read_table(io.BytesIO(store.get_bytes(key))))
    assert isinstance(frame, pl.DataFrame)
    return frame


def _statutory_holds(policy: RetentionPolicy, m: Month, as_of: dt.date) -> list[holds.Hold]:
    """Holds the policy's country overrides demand for a month being purged by default."""
    out = []
    for country, override in policy.overrides.items():
        until = policy.identifier_purge(m[0], m[1], country)
        if as_of < until:
            out.append(
                holds.Hold(
                    case=f"policy-{country}-{month_name(m)}",
                    reason=override.reason,
                    placed_at=as_of.isoformat(),
                    placed_by="retention-policy",
                    countries=[country],
                    until=until.isoformat(),
                    statutory=True,
                )
            )
    return out


def run_retention(
    store: ObjectStore,
    bronze: ObjectStore,
    keyring: LocalKeyring,
    policy: RetentionPolicy,
    as_of: dt.date,
    dry_run: bool = False,
) -> RetentionReport:
    """Apply the policy as of `as_of` (see the module docstring); raises if verification fails."""
    signer = keyring.signing_key()
    inv = inventory(store, keyring)
    report = RetentionReport(as_of.isoformat(), dry_run)
    all_holds = holds.list_holds(store)
    active = [h for h in all_holds if h.active(as_of)]

    known_months = set(inv.month_objects) | inv.month_keys
    due = sorted(m for m in known_months if policy.identifier_purge(*m) <= as_of)
    for m in due:
        statutory = _statutory_holds(policy, m, as_of)
        entry = _purge_month(store, keyring, m, active + statutory, inv, dry_run, as_of)
        report.months.append(entry)
        if not dry_run:
            audit.append(store, signer, "purge_month", what=entry, why=policy.reason)

    for body in inv.files:
        entry = _file_due(body, as_of, policy)
        if entry is None:
            continue
        # What is still there: a file purged on an earlier run is neither reported nor audited.
        entry["deleted"] = [k for k in entry["deleted"] if _holder(k, store, bronze).exists(k)]
        entry["key_destroyed"] = keyring.has_data_key(f"file-{body['sha256']}")
        if not entry["deleted"] and not entry["key_destroyed"]:
            continue
        if not dry_run:
            entry["left_locked"] = _purge_file(store, bronze, keyring, body)
            report.left_locked += entry["left_locked"]
            audit.append(store, signer, "purge_file", what=entry, why=policy.reason)
        report.files.append(entry)

    for year in sorted(inv.gold_years):
        if policy.record_delete(year) <= as_of:
            entry = _purge_gold_year(store, keyring, year, inv.gold_years[year], active, dry_run)
            report.gold_years.append(entry)
            if not dry_run:
                audit.append(store, signer, "purge_gold_year", what=entry, why=policy.reason)

    for hold in all_holds:
        if hold.active(as_of):
            continue
        has_data = any(True for _ in store.list(f"{holds.PREFIX}{hold.case}/records/"))
        if not has_data and not keyring.has_data_key(holds.key_name(hold.case)):
            continue
        entry = {"case": hold.case, "released_at": hold.released_at, "until": hold.until}
        if not dry_run:
            deleted, left = holds.purge_hold(store, keyring, hold.case)
            entry |= {"objects_deleted": deleted}
            report.left_locked += left
            audit.append(store, signer, "purge_hold", what=entry, why="hold released or expired")
        report.holds.append(entry)

    if not dry_run:
        verify_purged(store, bronze, keyring, due, inv.files, as_of, policy)
        report.verified = True
        record_retention_success(store, as_of, dt.datetime.now(dt.UTC))
    return report


def _purge_month(
    store: ObjectStore,
    keyring: LocalKeyring,
    m: Month,
    active: list[holds.Hold],
    inv: Inventory,
    dry_run: bool,
    as_of: dt.date,
) -> dict[str, Any]:
    name = month_name(m)
    objects = sorted(inv.month_objects.get(m, []))
    silver = [k for k in objects if k.startswith("silver/")]
    vault_keys = [k for k in objects if k.startswith("vault/")]
    entry: dict[str, Any] = {
        "month": name,
        "identifier_purge_date": identifier_purge_date(*m).isoformat(),
        "silver_objects": len(silver),
        "vault_objects": len(vault_keys),
        "held": {},
    }
    has_key = keyring.has_data_key(month_key_name(m))
    if dry_run:
        for hold in active:
            entry["held"][hold.case] = sum(
                len(_read_parquet(store, k).filter(hold.matches())) for k in silver
            )
        return entry
    # 1. copy held records out, while the month key can still open the vault
    if has_key:
        month_key = keyring.data_key(month_key_name(m), create=False)
        vault = pl.concat([_read_parquet(store, k) for k in vault_keys]) if vault_keys else None
        for hold in active:
            marker = f"{holds.PREFIX}{hold.case}/copied/{name}.json"
            if store.exists(marker):
                continue
            if hold.statutory and holds.load(store, hold.case) is None:
                holds.save(store, hold)
            copied = sum(
                holds.copy_into_hold(
                    store, keyring, hold, k, _read_parquet(store, k), vault, month_key
                )
                for k in silver
            )
            store.put_bytes(marker, json.dumps({"month": name, "records": copied}).encode())
            entry["held"][hold.case] = copied
    # 2. crypto-shred, 3. delete, 4. mark
    entry["key_destroyed"] = keyring.destroy_data_key(month_key_name(m))
    for key in objects:
        store.purge(key)
    store.put_bytes(
        f"{PURGED}{name}.json",
        json.dumps({"month": name, "purged_as_of": as_of.isoformat()}).encode(),
    )
    log.info("purged identifiers of %s: %d objects, key destroyed", name, len(objects))
    return entry


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
        "deleted": [k for k in body.get("outputs", []) if k.startswith(("bronze/", "quarantine/"))],
    }


def _holder(key: str, store: ObjectStore, bronze: ObjectStore) -> ObjectStore:
    """The store an output key lives in: bronze objects may be in a bucket of their own."""
    return bronze if key.startswith("bronze/") else store


def _purge_file(
    store: ObjectStore, bronze: ObjectStore, keyring: LocalKeyring, body: dict[str, Any]
) -> list[str]:
    left: list[str] = []
    keyring.destroy_data_key(f"file-{body['sha256']}")
    for key in body.get("outputs", []):
        if key.startswith(("bronze/", "quarantine/")):
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
        marker = f"{holds.PREFIX}{hold.case}/copied/gold-{year}.json"
        if store.exists(marker) or hold.tokens:
            continue  # gold holds no tokens: an identifier hold cannot match it
        copied = sum(
            holds.copy_into_hold(store, keyring, hold, k, _read_parquet(store, k), None, None)
            for k in keys
        )
        store.put_bytes(marker, json.dumps({"year": year, "records": copied}).encode())
        entry["held"][hold.case] = copied
    for key in keys:
        store.purge(key)
    return entry


def verify_purged(
    store: ObjectStore,
    bronze: ObjectStore,
    keyring: LocalKeyring,
    months: list[Month],
    files: list[dict[str, Any]],
    as_of: dt.date,
    policy: RetentionPolicy,
) -> None:
    """Prove nothing identifying is left for the purged months; RetentionError names what is."""
    problems = []
    for m in months:
        name = month_name(m)
        y, mo = m
        for prefix in (
            f"silver/cdr/year={y:04d}/month={mo:02d}/",
            f"vault/year={y:04d}/month={mo:02d}/",
        ):
            if any(True for _ in store.list(prefix)):
                problems.append(f"{name}: objects left under {prefix}")
        if keyring.has_data_key(month_key_name(m)):
            problems.append(f"{name}: the month's data key still exists")
        if not store.exists(f"{PURGED}{name}.json"):
            problems.append(f"{name}: no purge marker")
    for body in files:
        if _file_due(body, as_of, policy) is None:
            continue
        if keyring.has_data_key(f"file-{body['sha256']}"):
            problems.append(f"file {body['sha256'][:12]}…: its data key still exists")
        for key in body.get("outputs", []):
            target = _holder(key, store, bronze)
            if key.startswith(("bronze/", "quarantine/")) and target.exists(key):
                locked = target.lock_until(key)
                if locked is None or locked.date() <= as_of:
                    problems.append(f"file {body['sha256'][:12]}…: {key} still exists")
    if problems:
        raise RetentionError("identifying data left after purge: " + "; ".join(problems))

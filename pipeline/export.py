"""Law-enforcement export: the records of named end users over a period, as a verifiable package
encrypted for the requesting authority.

The request is checked whole first (`pipeline.export_request`); a refused request reads no data
and is written to the audit log. Then, month by month over the period:
- a live month: only that month's silver partitions are read, and of each row group first the
  token and time columns; full rows are read only where a requested token occurs (origin or
  destination). Both parties of a found record are re-identified through the month's vault;
- a month whose identifiers were purged: reported with its purge date and the number of gold
  records in the period that can no longer be attributed; copies kept under a legal hold are
  searched in the hold store.

The package (`exports/<case>/package-<time>.cdrx`) holds the records as CSV (`EXPORT_COLUMNS`)
and Parquet (every retained field, for the proofs), a manifest (request, query, counts per
month, purged periods, file digests, the sources' signed seal entries and each record's Merkle
path to its original seal, software version) and a detached Ed25519 signature over the manifest,
all encrypted for the authority's key (`pipeline.package`). Only the package is written, built in
memory: nothing identifying touches a disk unencrypted.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import json
import logging
import tarfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pipeline import __version__, audit, layout
from pipeline.commitments import gold_form, identity_commitment, inclusion_paths
from pipeline.crypto import decrypt_value
from pipeline.errors import PipelineError
from pipeline.export_request import ExportRequest, RequestError, validate
from pipeline.holds import list_holds, read_held_part
from pipeline.integrity import key_id, read_entry
from pipeline.keys import TOKEN_KEY_VERSION
from pipeline.normalise import PERSONAL_KINDS
from pipeline.package import encrypt_for, fingerprint, load_recipient_key
from pipeline.resources import Resources
from pipeline.schema import GOLD
from pipeline.store import ObjectStore
from pipeline.tokenise import token

log = logging.getLogger("pipeline.export")

FORMAT = "cdr-export/1"

#: The records' columns (CSV), after the EU retained-data categories: source, destination,
#: date/time/duration, type, and network/country of each party. ETSI TS 102 657 calls the
#: parties the originating and terminating party; `source_*` and `destination_*` are those.
EXPORT_COLUMNS: dict[str, str] = {
    "record_id": "the platform's record ID",
    "communication_type": "sms, mms, voice, email, whatsapp, viber, rcs, telegram, other",
    "direction": "outbound (from the platform's customer) or inbound",
    "start_time_utc": "date and time the communication started (UTC, ISO 8601)",
    "end_time_utc": "date and time it ended (UTC), where known",
    "duration_s": "duration in seconds (voice), where known",
    "source_identifier": "originating party: E.164 number, e-mail address, SIP user or sender",
    "source_kind": "msisdn, email, sip, alphanumeric (sender name) or shortcode",
    "source_country": "originating party's country (ISO 3166-1), from the number",
    "source_network": "originating party's network, where known",
    "destination_identifier": "terminating party, as for the source",
    "destination_kind": "as for the source",
    "destination_country": "terminating party's country (ISO 3166-1)",
    "destination_network": "terminating party's network, where known",
    "status": "delivery or call status",
    "route_id": "route the platform used",
    "customer_id": "the platform's business customer that sent or received it",
    "matched": "which party is a requested identifier: source, destination or both",
    "found_in": "silver (live records) or hold:<case> (kept under a legal hold)",
    "source_file": "file the record came from",
    "source_sha256": "SHA-256 of that file as sealed on arrival",
    "leaf_index": "the record's position in its file's sealed Merkle tree",
}
#: The normal-course changes between a record and its original (Pakistan's "original form").
NORMAL_COURSE = (
    "numbers normalised to E.164 and e-mail addresses to lower case; end users' identifiers "
    "tokenised in storage and re-identified for this package; identifiers deleted at the end of "
    "their retention. Every other field is as sealed, which the proofs show."
)
_SCAN = ["origin", "destination", "event_time", "channel"]


class ExportError(PipelineError, RuntimeError):
    """An export that cannot be completed truthfully (named, never with identifier values)."""


@dataclass
class ExportResult:
    case: str
    package: str
    package_sha256: str
    records: int
    months: dict[str, dict[str, Any]] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        """What the audit log and task output show: counts and the package, never records."""
        return asdict(self)


def months_between(start: dt.date, end: dt.date) -> Iterator[tuple[int, int]]:
    y, m = start.year, start.month
    while (y, m) <= (end.year, end.month):
        yield y, m
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)


def run_export(
    res: Resources, request: ExportRequest, now: dt.datetime | None = None
) -> ExportResult:
    """Check the request, search, build and store the package, and audit it."""
    now = now or dt.datetime.now(dt.UTC)
    signer = res.keyring.signing_key()
    try:
        identifiers = validate(request, now.date(), res.settings.default_region)
    except RequestError as exc:
        audit.append(
            res.store,
            signer,
            "export_refused",
            what={**request.public(), "problems": exc.problems},
            why="law-enforcement request refused before any data was read",
        )
        raise
    assert request.date_from and request.date_to
    key = res.keyring.token_key(TOKEN_KEY_VERSION)
    wanted = {token(kind, value, key, TOKEN_KEY_VERSION) for kind, value in identifiers}
    start = dt.datetime.combine(request.date_from, dt.time(), dt.UTC)
    end = dt.datetime.combine(request.date_to + dt.timedelta(days=1), dt.time(), dt.UTC)
    search = _Search(res, wanted, start, end, request.channels)
    frames, months = [], {}
    for y, m in months_between(request.date_from, request.date_to):
        found, months[f"{y:04d}-{m:02d}"] = search.month(y, m)
        if len(found):
            frames.append(found)
    records = _records(frames, wanted)
    checked = _check_identities(res, records)
    manifest = _manifest(res, request, identifiers, records, months, checked, start, end, now)
    blob = _package(res, request, records, manifest)
    stamp = now.strftime("%Y%m%dT%H%M%S%fZ")
    target = layout.export_key(request.case, stamp)
    digest = hashlib.sha256(blob).hexdigest()
    if not res.store.put_new(target, blob):
        raise ExportError(f"{target} exists already: not overwritten")
    recipient = fingerprint(load_recipient_key(request.recipient_key))
    info = {
        "case": request.case,
        "created_at": now.isoformat(),
        "package": target,
        "package_sha256": digest,
        "size": len(blob),
        "recipient_key": recipient,
        "records": len(records),
        "format": FORMAT,
    }
    res.store.put_new(f"{target}.json", json.dumps(info, indent=1).encode())
    result = ExportResult(request.case, target, digest, len(records), months)
    audit.append(
        res.store,
        signer,
        "export",
        what={**request.public(), **result.public(), "recipient_key": recipient},
        why=f"law-enforcement disclosure under {request.legal_basis}",
    )
    log.info("export %s: %d records in %s", request.case, len(records), target)
    return result


class _Search:
    """Finds a period's records of the wanted tokens, month by month."""

    def __init__(
        self,
        res: Resources,
        wanted: set[str],
        start: dt.datetime,
        end: dt.datetime,
        channels: list[str],
    ) -> None:
        self.res, self.store = res, res.store
        self.tokens = pa.array(sorted(wanted), pa.string())
        self.start, self.end, self.channels = start, end, channels

    def _in_period(self, frame: pl.DataFrame) -> pl.DataFrame:
        keep = (pl.col("event_time") >= self.start) & (pl.col("event_time") < self.end)
        if self.channels:
            keep &= pl.col("channel").is_in(self.channels)
        return frame.filter(keep)

    def month(self, y: int, m: int) -> tuple[pl.DataFrame, dict[str, Any]]:
        marker = layout.purge_marker((y, m))
        if not self.store.exists(marker):
            found = self._silver(y, m)
            found = self._reidentify(found, y, m)
            return found, {"identifiers": "live", "records": len(found)}
        purged_on = json.loads(self.store.get_bytes(marker))["purged_as_of"]
        held = self._holds(y, m)
        return held, {
            "identifiers": "purged",
            "purged_on": purged_on,
            "note": f"identifiers purged on {purged_on} under the 12-month rule",
            "records": len(held),
            "unattributable_gold_records": self._gold_count(y, m),
        }

    def _silver(self, y: int, m: int) -> pl.DataFrame:
        """Matching rows of the month's silver parts, reading full rows only where needed."""
        frames = []
        for obj in self.store.list(layout.month_prefix("silver", (y, m))):
            with self.store.open_seekable(obj.key) as src:
                part = pq.ParquetFile(src)
                for group in range(part.num_row_groups):
                    probe = part.read_row_group(group, columns=_SCAN)
                    mask = self._mask(probe)
                    if not pc.any(mask).as_py():
                        continue
                    rows = part.read_row_group(group).filter(mask)
                    frame = pl.from_arrow(rows)
                    assert isinstance(frame, pl.DataFrame)
                    frames.append(frame.with_columns(pl.lit("silver").alias("found_in")))
        return pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame()

    def _mask(self, table: pa.Table) -> pa.ChunkedArray:
        hit = pc.or_(
            pc.is_in(table["origin"], value_set=self.tokens),
            pc.is_in(table["destination"], value_set=self.tokens),
        )
        start = pa.scalar(self.start, pa.timestamp("us", "UTC"))
        end = pa.scalar(self.end, pa.timestamp("us", "UTC"))
        when = pc.and_(
            pc.greater_equal(table["event_time"], start), pc.less(table["event_time"], end)
        )
        mask = pc.and_(hit, when)
        if self.channels:
            mask = pc.and_(mask, pc.is_in(table["channel"], value_set=pa.array(self.channels)))
        return pc.fill_null(mask, False)

    def _reidentify(self, found: pl.DataFrame, y: int, m: int) -> pl.DataFrame:
        """Both parties' identifiers from the month's vault, for the found records only."""
        if not len(found):
            return found
        needed = pl.concat([found.get_column("origin"), found.get_column("destination")])
        needed = needed.drop_nulls().unique()
        name = layout.month_key_name((y, m))
        if not self.res.keyring.has_data_key(name):
            raise ExportError(f"{y:04d}-{m:02d}: the month's key is gone but no purge is recorded")
        gcm = AESGCM(self.res.keyring.data_key(name, create=False))
        clear: dict[str, str] = {}
        for obj in self.store.list(layout.month_prefix("vault", (y, m))):
            with self.store.open_seekable(obj.key) as src:
                entries = pl.from_arrow(
                    pq.read_table(src, filters=pc.field("token").isin(needed.to_arrow()))
                )
            assert isinstance(entries, pl.DataFrame)
            for tok, blob in entries.select("token", "identifier_encrypted").iter_rows():
                clear.setdefault(tok, decrypt_value(gcm, blob, tok.encode()).decode())
        return _with_identifiers(found, clear)

    def _holds(self, y: int, m: int) -> pl.DataFrame:
        """Matching records kept under legal holds for a purged month, re-identified."""
        frames = []
        silver = layout.month_prefix("silver", (y, m))
        for hold in list_holds(self.store):
            for obj in self.store.list(layout.hold_copies_of(hold.case, "records", silver)):
                rows = read_held_part(self.store, self.res.keyring, hold.case, obj.key)
                rows = self._in_period(rows).filter(
                    pl.col("origin").is_in(self.tokens.to_pylist())
                    | pl.col("destination").is_in(self.tokens.to_pylist())
                )
                if not len(rows):
                    continue
                vault_key = layout.hold_vault_copy(obj.key)
                clear: dict[str, str] = {}
                if self.store.exists(vault_key):
                    vault = read_held_part(self.store, self.res.keyring, hold.case, vault_key)
                    clear = dict(vault.select("token", "identifier").iter_rows())
                rows = rows.with_columns(pl.lit(f"hold:{hold.case}").alias("found_in"))
                frames.append(_with_identifiers(rows, clear))
        if not frames:
            return pl.DataFrame()
        # Two holds may keep the same record: once is enough.
        return pl.concat(frames, how="vertical_relaxed").unique(
            ["source_sha256", "leaf_index"], keep="first", maintain_order=True
        )

    def _gold_count(self, y: int, m: int) -> int:
        """Gold records of the month in the period: kept, but no longer attributable."""
        total = 0
        for obj in self.store.list(layout.month_prefix("gold", (y, m))):
            with self.store.open_seekable(obj.key) as src:
                table = pq.read_table(src, columns=["event_time", "channel"])
            frame = pl.from_arrow(table)
            assert isinstance(frame, pl.DataFrame)
            total += len(self._in_period(frame))
        return total


def _with_identifiers(rows: pl.DataFrame, clear: dict[str, str]) -> pl.DataFrame:
    """Add each party's identifier: re-identified for end users, the sender as written else."""
    lookup = pl.DataFrame(
        {"token": list(clear), "identifier": list(clear.values())},
        schema={"token": pl.String, "identifier": pl.String},
    )
    for side in ("origin", "destination"):
        personal = pl.col(f"{side}_kind").is_in(PERSONAL_KINDS)
        rows = rows.join(
            lookup.rename({"identifier": f"{side}_identifier"}),
            left_on=side,
            right_on="token",
            how="left",
            maintain_order="left",
        ).with_columns(
            pl.when(personal)
            .then(pl.col(f"{side}_identifier"))
            .otherwise(pl.col(side))
            .alias(f"{side}_identifier")
        )
    missing = rows.filter(
        (pl.col("origin_kind").is_in(PERSONAL_KINDS) & pl.col("origin_identifier").is_null())
        | (
            pl.col("destination_kind").is_in(PERSONAL_KINDS)
            & pl.col("destination_identifier").is_null()
        )
    )
    if len(missing):
        raise ExportError(
            f"record {missing.get_column('record_id')[0]}: a party's vault entry is missing"
        )
    return rows


def _records(frames: list[pl.DataFrame], wanted: set[str]) -> pl.DataFrame:
    """Found rows in one frame: retained fields as committed, identifiers, what matched."""
    columns = [*GOLD, "origin_identifier", "destination_identifier", "found_in"]
    schema = {**GOLD, "origin_identifier": pl.String, "destination_identifier": pl.String}
    if not frames:
        return pl.DataFrame(schema={**schema, "found_in": pl.String, "matched": pl.String})
    rows = pl.concat([f.select(columns) for f in frames], how="vertical_relaxed")
    o, d = pl.col("origin").is_in(list(wanted)), pl.col("destination").is_in(list(wanted))
    rows = rows.with_columns(
        pl.when(o & d)
        .then(pl.lit("both"))
        .when(o)
        .then(pl.lit("source"))
        .otherwise(pl.lit("destination"))
        .alias("matched")
    )
    return gold_form(rows).sort("event_time", "record_id")


def _check_identities(res: Resources, records: pl.DataFrame) -> dict[str, int]:
    """Recompute each record's identity commitment from its re-identified parties, under its
    file's key while that key exists: the identifiers are the ones sealed with the record."""
    checked = unchecked = 0
    for (sha,), rows in records.group_by("source_sha256"):
        name = layout.file_key_name(sha)
        if not res.keyring.has_data_key(name):
            unchecked += len(rows)
            continue
        file_key = res.keyring.data_key(name, create=False)
        sides = [
            pl.when(pl.col(f"{s}_kind").is_in(PERSONAL_KINDS)).then(
                pl.col(f"{s}_kind") + pl.lit(":") + pl.col(f"{s}_identifier")
            )
            for s in ("origin", "destination")
        ]
        recomputed = identity_commitment(pl.col("leaf_index"), *sides, file_key)
        bad = rows.filter(recomputed != pl.col("identity_commitment"))
        if len(bad):
            raise ExportError(
                f"record {bad.get_column('record_id')[0]}: re-identified parties do not match "
                "the identity sealed with the record"
            )
        checked += len(rows)
    return {"checked": checked, "unchecked": unchecked}


def _proofs(
    store: ObjectStore, records: pl.DataFrame
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each record's path to its file's sealed Merkle root, and the files' signed entries."""
    proofs: list[dict[str, Any]] = []
    sources: dict[str, Any] = {}
    for (sha,), rows in records.group_by("source_sha256", maintain_order=True):
        seal, parse = (
            read_entry(store, layout.seal_key(sha)),
            read_entry(store, layout.parse_key(sha)),
        )
        if seal is None or parse is None:
            raise ExportError(f"file {sha[:12]}…: its seal entries are missing")
        sources[sha] = {"seal": seal, "parse": parse}
        sizes = parse["body"]["batch_leaves"]
        batch_roots = parse["body"]["batch_roots"]
        offsets = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
        wanted: dict[int, list[int]] = {}
        for index in rows.get_column("leaf_index").to_list():
            batch = max(b for b in range(len(sizes)) if offsets[b] <= index)
            wanted.setdefault(batch, []).append(index)
        file_paths = inclusion_paths(batch_roots, list(wanted))
        with store.open_seekable(layout.proof_key(sha)) as src:
            leaves_file = pq.ParquetFile(src)
            for batch, indices in sorted(wanted.items()):
                leaves = _leaves(leaves_file, offsets[batch], offsets[batch + 1])
                paths = inclusion_paths(leaves, [i - offsets[batch] for i in indices])
                for i in indices:
                    proofs.append(
                        {
                            "source_sha256": sha,
                            "leaf_index": i,
                            "batch": batch,
                            "batch_path": paths[i - offsets[batch]],
                            "file_path": file_paths[batch],
                        }
                    )
    return proofs, sources


def _leaves(leaves_file: pq.ParquetFile, lo: int, hi: int) -> list[str]:
    """Leaves [lo, hi) of a file's proofs object, reading only the row groups that hold them."""
    out: list[str] = []
    start = 0
    for group in range(leaves_file.num_row_groups):
        n = leaves_file.metadata.row_group(group).num_rows
        if start < hi and start + n > lo:
            column = leaves_file.read_row_group(group, columns=["leaf"]).column("leaf")
            values = column.slice(max(lo - start, 0), min(hi, start + n) - max(lo, start))
            out += [v.hex() for v in values.to_pylist()]
        start += n
    return out


def _manifest(
    res: Resources,
    request: ExportRequest,
    identifiers: list[tuple[str, str]],
    records: pl.DataFrame,
    months: dict[str, dict[str, Any]],
    identity: dict[str, int],
    start: dt.datetime,
    end: dt.datetime,
    now: dt.datetime,
) -> dict[str, Any]:
    proofs, sources = _proofs(res.store, records)
    return {
        "format": FORMAT,
        "created_at": now.isoformat(),
        "request": {
            **request.public(),
            "identifiers": [{"kind": k, "value": v} for k, v in identifiers],
        },
        "query": {
            "match": "a requested identifier is the source or the destination",
            "period_utc": [start.isoformat(), end.isoformat()],
            "end_exclusive": True,
            "channels": request.channels or "all",
            "token_key_version": TOKEN_KEY_VERSION,
            "months": list(months),
        },
        "counts": {"records": len(records), "by_month": months},
        "purged_periods": [
            {"month": name, **{k: v for k, v in info.items() if k != "identifiers"}}
            for name, info in months.items()
            if info["identifiers"] == "purged"
        ],
        "columns": EXPORT_COLUMNS,
        "normal_course_changes": NORMAL_COURSE,
        "identity_check": {
            **identity,
            "how": "each record's identity commitment recomputed from its re-identified "
            "parties under its file's key, by the operator before signing",
        },
        "seal_key_id": key_id(res.keyring.public_key()),
        "sources": sources,
        "proofs": proofs,
        "software": {"name": "cdr-pipeline", "version": __version__},
    }


def csv_frame(records: pl.DataFrame) -> pl.DataFrame:
    """The records in the documented column set (`EXPORT_COLUMNS`)."""
    iso = "%Y-%m-%dT%H:%M:%S%.6fZ"
    return records.select(
        "record_id",
        pl.col("channel").alias("communication_type"),
        "direction",
        pl.col("event_time").dt.strftime(iso).alias("start_time_utc"),
        pl.col("end_time").dt.strftime(iso).alias("end_time_utc"),
        "duration_s",
        pl.col("origin_identifier").alias("source_identifier"),
        pl.col("origin_kind").alias("source_kind"),
        pl.col("origin_country").alias("source_country"),
        pl.col("origin_network").alias("source_network"),
        "destination_identifier",
        "destination_kind",
        "destination_country",
        "destination_network",
        "status",
        "route_id",
        "customer_id",
        "matched",
        "found_in",
        "source_file",
        "source_sha256",
        "leaf_index",
    )


def _package(
    res: Resources, request: ExportRequest, records: pl.DataFrame, manifest: dict[str, Any]
) -> bytes:
    """The files, signed and encrypted for the recipient, built in memory."""
    csv = csv_frame(records).write_csv().encode()
    buf = io.BytesIO()
    records.write_parquet(buf)
    files = {"records.csv": csv, "records.parquet": buf.getvalue()}
    manifest["files"] = {
        name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        for name, data in files.items()
    }
    body = json.dumps(manifest, indent=1, sort_keys=True, default=str).encode()
    files["manifest.json"] = body
    files["manifest.json.sig"] = base64.b64encode(res.keyring.signing_key().sign(body)) + b"\n"
    tar = io.BytesIO()
    mtime = int(dt.datetime.fromisoformat(manifest["created_at"]).timestamp())
    with tarfile.open(fileobj=tar, mode="w") as archive:
        for name, data in files.items():
            entry = tarfile.TarInfo(name)
            entry.size, entry.mtime, entry.mode = len(data), mtime, 0o600
            archive.addfile(entry, io.BytesIO(data))
    return encrypt_for(load_recipient_key(request.recipient_key), tar.getvalue())

"""Legal holds: records kept past their purge date, in a store of their own, under a key of their own.

A hold names a case, a reason and what it covers: identifiers (by token: the hold file never
holds them in clear), a business customer, a period, or (statutory holds made from the retention
policy) end users' countries; criteria given together must all match. Before a month's
identifiers are purged, the records a hold covers are copied to `holds/<case>/` with their vault
entries, each file encrypted under the hold's own data key (`hold-<case>`), as the Korean addendum
asks of personal data kept by legal obligation. A released or expired hold is purged at the next
retention run: its objects deleted, its key destroyed, and its record (`holds/<case>/hold.json`)
rewritten without tokens: it keeps the case, reason, dates and how many identifiers it covered.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow.parquet as pq
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pipeline.core import layout
from pipeline.core.dates import parse_date
from pipeline.core.errors import USAGE, PipelineError
from pipeline.core.keys import LocalKeyring
from pipeline.core.layout import LayoutError
from pipeline.core.store import ObjectStore
from pipeline.proof.crypto import decrypt_stream, decrypt_value, encrypt_bytes
from pipeline.records.normalise import PERSONAL_KINDS

if TYPE_CHECKING:
    from pipeline.core.resources import Resources


class HoldError(PipelineError, ValueError):
    """A hold that cannot be placed or released as asked."""

    exit_status = USAGE


@dataclass
class Hold:
    case: str
    reason: str
    placed_at: str
    placed_by: str
    tokens: list[str] = field(default_factory=list)
    customer: str | None = None
    period_from: str | None = None  # inclusive, UTC date
    period_to: str | None = None  # inclusive, UTC date
    countries: list[str] = field(default_factory=list)
    until: str | None = None  # the hold ends at the start of this UTC date
    statutory: bool = False
    released_at: str | None = None
    released_by: str | None = None
    #: how many identifiers the hold covered, kept once its tokens are forgotten (`forget`)
    identifier_count: int | None = None
    #: when its copies were purged and its tokens forgotten
    purged_at: str | None = None

    def active(self, as_of: dt.date) -> bool:
        if self.released_at:
            return False
        return self.until is None or as_of < dt.date.fromisoformat(self.until)

    def matches(self) -> pl.Expr:
        """Rows of silver or gold the hold covers (all given criteria together)."""
        conds = []
        if self.tokens:
            conds.append(
                pl.col("origin").is_in(self.tokens) | pl.col("destination").is_in(self.tokens)
            )
        if self.customer:
            conds.append(pl.col("customer_id") == self.customer)
        if self.period_from:
            start = dt.datetime.fromisoformat(self.period_from).replace(tzinfo=dt.UTC)
            conds.append(pl.col("event_time") >= start)
        if self.period_to:
            end = dt.datetime.fromisoformat(self.period_to).replace(tzinfo=dt.UTC) + dt.timedelta(
                days=1
            )
            conds.append(pl.col("event_time") < end)
        if self.countries:
            personal_o = pl.col("origin_kind").is_in(PERSONAL_KINDS)
            personal_d = pl.col("destination_kind").is_in(PERSONAL_KINDS)
            conds.append(
                (personal_o & pl.col("origin_country").is_in(self.countries))
                | (personal_d & pl.col("destination_country").is_in(self.countries))
            )
        if not conds:
            raise HoldError(f"hold {self.case} covers nothing")
        expr = conds[0]
        for c in conds[1:]:
            expr = expr & c
        return expr.fill_null(False)

    def identifiers(self) -> int:
        """How many identifiers the hold covers (or covered, once forgotten)."""
        return len(self.tokens) if self.identifier_count is None else self.identifier_count

    def public(self) -> dict[str, Any]:
        """What may be shown in logs, XCom and the audit log: counts of tokens, never the
        tokens, and whether a customer is named, never its id."""
        out = asdict(self)
        out["tokens"] = self.identifiers()
        out["customer"] = self.customer is not None
        return out

    def remembers_anyone(self) -> bool:
        """Whether the record still holds a token (a hold not yet forgotten)."""
        return bool(self.tokens)


def save(store: ObjectStore, hold: Hold) -> None:
    store.put_bytes(layout.hold_record_key(hold.case), json.dumps(asdict(hold), indent=1).encode())


def load(store: ObjectStore, case: str) -> Hold | None:
    key = layout.hold_record_key(case)
    if not store.exists(key):
        return None
    return Hold(**json.loads(store.get_bytes(key)))


def list_holds(store: ObjectStore) -> list[Hold]:
    out = []
    for obj in store.list(layout.HOLDS):
        if layout.is_hold_record(obj.key):
            out.append(Hold(**json.loads(store.get_bytes(obj.key))))
    return sorted(out, key=lambda h: h.case)


def check(hold: Hold) -> None:
    """Refuse a hold that cannot be placed (bad case, no reason, covering nothing, a reversed
    period), before anything is written: when it is placed, or recorded for approval."""
    try:
        layout.case(hold.case)
    except LayoutError as exc:
        raise HoldError(str(exc)) from None
    if not hold.reason.strip():
        raise HoldError("a hold needs a reason")
    if not (hold.tokens or hold.customer or hold.period_from or hold.period_to or hold.countries):
        raise HoldError("a hold must name identifiers, a customer or a period")
    if hold.period_from and hold.period_to and hold.period_from > hold.period_to:
        raise HoldError("the hold's period ends before it starts")
    hold.matches()  # refuses a hold that covers nothing


def place(store: ObjectStore, hold: Hold) -> Hold:
    check(hold)
    existing = load(store, hold.case)
    if existing is not None and not existing.released_at:
        raise HoldError(f"case {hold.case} already has an active hold; release it first")
    save(store, hold)
    return hold


def release(store: ObjectStore, case: str, by: str, at: dt.datetime) -> Hold:
    hold = load(store, case)
    if hold is None:
        raise HoldError(f"no hold for case {case}")
    if hold.released_at:
        return hold
    hold.released_at, hold.released_by = at.isoformat(), by
    save(store, hold)
    return hold


# --- the hold store ------------------------------------------------------------------------
def _encrypt_to(store: ObjectStore, key: str, data: bytes, hold_key_bytes: bytes, aad: str) -> None:
    store.put_bytes(key, encrypt_bytes(hold_key_bytes, data, aad.encode()))


def copy_into_hold(
    store: ObjectStore,
    keyring: LocalKeyring,
    hold: Hold,
    tier_key: str,
    rows: pl.DataFrame,
    vault: pl.DataFrame | None,
    month_key: bytes | None,
) -> int:
    """Copy the held rows of one Parquet part (and their vault entries), encrypted; rows copied."""
    held = rows.filter(hold.matches())
    if not len(held):
        return 0
    hk = keyring.data_key(layout.hold_key_name(hold.case))
    buf = io.BytesIO()
    held.write_parquet(buf)
    target = layout.hold_copy_key(hold.case, "records", tier_key)
    _encrypt_to(store, target, buf.getvalue(), hk, target)
    if vault is not None and month_key is not None:
        tokens = pl.concat([held.get_column("origin"), held.get_column("destination")]).drop_nulls()
        entries = vault.filter(pl.col("token").is_in(tokens.implode()))
        if len(entries):
            gcm = AESGCM(month_key)
            clear = entries.select("token", "kind").with_columns(
                pl.Series(
                    "identifier",
                    [
                        decrypt_value(gcm, blob, t.encode()).decode()
                        for t, blob in entries.select("token", "identifier_encrypted").iter_rows()
                    ],
                )
            )
            buf = io.BytesIO()
            clear.write_parquet(buf)
            target = layout.hold_copy_key(hold.case, "vault", tier_key)
            _encrypt_to(store, target, buf.getvalue(), hk, target)
    return len(held)


def read_held_part(store: ObjectStore, keyring: LocalKeyring, case: str, key: str) -> pl.DataFrame:
    """Decrypt one object of a hold (`holds/<case>/records/…` or `…/vault/…`)."""
    hk = keyring.data_key(layout.hold_key_name(case), create=False)
    with store.open(key) as src:
        data = b"".join(decrypt_stream(hk, src, key.encode()))
    frame = pl.from_arrow(pq.read_table(io.BytesIO(data)))
    assert isinstance(frame, pl.DataFrame)
    return frame


def read_held(store: ObjectStore, keyring: LocalKeyring, case: str, kind: str) -> pl.DataFrame:
    """Decrypt a hold's records (`kind="records"`) or vault entries (`kind="vault"`)."""
    frames = [
        read_held_part(store, keyring, case, obj.key)
        for obj in store.list(layout.hold_data_prefix(case, kind))
    ]
    return pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame()


def purge_hold(
    store: ObjectStore, keyring: LocalKeyring, case: str, at: dt.date
) -> tuple[int, list[str]]:
    """Delete a hold's copied records, destroy its key and forget whom it covered;
    (objects deleted, what is left). Each step is idempotent, so a rerun finishes a crashed one."""
    deleted, left = 0, []
    for kind in ("records", "vault"):
        for obj in list(store.list(layout.hold_data_prefix(case, kind))):
            left += store.purge(obj.key)
            deleted += 1
    keyring.destroy_data_key(layout.hold_key_name(case))
    forget(store, case, at)
    return deleted, left


def forget(store: ObjectStore, case: str, at: dt.date) -> Hold | None:
    """Rewrite an ended hold's record without its tokens (the count, case, dates and reason
    stay; the audit log keeps the history), and delete its earlier versions, which hold them."""
    hold = load(store, case)
    if hold is None or hold.active(at):
        return hold
    if hold.remembers_anyone() or hold.purged_at is None:
        hold.identifier_count = hold.identifiers()
        hold.tokens = []
        hold.purged_at = hold.purged_at or at.isoformat()
        save(store, hold)
    key = layout.hold_record_key(case)
    for v in list(store.versions(key)):
        if v.key == key and (not v.latest or v.delete_marker):
            store.delete_version(key, v.version)
    return hold


@dataclass(frozen=True)
class HoldRequest:
    """Place or release a hold, as the CLI and the DAG's form give it (identifiers in clear:
    they are turned into tokens before anything is stored, and never shown)."""

    action: str  # place | release
    case: str
    reason: str = ""
    identifiers: tuple[str, ...] = ()
    default_region: str | None = None  # None: the deployment's CDR_DEFAULT_REGION
    customer: str | None = None
    date_from: str | None = None  # inclusive, UTC date
    date_to: str | None = None  # inclusive, UTC date
    until: str | None = None  # the hold ends at the start of this UTC date

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> HoldRequest:
        """From the DAG's form or the CLI's flags; dates as YYYY-MM-DD text or dates."""
        return cls(
            action=str(data.get("action") or ""),
            case=str(data.get("case") or ""),
            reason=str(data.get("reason") or ""),
            identifiers=tuple(str(i) for i in data.get("identifiers") or []),
            default_region=data.get("default_region") or None,
            customer=data.get("customer") or None,
            date_from=_iso(data.get("date_from")),
            date_to=_iso(data.get("date_to")),
            until=_iso(data.get("until")),
        )

    def validate(self, today: dt.date | None = None) -> None:
        """Refuse a request that cannot be carried out, before anything is read or written: a
        hold placed to end on or before `today` (UTC) would hold nothing, and a period that
        ends before it starts would cover nothing."""
        if self.action not in {"place", "release"}:
            raise HoldError(f"unknown hold action {self.action!r}: place or release")
        try:
            layout.case(self.case)
        except LayoutError as exc:
            raise HoldError(str(exc)) from None
        if self.action != "place":
            return
        today = today or dt.datetime.now(dt.UTC).date()
        if self.until is not None and dt.date.fromisoformat(self.until) <= today:
            raise HoldError(
                f"until {self.until} is not after today ({today.isoformat()}, UTC): the hold "
                "ends at the start of that day, so it would hold nothing"
            )
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise HoldError(f"the period {self.date_from}..{self.date_to} ends before it starts")

    def to_mapping(self) -> dict[str, Any]:
        """The whole request as stored (sealed: it holds identifiers and the customer)."""
        return {**asdict(self), "identifiers": list(self.identifiers)}

    def hold(self, res: Resources, now: dt.datetime, by: str) -> Hold:
        """The hold this request places: identifiers as tokens (refused when unreadable)."""
        from pipeline.records.lookup import default_region, identifier_tokens

        region = default_region(self.default_region, res.settings.default_region)
        return Hold(
            case=self.case,
            reason=self.reason,
            placed_at=now.isoformat(),
            placed_by=by,
            tokens=identifier_tokens(res.keyring, list(self.identifiers), region),
            customer=self.customer,
            period_from=self.date_from,
            period_to=self.date_to,
            until=self.until,
        )


def run_hold(
    res: Resources, request: HoldRequest, now: dt.datetime | None = None
) -> dict[str, Any]:
    """Place or release a hold, with an audit entry; the hold as may be shown (identifiers as
    a count)."""
    from pipeline.proof import audit

    now = now or dt.datetime.now(dt.UTC)
    request.validate(now.date())
    if request.action == "release":
        hold = release(res.store, request.case, audit.actor(), now)
        action, why = "hold_released", request.reason or "released"
    else:
        hold = place(res.store, request.hold(res, now, audit.actor()))
        action, why = "hold_placed", hold.reason
    event = f"{action.replace('_', '-')}:{hold.case}:{hold.placed_at}"
    signer = res.keyring.signing_key()
    audit.append(res.store, signer, action, what=hold.public(), why=why, event=event)
    return hold.public()


def _iso(value: object) -> str | None:
    """A date given as a date or a YYYY-MM-DD string, checked; None when empty."""
    if value in (None, ""):
        return None
    try:
        return parse_date(value).isoformat()
    except ValueError:
        raise HoldError(f"not a date (YYYY-MM-DD): {value!r}") from None

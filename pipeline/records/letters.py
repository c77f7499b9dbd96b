"""What a person receives: their records in documented form, the package's README and the
written answer to their request.

Another end user in a person's records is shown only as the kind of party and its country and
network (a phone number) or its domain (an e-mail address or SIP user): their identifier is
their own personal data. Business sender ids and short codes are not personal data and are
shown as written.
"""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING, Any

import polars as pl

from pipeline.records.normalise import PERSONAL_KINDS, routing_domain

if TYPE_CHECKING:
    from pipeline.flows.subject import Answer

#: records.json / records.csv fields, in plain language (also in README.txt).
FIELDS: dict[str, str] = {
    "record_id": "the reference the platform gave the communication",
    "time_utc": "when it started (UTC, ISO 8601)",
    "end_time_utc": "when it ended (UTC), where known",
    "type": "sms, mms, voice, email, whatsapp, viber, rcs, telegram or other",
    "direction": "outbound (sent by the business using the platform), inbound (sent to it), "
    "or other (the source wrote neither)",
    "your_role": "sender or recipient: your side of the communication",
    "duration_s": "length in seconds (calls), where known",
    "status": "delivery or call status as the network reported it",
    "your_identifier": "your phone number (E.164) or e-mail address",
    "counterparty_kind": "who the other party was: sender id, short code, phone number, "
    "e-mail address, SIP user, withheld, or you",
    "counterparty_sender_id": "the business sender id or short code, as written",
    "counterparty_country": "another person's country (from their number), never their number",
    "counterparty_network": "another person's network (MCC-MNC), where known",
    "counterparty_domain": "another person's e-mail or SIP domain, never their address",
    "business_customer": "the platform's business customer that sent or received it",
    "kept_in": "live records, or a copy kept under a legal hold",
    "source_sha256": "the original file's digest, as sealed on arrival (for the proofs)",
    "leaf_index": "the record's position in that file's sealed Merkle tree (for the proofs)",
}

_KIND = {
    "alphanumeric": "sender id",
    "shortcode": "short code",
    "msisdn": "phone number",
    "email": "e-mail address",
    "sip": "SIP user",
    "unknown": "withheld",
}


def _counterparty(
    kind: str | None,
    value: str | None,
    country: str | None,
    network: str | None,
    domain: str | None,
) -> dict[str, Any]:
    out: dict[str, Any] = {"counterparty_kind": _KIND.get(kind or "unknown", "withheld")}
    if kind in ("alphanumeric", "shortcode"):
        out["counterparty_sender_id"] = value
    elif kind == "msisdn":
        out |= {"counterparty_country": country, "counterparty_network": network}
    elif kind in PERSONAL_KINDS:
        out |= {"counterparty_domain": domain, "counterparty_country": country}
    return out


def _domain(records: pl.DataFrame, side: str) -> pl.Expr:
    """The party's domain as gold keeps it; from the address for a record held before gold had
    the column."""
    derived = routing_domain(pl.col(f"{side}_kind"), pl.col(f"{side}_identifier"))
    if f"{side}_domain" not in records.columns:
        return derived
    return pl.coalesce(pl.col(f"{side}_domain"), derived)


def access_rows(records: pl.DataFrame, person: dict[str, str]) -> list[dict[str, Any]]:
    """One object per communication, as records.json holds it (see `FIELDS`)."""
    iso = "%Y-%m-%dT%H:%M:%S%.6fZ"
    frame = records.with_columns(
        pl.col("event_time").dt.strftime(iso).alias("_t"),
        pl.col("end_time").dt.strftime(iso).alias("_e"),
        *(_domain(records, side).alias(f"_{side}_domain") for side in ("origin", "destination")),
    )
    rows = []
    for r in frame.iter_rows(named=True):
        mine = "origin" if r["matched"] in ("source", "both") else "destination"
        other = "destination" if mine == "origin" else "origin"
        row: dict[str, Any] = {
            "record_id": r["record_id"],
            "time_utc": r["_t"],
            "end_time_utc": r["_e"],
            "type": r["channel"],
            "direction": r["direction"],
            "your_role": "sender" if mine == "origin" else "recipient",
            "duration_s": r["duration_s"],
            "status": r["status"],
            "your_identifier": person.get(r["_own"]),
        }
        if r["matched"] == "both":
            row["counterparty_kind"] = "you"
        else:
            row |= _counterparty(
                r[f"{other}_kind"],
                r[f"{other}_identifier"],
                r[f"{other}_country"],
                r[f"{other}_network"],
                r[f"_{other}_domain"],
            )
        row |= {
            "business_customer": r["customer_id"],
            "kept_in": "live records" if r["found_in"] == "silver" else "legal hold",
            "source_sha256": r["source_sha256"],
            "leaf_index": r["leaf_index"],
        }
        rows.append({name: row.get(name) for name in FIELDS})
    return rows


def csv_rows(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(FIELDS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


README = (
    """Your communication records (request {case})
==========================================

This package holds the records of your communications that we keep: {count} records between
{start} and {end} (UTC). The same records are in records.json (for programs) and records.csv
(for spreadsheets).

What each field means
---------------------
"""
    + "\n".join(f"{name:24} {text}" for name, text in FIELDS.items())
    + """

The other party of a communication is another person or a business. A business's sender id or
short code is shown as written. Another person's phone number or e-mail address is their own
personal data, so we show only their country and network, or the domain of their address.

How long we keep these records, and why
----------------------------------------
- Your phone number or e-mail address in these records: {identifier_months} months after the
  end of the month of the communication. Then it is deleted for good.
- The rest of the record (time, type, duration, routing), without your number or address:
  {record_years} years after the end of the year of the communication.
Why: {reason}.

Months whose identifiers were already deleted
----------------------------------------------
Records of these months can no longer be linked to you, so they are not in this package:
{purged}

Checking this package
---------------------
records.parquet holds each record as we keep it (without anyone's number or address), and
manifest.json its proof: a path to the signed seal made when the original file arrived.
manifest.json.sig is our signature. `python -m pipeline verify-access` checks them all.
"""
)


def response_text(answer: Answer) -> str:
    """The written answer, printable."""
    lines = [
        f"Answer to your data protection request {answer.case}",
        "",
        f"Request:   {answer.type}",
        f"Received:  {answer.received}",
        f"Deadline:  {answer.deadline}",
        f"Answered:  {answer.answered_on}",
        f"Outcome:   {answer.outcome}",
        "",
    ]
    if answer.type == "access" and answer.outcome == "delivered":
        lines += [
            f"We found {answer.found['records']} records of your communications. They are in "
            f"the encrypted package {answer.done['package']},",
            f"delivered to {answer.done['delivery']}.",
        ]
        for p in answer.done["purged_months"]:
            lines.append(f"  {p['month']}: identifiers already deleted on {p['purged_on']}")
    elif answer.outcome == "refused":
        r = answer.refused
        lines += [
            f"We cannot erase your identifiers now: {r['rule']}.",
            f"Legal basis: {r['legal_basis']}.",
            f"They will be deleted automatically by {r['automatic_deletion']}:",
            *(f"  {m}: on {d}" for m, d in r["automatic_deletion_by_month"].items()),
        ]
    elif answer.outcome == "erased":
        d = answer.done
        lines += [
            f"We erased your identifiers from {answer.found['records']} records "
            f"({d['vault_entries_deleted']} entries, months {', '.join(d['months'])}); "
            "a check found none left.",
            f"{d['note']}.",
        ]
        if d["held_records"]:
            lines.append(
                f"{d['held_records']} records are under a legal hold and were kept, not erased."
            )
    elif answer.outcome == "restricted":
        lines += [
            f"Processing of {answer.found['records']} records is restricted: {answer.done['note']}."
        ]
    else:
        lines.append(answer.done.get("note", ""))
    return "\n".join(lines) + "\n"

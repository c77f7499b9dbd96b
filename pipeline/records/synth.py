"""Synthetic CDRs for the demo, the tests and the benchmark.

Realistic mixes: SMS, e-mail, chat-app and voice records; outbound and inbound; end users in
Pakistan and abroad who recur across records; numbers written every common way; alphanumeric
sender IDs and short codes; timestamps spread over months with some on month boundaries; and a
configurable share of bad rows (bad timestamps, missing IDs, unparseable numbers, wrong column
counts, truncated JSON). Built with vectorised polars/numpy in chunks, so 10 M rows take seconds
and bounded memory. Numbers use ranges that are valid but fictional-looking; e-mail domains are
`example.*`.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

FORMATS = ("canonical_csv", "messaging_jsonl", "messaging_json", "asterisk", "freeswitch")
# (country, calling code, national prefix used in national form, subscriber pattern digits)
COUNTRIES = [
    ("PK", "92", "3", 9, 0.55),  # +92 3xx xxxxxxx (mobile)
    ("US", "1", "9173", 6, 0.10),
    ("GB", "44", "7400", 6, 0.08),
    ("CH", "41", "79", 7, 0.07),
    ("AE", "971", "50", 7, 0.07),
    ("NG", "234", "803", 7, 0.06),
    ("IT", "39", "347", 7, 0.07),
]
#: the region whose numbers the generator writes in national form (`0300-…`)
REGION = "PK"
SENDERS = ["InfoSMS", "BankAlert", "ShopPK", "8080", "9988", "OTPSVC"]
MCCMNC = {"PK": "41001", "US": "310260", "GB": "23410", "CH": "22801", "AE": "42402", "NG": "62130", "IT": "22210"}  # fmt: skip
REASONS = ("bad_timestamp", "missing_id", "bad_number", "wrong_columns")


@dataclass
class Generated:
    """What was written: row counts and every identifier, for tests that search for leaks."""

    path: Path
    rows: int
    bad_rows: int
    numbers: set[str] = field(default_factory=set)  # E.164
    emails: set[str] = field(default_factory=set)
    #: per record (up to 200,000 rows): record_id, event_time, channel, bad (-1 if good), and
    #: the end user's E.164 number and e-mail address: the truth a search is checked against
    truth: pl.DataFrame | None = None


def population(people: int, seed: int = 7) -> pl.DataFrame:
    """End users: an E.164 number, its country, an e-mail address (recurring across records)."""
    rng = np.random.default_rng(seed)
    weights = np.array([c[4] for c in COUNTRIES])
    which = rng.choice(len(COUNTRIES), size=people, p=weights / weights.sum())
    sub = rng.integers(0, 10**9, size=people)
    rows = []
    for i, (_country, cc, lead, digits, _) in enumerate(COUNTRIES):
        mask = which == i
        n = int(mask.sum())
        subs = [str(x % 10**digits).zfill(digits) for x in sub[mask]]
        if cc == "92":
            subs = [f"{(int(s[:2]) % 38):02d}{s[2:]}" for s in subs]  # 300..337, allocated
        rows.append(
            pl.DataFrame(
                {
                    "cc": [cc] * n,
                    "national": [lead + s for s in subs],
                    "country": [COUNTRIES[i][0]] * n,
                }
            )
        )
    df = pl.concat(rows).with_columns(
        (pl.lit("+") + pl.col("cc") + pl.col("national")).alias("e164")
    )
    df = df.unique("e164", keep="first", maintain_order=True)
    idx = pl.int_range(pl.len(), dtype=pl.Int64)
    return df.with_columns(
        pl.format(
            "user{}.{}.{}@example.com", pl.lit(seed), idx, pl.col("country").str.to_lowercase()
        ).alias("email")
    )


def _written(df: pl.DataFrame, style: pl.Expr) -> pl.Expr:
    """A number in one of the common written forms, chosen per row by `style` (0..5)."""
    cc, nat = pl.col("cc"), pl.col("national")
    pk = cc == "92"
    return (
        pl.when(style == 0)
        .then(pl.lit("+") + cc + pl.lit(" ") + nat.str.slice(0, 3) + pl.lit(" ") + nat.str.slice(3))
        .when((style == 1) & pk)
        .then(pl.lit("0") + nat.str.slice(0, 3) + pl.lit("-") + nat.str.slice(3))
        .when(style == 2)
        .then(pl.lit("00") + cc + nat)
        .when((style == 3) & pk)
        .then(cc + nat)
        .when(style == 4)
        .then(
            pl.lit("tel:+")
            + cc
            + pl.lit("-")
            + nat.str.slice(0, 3)
            + pl.lit("-")
            + nat.str.slice(3)
        )
        .otherwise(pl.lit("+") + cc + nat)
    )


def _chunk(
    rng: np.random.Generator,
    people: pl.DataFrame,
    n: int,
    offset: int,
    start: dt.datetime,
    months: int,
    bad_share: float,
    until: dt.datetime | None = None,
    id_prefix: str = "r",
) -> pl.DataFrame:
    """A chunk of canonical-shaped records with raw addresses and a `bad` marker, dated in
    `months` whole months from `start`, and before `until` if given."""
    end = _add_months(start, months) if until is None else min(_add_months(start, months), until)
    span = max(int((end - start).total_seconds()), 1)
    secs = rng.integers(0, span, size=n)
    edge = rng.random(n) < 0.02  # on a month boundary: last or first second of a month
    month_starts = [
        s
        for k in range(1, months)
        if (s := int((_add_months(start, k) - start).total_seconds())) < span
    ]
    if month_starts:
        pick = rng.choice(month_starts, size=n) + rng.choice([-1, 0], size=n)
        secs = np.where(edge, pick, secs)
    who = rng.integers(0, len(people), size=n)
    base = people.select(pl.all().gather(who))
    channel = rng.choice(["sms", "sms", "sms", "email", "whatsapp", "voice"], size=n)
    inbound = rng.random(n) < 0.2
    frame = base.with_columns(
        (
            pl.lit(id_prefix)
            + pl.int_range(offset, offset + n, eager=True).cast(pl.String).str.zfill(10)
        ).alias("record_id"),
        pl.Series("t", secs).cast(pl.Int64),
        pl.Series("channel", channel),
        pl.Series("inbound", inbound),
        pl.Series("style", rng.integers(0, 6, size=n)),
        pl.Series("sender", rng.choice(SENDERS, size=n)),
        pl.Series("duration", rng.integers(1, 3600, size=n)),
        pl.Series("units", rng.integers(1, 4, size=n)),
        pl.Series("price", np.round(rng.random(n) * 0.05, 4)),
        pl.Series(
            "status",
            rng.choice(["DELIVERED", "DELIVERED", "DELIVERED", "UNDELIVERABLE", "PENDING"], size=n),
        ),
        pl.Series("customer", rng.choice(["cust-001", "cust-002", "cust-017"], size=n)),
        pl.Series(
            "bad", np.where(rng.random(n) < bad_share, rng.integers(0, len(REASONS), size=n), -1)
        ),
    )
    t0 = int(start.timestamp())
    return frame.with_columns(
        pl.from_epoch(pl.col("t") + t0, time_unit="s")
        .dt.replace_time_zone("UTC")
        .alias("event_time"),
        _written(frame, pl.col("style")).alias("number"),
    )


def _add_months(t: dt.datetime, k: int) -> dt.datetime:
    idx = t.year * 12 + t.month - 1 + k
    return t.replace(year=idx // 12, month=idx % 12 + 1, day=1)


def _canonical_csv(df: pl.DataFrame) -> pl.DataFrame:
    email = pl.col("channel") == "email"
    user = (
        pl.when(email)
        .then(pl.col("email").str.to_uppercase().str.slice(0, 1) + pl.col("email").str.slice(1))
        .otherwise(pl.col("number"))
    )
    biz = (
        pl.when(email)
        .then(pl.lit("noreply@shop.example.com"))
        .when(pl.col("channel") == "voice")
        .then(pl.lit("+922134567890"))
        .otherwise(pl.col("sender"))
    )
    bad = pl.col("bad")
    out = df.select(
        pl.when(bad == 1).then(pl.lit("")).otherwise(pl.col("record_id")).alias("record_id"),
        pl.when(bad == 0)
        .then(pl.lit("2025-13-45T99:00:00Z"))
        .otherwise(pl.col("event_time").dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
        .alias("event_time"),
        pl.lit(None, pl.String).alias("end_time"),
        pl.col("channel"),
        pl.when(pl.col("inbound"))
        .then(pl.lit("inbound"))
        .otherwise(pl.lit("outbound"))
        .alias("direction"),
        pl.col("customer").alias("customer_id"),
        pl.when(pl.col("inbound")).then(user).otherwise(biz).alias("origin"),
        pl.when(bad == 2)
        .then(pl.lit("12ab#"))
        .when(pl.col("inbound"))
        .then(biz)
        .otherwise(user)
        .alias("destination"),
        pl.lit(None, pl.String).alias("destination_network"),
        pl.lit("rt-1").alias("route_id"),
        pl.when(pl.col("channel") == "voice")
        .then(pl.col("duration"))
        .otherwise(None)
        .alias("duration_s"),
        pl.col("units"),
        pl.col("status"),
        pl.lit(None, pl.String).alias("error_code"),
        pl.col("price"),
        pl.lit("EUR").alias("currency"),
        (bad == 3).alias("_extra"),
    )
    return out


def _messaging_lines(df: pl.DataFrame) -> list[str]:
    lines = []
    for r in df.iter_rows(named=True):
        ts = r["event_time"].strftime("%Y-%m-%dT%H:%M:%S.000+0000")
        number = r["cc"] + r["national"]
        if r["channel"] == "email":
            rec = {"messageId": r["record_id"], "bulkId": "b1", "from": "noreply@shop.example.com", "to": r["email"], "sentAt": ts, "doneAt": ts, "messageCount": 1, "channel": "EMAIL", "status": {"groupId": 3, "groupName": "DELIVERED", "id": 5, "name": "DELIVERED_TO_HANDSET"}, "subject": "Your order", "text": f"Hello, call us at +{number}"}  # fmt: skip
        elif r["inbound"]:
            rec = {"messageId": r["record_id"], "from": number, "to": "8080", "receivedAt": ts, "smsCount": 1, "mccMnc": MCCMNC[r["country"]], "text": f"STOP {number}", "price": {"pricePerMessage": 0, "currency": "EUR"}}  # fmt: skip
        else:
            rec = {"messageId": r["record_id"], "bulkId": "b2", "from": r["sender"], "to": number, "sentAt": ts, "doneAt": ts, "smsCount": r["units"], "mccMnc": MCCMNC[r["country"]], "price": {"pricePerMessage": r["price"], "currency": "EUR"}, "status": {"groupId": 3, "groupName": r["status"], "id": 5, "name": "DELIVERED_TO_HANDSET"}, "error": {"groupId": 0, "groupName": "OK", "id": 0, "name": "NO_ERROR", "permanent": False}, "text": "Your code is 1234", "channel": "SMS" if r["channel"] != "whatsapp" else "WHATSAPP"}  # fmt: skip
        bad = r["bad"]
        if bad == 0:
            rec["sentAt" if "sentAt" in rec else "receivedAt"] = "not-a-time"
        elif bad == 1:
            rec.pop("messageId")
        elif bad == 2:
            rec["to" if not r["inbound"] else "from"] = "12ab#"
        line = json.dumps(rec, separators=(",", ":"))
        if bad == 3:
            line = line[: len(line) // 2]  # truncated JSON
        lines.append(line)
    return lines


def _pbx_rows(df: pl.DataFrame, kind: str) -> list[str]:
    lines = []
    for r in df.iter_rows(named=True):
        start = r["event_time"]
        end = start + dt.timedelta(seconds=r["duration"])
        fmt = "%Y-%m-%d %H:%M:%S"
        caller = r["number"] if r["inbound"] else "1001"
        callee = (
            "2000"
            if r["inbound"]
            else ("0" + r["national"] if r["cc"] == "92" else "00" + r["cc"] + r["national"])
        )
        s, e = start.strftime(fmt), end.strftime(fmt)
        if r["bad"] == 0:
            s = "2025-02-30 25:61:00"
        if r["bad"] == 2:
            callee = ""
        ctx = "from-pstn" if r["inbound"] else "from-internal"
        if kind == "asterisk":
            clid = f'"Caller Name" <{caller}>'
            fields = ["cust-001", caller, callee, ctx, clid, "PJSIP/1001-0000001a", "PJSIP/trunk-pk-0000001b", "Dial", f"PJSIP/{callee}@trunk-pk,30", s, s, e, str(r["duration"]), str(max(r["duration"] - 5, 0)), "ANSWERED", "DOCUMENTATION", f"{int(start.timestamp())}.{r['record_id'][-4:]}", ""]  # fmt: skip
            if r["bad"] == 1:
                fields = fields[:-2]  # no uniqueid: an ID is derived
        else:
            fields = ["Caller Name", caller, callee, "public" if r["inbound"] else "default", s, s, e, str(r["duration"]), str(max(r["duration"] - 5, 0)), "NORMAL_CLEARING", f"a1b2c3d4-e5f6-4a7b-8c9d-{int(r['record_id'][1:]):012x}", "", "cust-001", "PCMA", "PCMA"]  # fmt: skip
            if r["bad"] == 1:
                fields[10] = ""
        if r["bad"] == 3:
            fields = [*fields, "extra"]
        lines.append(",".join('"' + f.replace('"', '""') + '"' for f in fields))
    return lines


def generate(
    fmt: str,
    path: Path,
    rows: int,
    *,
    seed: int = 1,
    people: int | None = None,
    start: dt.date = dt.date(2025, 1, 1),
    months: int = 3,
    bad_share: float = 0.01,
    chunk: int = 500_000,
    until: dt.datetime | None = None,
    id_prefix: str = "r",
) -> Generated:
    """Write `rows` synthetic records of format `fmt` to `path`, dated over `months` whole
    months from `start`, all before `until` when given (a demo's records are never from the
    future of the day it runs). Record IDs are `id_prefix` and a count (`r0000000000` on): files of one source
    given distinct prefixes share no ID, as real deliveries would not."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    rng = np.random.default_rng(seed)
    pop = population(people or max(rows // 20, 10), seed)
    start_dt = dt.datetime(start.year, start.month, 1, tzinfo=dt.UTC)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = Generated(path, rows, 0)
    used: set[int] = set()
    docs: list[str] = []
    truth: list[pl.DataFrame] = []
    with open(path, "wb") as f:
        for offset in range(0, rows, chunk):
            n = min(chunk, rows - offset)
            df = _chunk(rng, pop, n, offset, start_dt, months, bad_share, until, id_prefix)
            bad = df.get_column("bad")
            # An Asterisk row without uniqueid is not bad: the pipeline derives its ID.
            info.bad_rows += int(((bad >= 0) & ~((bad == 1) & (fmt == "asterisk"))).sum())
            if rows <= 200_000:
                truth.append(
                    df.select("record_id", "event_time", "channel", "bad", "e164", "email")
                )
                used.update(df.get_column("e164").to_list())
                info.emails.update(
                    df.filter(pl.col("channel") == "email").get_column("email").to_list()
                )
            if fmt == "canonical_csv":
                out = _canonical_csv(df)
                extra = out.get_column("_extra")
                text = out.drop("_extra").write_csv(include_header=offset == 0)
                if extra.any():
                    lines = text.split("\n")
                    head = 1 if offset == 0 else 0
                    for i in np.flatnonzero(extra.to_numpy()):
                        lines[head + i] += ",surplus"
                    text = "\n".join(lines)
                f.write(text.encode())
            elif fmt == "messaging_jsonl":
                f.write(("\n".join(_messaging_lines(df)) + "\n").encode())
            elif fmt == "messaging_json":
                info.bad_rows -= int((df.get_column("bad") == 3).sum())
                docs.extend(
                    line
                    for line, bad in zip(_messaging_lines(df), df.get_column("bad"), strict=True)
                    if bad != 3
                )
            else:
                f.write(("\n".join(_pbx_rows(df, fmt)) + "\n").encode())
        if fmt == "messaging_json":
            f.write(b'{"results":[' + ",".join(docs).encode() + b"]}")
            info.rows = len(docs)
    info.numbers = used
    info.truth = pl.concat(truth) if truth else None
    return info

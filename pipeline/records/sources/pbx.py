"""PBX call records: Asterisk `cdr-csv` (Master.csv) and FreeSWITCH `cdr_csv` (example template).

Both are headerless CSV with a documented column order. Timestamps are the PBX's local time
(`--timezone`, default UTC) and are converted to UTC. Caller-ID names, `lastdata` and `userfield`
are never carried: they are free text that can hold names and numbers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.records.formats import ASTERISK, FREESWITCH, INBOUND_CONTEXT
from pipeline.records.schema import PARSED, conform
from pipeline.records.sources.base import (
    ParseOptions,
    Source,
    bad_value,
    csv_batches,
    field_count,
    first_error,
    first_record,
    no_offset,
    number,
    with_timestamps,
)

PBX_TIME = ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
_TS = re.compile(rb'^"?\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}')


def _first_fields(head: bytes) -> list[bytes]:
    return [f.encode() for f in first_record(head)]


def _pbx_frame(df: pl.DataFrame, fields: dict[str, pl.Expr], times: dict[str, Any]) -> pl.DataFrame:
    """Shared tail of the PBX mappings: timestamps, durations, reason codes."""
    df = with_timestamps(
        df, {times["start"]: "_event", times["end"]: "_end"}, PBX_TIME, times["tz"]
    )
    event_time, end_time = pl.col("_event"), pl.col("_end")
    duration = number("duration", pl.Float64())
    billsec = number("billsec", pl.Int64())
    out = df.select(
        "source_line",
        event_time.alias("event_time"),
        end_time.alias("end_time"),
        pl.lit("voice").alias("channel"),
        duration.alias("duration_s"),
        billsec.alias("units"),
        first_error(
            [
                no_offset("_event"),
                (bad_value(times["start"], event_time), "bad_timestamp:event_time"),
                no_offset("_end"),
                (bad_value(times["end"], end_time), "bad_timestamp:end_time"),
                (bad_value("duration", duration), "bad_number:duration_s"),
                (bad_value("billsec", billsec), "bad_number:units"),
            ]
        ).alias("parse_error"),
        pl.col("raw"),
        *[e.alias(k) for k, e in fields.items()],
    )
    return conform(out, PARSED)


def _asterisk(good: pl.DataFrame, opts: ParseOptions) -> pl.DataFrame:
    """Asterisk fields → a parsed frame (the format's own column meanings)."""
    n = field_count(pl.col("raw"))
    # With 17 fields the 17th is uniqueid if it looks like one (epoch.sequence).
    uid = pl.col("uniqueid")
    has_uid = (n == 18) | ((n == 17) & uid.str.contains(r"^\d+\.\d+$").fill_null(False))
    clid_number = pl.when(pl.col("clid").str.contains("<", literal=True)).then(pl.col("clid"))
    inbound = pl.col("dcontext").str.contains(INBOUND_CONTEXT).fill_null(False)
    trunk = pl.col("dstchannel").str.replace(r"-[0-9a-fA-F]+$", "")
    fields = {
        "record_id": pl.when(has_uid).then(uid),
        "direction": pl.when(inbound).then(pl.lit("inbound")).otherwise(pl.lit("outbound")),
        "customer_id": pl.col("accountcode"),
        "origin_raw": pl.coalesce(pl.col("src"), clid_number),
        "destination_raw": pl.col("dst"),
        "origin_internal": _endpoint("channel") == pl.col("src").str.strip_chars(),
        "destination_internal": _endpoint("dstchannel") == pl.col("dst").str.strip_chars(),
        "route_id": pl.when(inbound)
        .then(pl.col("channel").str.replace(r"-[0-9a-fA-F]+$", ""))
        .otherwise(trunk),
        "status": pl.col("disposition"),
    }
    times = {"start": "start", "end": "end", "tz": opts.timezone}
    return _pbx_frame(good, fields, times)


def _endpoint(channel: str) -> pl.Expr:
    """The device a channel is of: `PJSIP/1001-0000002a` → `1001` (a call's own extension or
    SIP user, when it is its party). Not a `Local/` channel: it carries whatever was dialled,
    a mobile number of a follow-me too."""
    return (
        pl.col(channel)
        .str.replace(r"-[0-9a-fA-F]+$", "")
        .str.extract(
            r"^(?:PJSIP|SIP|IAX2|DAHDI|Skinny|SCCP|UNISTIM|MGCP|H323|OOH323)/([^@/;]+)$", 1
        )
    )


def _freeswitch(good: pl.DataFrame, opts: ParseOptions) -> pl.DataFrame:
    """FreeSWITCH fields → a parsed frame (the format's own column meanings).

    The `example` template names no channel: a caller in a context that is not inbound is the
    PBX's own user when written as a user name or an extension of at most 6 digits (one of 7 or
    more may be a forwarded number: read as one)."""
    inbound = pl.col("context").str.contains(INBOUND_CONTEXT).fill_null(False)
    caller = pl.col("caller_id_number").str.strip_chars()
    fields = {
        "record_id": pl.col("uuid"),
        "direction": pl.when(inbound).then(pl.lit("inbound")).otherwise(pl.lit("outbound")),
        "customer_id": pl.col("accountcode"),
        "origin_internal": ~inbound
        & caller.str.contains(r"^(?:\d{1,6}|[A-Za-z][\w.-]*)$").fill_null(False),
        "origin_raw": pl.col("caller_id_number"),
        "destination_raw": pl.col("destination_number"),
        "route_id": pl.col("context"),
        "status": pl.col("hangup_cause"),
        "error_code": pl.when(pl.col("hangup_cause") != "NORMAL_CLEARING").then(
            pl.col("hangup_cause")
        ),
    }
    times = {"start": "start_stamp", "end": "end_stamp", "tz": opts.timezone}
    return _pbx_frame(good, fields, times)


class AsteriskSource(Source):
    """Asterisk Master.csv; `uniqueid` and `userfield` are optional columns (16 to 18 fields)."""

    name = "asterisk"
    alphanumeric = False
    derived_ids = True

    def sniff(self, head: bytes) -> bool:
        row = _first_fields(head)
        return 16 <= len(row) <= 18 and bool(_TS.match(row[9]))

    def parse(self, path: Path, opts: ParseOptions) -> Iterator[pl.DataFrame]:
        yield from csv_batches(
            path, opts.batch_rows, ASTERISK, {16, 17, 18}, lambda good: _asterisk(good, opts)
        )


class FreeswitchSource(Source):
    """FreeSWITCH cdr_csv with the `example` template (15 fields)."""

    name = "freeswitch"
    alphanumeric = False

    def sniff(self, head: bytes) -> bool:
        row = _first_fields(head)
        return len(row) == 15 and bool(_TS.match(row[4]))

    def parse(self, path: Path, opts: ParseOptions) -> Iterator[pl.DataFrame]:
        yield from csv_batches(
            path, opts.batch_rows, FREESWITCH, {15}, lambda good: _freeswitch(good, opts)
        )

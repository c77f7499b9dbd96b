"""Messaging-platform message logs and delivery reports: `{"results": [...]}` or JSON Lines.

Covers outbound SMS (the end user is `to`), inbound SMS (`receivedAt` set; the end user is
`from`), and e-mail logs (addresses instead of numbers). The API writes numbers in international
form without `+`. Content fields (`text`, `content`, `subject`, ...) are not in the read schema,
so they are never even loaded.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.records.schema import PARSED, conform
from pipeline.records.sources.base import (
    BOM,
    FileFormatError,
    ParseOptions,
    Source,
    bad_value,
    first_error,
    iter_lines,
    no_offset,
    number,
    with_timestamps,
)

_STATUS = pl.Struct(
    {"groupId": pl.String, "groupName": pl.String, "id": pl.String, "name": pl.String}
)
READ_SCHEMA: dict[str, pl.DataType] = {
    "messageId": pl.String(),
    "bulkId": pl.String(),
    "from": pl.String(),
    "sender": pl.String(),
    "to": pl.String(),
    "destination": pl.String(),
    "sentAt": pl.String(),
    "receivedAt": pl.String(),
    "doneAt": pl.String(),
    "smsCount": pl.String(),
    "messageCount": pl.String(),
    "mccMnc": pl.String(),
    "channel": pl.String(),
    "customerId": pl.String(),
    "applicationId": pl.String(),
    "entityId": pl.String(),
    "route": pl.String(),
    "price": pl.Struct({"pricePerMessage": pl.String, "currency": pl.String}),
    "status": _STATUS,
    "error": _STATUS,
}
#: with an offset as the API writes them; without one, read in the source's zone if known
TIME_FORMATS = ["%Y-%m-%dT%H:%M:%S%.f%z", "%+", "%Y-%m-%dT%H:%M:%S%.f"]


def _is_object(line: pl.Expr) -> pl.Expr:
    s = line.str.strip_chars()
    return s.str.starts_with("{") & s.str.ends_with("}")


class MessagingSource(Source):
    name = "messaging"
    international = True

    def sniff(self, head: bytes) -> bool:
        text = head.removeprefix(BOM).lstrip()
        if not text.startswith(b"{"):
            return False
        first = text.split(b"\n", 1)[0]
        return b'"results"' in text[:256] or b'"messageId"' in first

    def parse(self, path: Path, opts: ParseOptions) -> Iterator[pl.DataFrame]:
        for lines in self._line_batches(path, opts):
            yield self._map(lines, opts.timezone)

    def _line_batches(self, path: Path, opts: ParseOptions) -> Iterator[pl.DataFrame]:
        with open(path, "rb") as f:
            head = f.read(256).removeprefix(BOM).lstrip()
        if head.startswith(b"{") and b'"results"' in head:
            # An API page: one JSON document, bounded by the API's page size.
            try:
                doc = json.loads(path.read_bytes().decode("utf-8-sig"))
                results = doc["results"]
                if not isinstance(results, list):
                    raise TypeError("results is not a list")
            except (ValueError, KeyError, TypeError) as exc:
                raise FileFormatError("bad_json_document", type(exc).__name__) from None
            for start in range(0, len(results), opts.batch_rows):
                part = results[start : start + opts.batch_rows]
                yield pl.DataFrame(
                    {
                        "source_line": range(start + 1, start + 1 + len(part)),
                        "line": [json.dumps(r, separators=(",", ":")) for r in part],
                        "bad_encoding": [False] * len(part),
                    },
                    schema={"source_line": pl.Int64, "line": pl.String, "bad_encoding": pl.Boolean},
                )
        else:
            yield from iter_lines(path, opts.batch_rows)

    def _map(self, lines: pl.DataFrame, tz: str | None) -> pl.DataFrame:
        """Each line on its own: not UTF-8, not a JSON object, or a field of the wrong type is
        that line's reason; its neighbours are read as usual."""
        lines = lines.with_columns(
            pl.when(pl.col("bad_encoding"))
            .then(pl.lit("bad_encoding"))
            .when(~_is_object(pl.col("line")))
            .then(pl.lit("bad_json"))
            .alias("_reason")
        )
        candidates = lines.filter(pl.col("_reason").is_null()).drop("_reason")
        records = pl.concat([candidates, _read_records(candidates)], how="horizontal")
        good = records.filter(pl.col("_reason").is_null())
        bad = pl.concat(
            [
                lines.filter(pl.col("_reason").is_not_null()).select(
                    "source_line", "line", "_reason"
                ),
                records.filter(pl.col("_reason").is_not_null()).select(
                    "source_line", "line", "_reason"
                ),
            ]
        ).select("source_line", pl.col("_reason").alias("parse_error"), pl.col("line").alias("raw"))
        return pl.concat([self._fields(good, tz), conform(bad, PARSED)], how="vertical")

    def _fields(self, df: pl.DataFrame, tz: str | None) -> pl.DataFrame:
        inbound = pl.col("receivedAt").is_not_null()
        origin = pl.coalesce("from", "sender")
        destination = pl.coalesce("to", "destination")
        has_at = origin.str.contains("@", literal=True).fill_null(False) | destination.str.contains(
            "@", literal=True
        ).fill_null(False)
        channel = pl.col("channel")  # read as kept (lower-cased, vocabulary) by `normal_course`
        df = df.with_columns(
            pl.coalesce("receivedAt", "sentAt").alias("_when"),
            pl.coalesce("smsCount", "messageCount").alias("_units"),
            pl.col("price").struct.field("pricePerMessage").alias("_price"),
        )
        df = with_timestamps(df, {"_when": "_event", "doneAt": "_end"}, TIME_FORMATS, tz)
        event_time, end_time = pl.col("_event"), pl.col("_end")
        units = number("_units", pl.Int64())
        price = number("_price", pl.Float64())
        out = df.select(
            "source_line",
            pl.col("messageId").alias("record_id"),
            event_time.alias("event_time"),
            end_time.alias("end_time"),
            pl.when(channel.is_not_null())
            .then(
                channel
            )  # one outside CHANNELS is kept as channel_detail (pipeline.records.transform)
            .when(has_at)
            .then(pl.lit("email"))
            .otherwise(pl.lit("sms"))
            .alias("channel"),
            pl.when(inbound)
            .then(pl.lit("inbound"))
            .otherwise(pl.lit("outbound"))
            .alias("direction"),
            pl.coalesce("customerId", "applicationId", "entityId").alias("customer_id"),
            origin.alias("origin_raw"),
            destination.alias("destination_raw"),
            pl.when(inbound).then(pl.col("mccMnc")).alias("origin_network"),
            pl.when(~inbound).then(pl.col("mccMnc")).alias("destination_network"),
            pl.col("route").alias("route_id"),
            units.alias("units"),
            pl.coalesce(
                pl.col("status").struct.field("groupName"), pl.col("status").struct.field("name")
            ).alias("status"),
            pl.col("error").struct.field("name").alias("error_code"),
            price.alias("price"),
            pl.col("price").struct.field("currency").alias("currency"),
            first_error(
                [
                    no_offset("_event"),
                    (bad_value("_when", event_time), "bad_timestamp:event_time"),
                    no_offset("_end"),
                    (bad_value("doneAt", end_time), "bad_timestamp:end_time"),
                    (bad_value("_units", units), "bad_number:units"),
                    (bad_value("_price", price), "bad_number:price"),
                ]
            ).alias("parse_error"),
            pl.col("line").alias("raw"),
        )
        return conform(out, PARSED)


_STRING_KEYS = [k for k, t in READ_SCHEMA.items() if not isinstance(t, pl.Struct)]
_STRUCT_KEYS = [k for k, t in READ_SCHEMA.items() if isinstance(t, pl.Struct)]
_SUB_KEYS = sorted({f.name for k in _STRUCT_KEYS for f in READ_SCHEMA[k].fields})  # type: ignore[attr-defined]
# A value the reader would silently turn into text (an object, a list, a boolean where a string
# or number belongs) or a scalar where an object belongs: such lines are checked one by one.
_SUSPECT_TYPE = (
    r'(?:^|[^\\])"(?:'
    + "|".join(_STRING_KEYS + _SUB_KEYS)
    + r')"\s*:\s*(?:[\[{]|true|false)'
    + r'|(?:^|[^\\])"(?:'
    + "|".join(_STRUCT_KEYS)
    + r')"\s*:\s*(?:[^\s{n]|n[^u])'
)


def _scalar(value: Any) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def _line_problem(line: str) -> str | None:
    """Why one line cannot be read as a record: `bad_json`, `bad_type:<field>`, or None."""
    try:
        obj = json.loads(line)
    except ValueError:
        return "bad_json"
    if not isinstance(obj, dict):
        return "bad_json"
    for name, dtype in READ_SCHEMA.items():
        value = obj.get(name)
        if value is None:
            continue
        if isinstance(dtype, pl.Struct):
            subs = [value.get(f.name) for f in dtype.fields] if isinstance(value, dict) else None
            if subs is None or not all(v is None or _scalar(v) for v in subs):
                return f"bad_type:{name}"
        elif not _scalar(value):
            return f"bad_type:{name}"
    return None


def _read_records(shaped: pl.DataFrame) -> pl.DataFrame:
    """The JSON objects of the lines, aligned with them, with `_reason` set where a line is
    not valid JSON or a field has the wrong type (its record's fields are then null)."""
    schema = {**READ_SCHEMA, "_reason": pl.String()}
    if not len(shaped):
        return pl.DataFrame(schema=schema)
    lines = shaped.get_column("line")
    suspect = lines.str.contains(_SUSPECT_TYPE)
    if not suspect.any():
        try:
            recs = pl.read_ndjson(
                io.BytesIO(lines.str.join("\n").item().encode()), schema=READ_SCHEMA
            )
            if len(recs) == len(shaped):
                return recs.with_columns(pl.lit(None, pl.String).alias("_reason"))
        except pl.exceptions.PolarsError:
            pass
    # Some line is not valid or not well typed: find which, line by line (rare, so slow is fine).
    reasons = pl.Series("_reason", [_line_problem(x) for x in lines.to_list()], dtype=pl.String)
    okay = reasons.is_null()
    valid = lines.filter(okay).to_list()
    recs = (
        pl.read_ndjson(io.StringIO("\n".join(valid)), schema=READ_SCHEMA)
        if valid
        else pl.DataFrame(schema=READ_SCHEMA)
    )
    # Re-align: valid lines get their record, the others a row of nulls.
    idx = pl.Series("_i", range(len(lines))).filter(okay)
    aligned = (
        pl.DataFrame({"_i": range(len(lines))})
        .join(pl.concat([idx.to_frame(), recs], how="horizontal"), on="_i", how="left")
        .drop("_i")
    )
    return aligned.with_columns(reasons)

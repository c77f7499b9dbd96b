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

import polars as pl

from pipeline.schema import PARSED, conform
from pipeline.sources.base import (
    FileFormatError,
    ParseOptions,
    Source,
    bad_value,
    first_error,
    iter_lines,
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
TIME_FORMATS = ["%Y-%m-%dT%H:%M:%S%.f%z", "%+"]


def _is_object(line: pl.Expr) -> pl.Expr:
    s = line.str.strip_chars()
    return s.str.starts_with("{") & s.str.ends_with("}")


class MessagingSource(Source):
    name = "messaging"
    international = True

    def sniff(self, head: bytes) -> bool:
        text = head.lstrip()
        if not text.startswith(b"{"):
            return False
        first = text.split(b"\n", 1)[0]
        return b'"results"' in text[:256] or b'"messageId"' in first

    def parse(self, path: Path, opts: ParseOptions) -> Iterator[pl.DataFrame]:
        for lines in self._line_batches(path, opts):
            yield self._map(lines)

    def _line_batches(self, path: Path, opts: ParseOptions) -> Iterator[pl.DataFrame]:
        with open(path, "rb") as f:
            head = f.read(256).lstrip()
        if head.startswith(b"{") and b'"results"' in head:
            # An API page: one JSON document, bounded by the API's page size.
            try:
                with open(path, "rb") as f:
                    doc = json.load(f)
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
                    },
                    schema={"source_line": pl.Int64, "line": pl.String},
                )
        else:
            yield from iter_lines(path, opts.batch_rows)

    def _map(self, lines: pl.DataFrame) -> pl.DataFrame:
        shaped = lines.filter(_is_object(pl.col("line")))
        records = _read_records(shaped)
        good = pl.concat([shaped, records], how="horizontal").filter(pl.col("_ok"))
        bad_json = lines.join(good.select("source_line"), on="source_line", how="anti")
        parsed = self._fields(good)
        bad = bad_json.select(
            "source_line", pl.lit("bad_json").alias("parse_error"), pl.col("line").alias("raw")
        )
        return pl.concat([parsed, conform(bad, PARSED)], how="vertical")

    def _fields(self, df: pl.DataFrame) -> pl.DataFrame:
        inbound = pl.col("receivedAt").is_not_null()
        origin = pl.coalesce("from", "sender")
        destination = pl.coalesce("to", "destination")
        has_at = origin.str.contains("@", literal=True).fill_null(False) | destination.str.contains(
            "@", literal=True
        ).fill_null(False)
        channel = pl.col("channel").str.to_lowercase()
        df = df.with_columns(
            pl.coalesce("receivedAt", "sentAt").alias("_when"),
            pl.coalesce("smsCount", "messageCount").alias("_units"),
            pl.col("price").struct.field("pricePerMessage").alias("_price"),
        )
        df = with_timestamps(df, {"_when": "_event", "doneAt": "_end"}, TIME_FORMATS)
        event_time, end_time = pl.col("_event"), pl.col("_end")
        units = number("_units", pl.Int64())
        price = number("_price", pl.Float64())
        out = df.select(
            "source_line",
            pl.col("messageId").alias("record_id"),
            event_time.alias("event_time"),
            end_time.alias("end_time"),
            pl.when(channel.is_not_null())
            .then(channel)  # one outside CHANNELS is kept as channel_detail (pipeline.transform)
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
                    (bad_value("_when", event_time), "bad_timestamp:event_time"),
                    (bad_value("doneAt", end_time), "bad_timestamp:end_time"),
                    (bad_value("_units", units), "bad_number:units"),
                    (bad_value("_price", price), "bad_number:price"),
                ]
            ).alias("parse_error"),
            pl.col("line").alias("raw"),
        )
        return conform(out, PARSED)


def _read_records(shaped: pl.DataFrame) -> pl.DataFrame:
    """JSON objects of the lines, with `_ok` false for lines that are not valid JSON."""
    if not len(shaped):
        return pl.DataFrame(schema={**READ_SCHEMA, "_ok": pl.Boolean()})
    text = shaped.get_column("line").str.join("\n").item().encode()
    try:
        recs = pl.read_ndjson(io.BytesIO(text), schema=READ_SCHEMA)
        if len(recs) == len(shaped):
            return recs.with_columns(pl.lit(True).alias("_ok"))
    except pl.exceptions.PolarsError:
        pass
    # Some line is not valid JSON: find which, line by line (rare, so the slow path is fine).
    ok = []
    for line in shaped.get_column("line").to_list():
        try:
            ok.append(isinstance(json.loads(line), dict))
        except ValueError:
            ok.append(False)
    okay = pl.Series("_ok", ok)
    valid = shaped.filter(okay).get_column("line").to_list()
    recs = (
        pl.read_ndjson(io.StringIO("\n".join(valid)), schema=READ_SCHEMA)
        if valid
        else pl.DataFrame(schema=READ_SCHEMA)
    )
    # Re-align: valid lines get their record, invalid lines a row of nulls.
    idx = pl.Series("_i", range(len(ok))).filter(okay)
    aligned = (
        pl.DataFrame({"_i": range(len(ok))})
        .join(pl.concat([idx.to_frame(), recs], how="horizontal"), on="_i", how="left")
        .drop("_i")
    )
    return aligned.with_columns(okay)

"""Reference readers: each format read again by the simplest code that can read it (Python's
`csv` and `json` modules, one record at a time), independent of the ingest's fast readers.

`verify --deep` compares what these find in the bronze original with the records kept in gold:
a reader that reshapes rows (a column lost, a field shifted, an ID replaced) keeps commitments
that match its own wrong output, so only a second, independent reading can notice it.

Each reader yields `(source_line, fields)` for every record of the original, where `fields` holds
the values a record retains (`RETAINED`) as the original writes them, already in the types gold
holds them in (UTC timestamps, floats, ints, strings). Values that do not read are None.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow.parquet as pq

from pipeline.core.layout import derived_record_id
from pipeline.records.formats import (
    ASTERISK,
    FREESWITCH,
    INBOUND_CONTEXT,
    LEAP_SECOND,
    LEAP_SECOND_AS,
)

#: the retained fields compared, in this order: every field a source writes and gold keeps
#: (the parties are compared through the commitments: gold holds no end user's identifier)
RETAINED = (
    "record_id", "event_time", "end_time", "channel", "channel_detail", "direction",
    "customer_id", "origin_network", "destination_network", "route_id", "duration_s", "units",
    "status", "error_code", "price", "currency",
)  # fmt: skip

Record = tuple[int, dict[str, Any]]

# Ingest reads a field of any length that fits a record (`MAX_RECORD_BYTES` for a quoted one,
# any unquoted line): so does this reader, past the `csv` module's 128 KiB default.
csv.field_size_limit(2**31 - 1)
_UNIQUEID = re.compile(r"^\d+\.\d+$")
_INBOUND = re.compile(INBOUND_CONTEXT)
_LEAP = re.compile(LEAP_SECOND)
_CHANNEL_SUFFIX = re.compile(r"-[0-9a-fA-F]+$")


class _Chunks(io.RawIOBase):
    """A readable stream over an iterator of byte chunks (the decrypted original)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks, self._buf = iter(chunks), b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._buf:
            try:
                self._buf = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._buf))
        buffer[:n], self._buf = self._buf[:n], self._buf[n:]
        return n


def _text(chunks: Iterable[bytes]) -> io.TextIOWrapper:
    stream = io.BufferedReader(_Chunks(chunks), 1 << 20)
    return io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline="")


#: the columns every canonical file has (how its header is told from a data line)
_NEEDED = frozenset({"record_id", "event_time", "origin", "destination"})


class _Delimited:
    """A canonical CSV's chunks, with the delimiter its header line is written in: the
    first of `,`, `;` and tab that splits it into the columns a canonical file needs."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._first = next(self._chunks, b"")
        line = self._first.decode("utf-8", "replace").lstrip("\ufeff\r\n \t")
        line = line.replace("\r", "\n").split("\n", 1)[0]
        fits = [d for d in ",;\t" if {c.strip().strip('"') for c in line.split(d)} >= _NEEDED]
        self.delimiter = fits[0] if fits else ","

    def __iter__(self) -> Iterator[bytes]:
        yield self._first
        yield from self._chunks


def _csv_records(chunks: Iterable[bytes]) -> Iterator[tuple[int, list[str]]]:
    """CSV records with the physical line each starts on; blank lines skipped."""
    delimiter = getattr(chunks, "delimiter", ",")
    reader = csv.reader(_text(chunks), delimiter=delimiter)
    last = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error:
            row = ["?"]  # malformed: still a record, counted, never matching a kept one
        start, last = last + 1, reader.line_num
        # blank as ingest reads it: the whole line is whitespace (`,,,` is an empty record)
        if row and (len(row) > 1 or row[0].strip(_WHITESPACE)):
            yield start, row


def _str(value: Any, strip: bool = True) -> str | None:
    """Text as a reader keeps it: CSV fields trimmed (empty is null), others as written."""
    if value is None:
        return None
    if not strip:
        return str(value)
    return str(value).strip(_WHITESPACE) or None


#: what the CSV readers trim: Unicode white space, as polars' `strip_chars` (Python's `strip`
#: also takes the ASCII separators U+001C to U+001F, which are control characters here)
_WHITESPACE = "".join(chr(c) for c in range(0x3001) if chr(c).isspace() and not 0x1C <= c <= 0x1F)


def _num(value: Any, kind: Callable[[float], Any] = float) -> Any:
    try:
        return kind(float(str(value).strip())) if _str(value) is not None else None
    except (TypeError, ValueError, OverflowError):
        return None


def _zone(ctx: dict[str, Any]) -> dt.tzinfo | None:
    """The zone ingest read the source's times without an offset in (None: unknown)."""
    return ZoneInfo(ctx["timezone"]) if ctx.get("timezone") else None


def _time(value: Any, tz: dt.tzinfo | None) -> dt.datetime | None:
    """A time as UTC: with its offset, or in the source's zone `tz` (None: not placed)."""
    text = _str(value)
    if text is None:
        return None
    text = _LEAP.sub(r"\1:" + LEAP_SECOND_AS, text)
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        if tz is None:
            return None
        parsed = parsed.replace(tzinfo=tz)
    return parsed.astimezone(dt.UTC)


def _canonical(v: dict[str, Any], strip: bool, tz: dt.tzinfo | None) -> dict[str, Any]:
    """The retained fields of one canonical record, read the same from CSV (`strip`: fields
    trimmed) or Parquet (typed: as written)."""
    text = {f: _str(v.get(f), strip) for f in RETAINED}
    return {
        **text,
        "event_time": _time(v.get("event_time"), tz),
        "end_time": _time(v.get("end_time"), tz),
        "duration_s": _num(v.get("duration_s")),
        "units": _num(v.get("units"), int),
        "price": _num(v.get("price")),
    }


def canonical_csv(chunks: Iterable[bytes], ctx: dict[str, Any]) -> Iterator[Record]:
    records = _csv_records(_Delimited(chunks))
    header = next(records, (0, []))[1]
    names = [n.strip() for n in header]
    for line, row in records:
        if len(row) != len(names):
            yield line, {"record_id": None}
            continue
        yield line, _canonical(dict(zip(names, row, strict=True)), True, _zone(ctx))


def canonical_parquet(chunks: Iterable[bytes], ctx: dict[str, Any]) -> Iterator[Record]:
    table = pq.read_table(io.BytesIO(b"".join(chunks)))
    for i, v in enumerate(table.to_pylist(), start=1):
        yield i, _canonical(v, False, _zone(ctx))


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _message(v: dict[str, Any], tz: dt.tzinfo | None) -> dict[str, Any]:
    status = v.get("status") if isinstance(v.get("status"), dict) else {}
    error = v.get("error") if isinstance(v.get("error"), dict) else {}
    price = v.get("price") if isinstance(v.get("price"), dict) else {}
    inbound = v.get("receivedAt") is not None
    parties = (_first(v.get("from"), v.get("sender")), _first(v.get("to"), v.get("destination")))
    email = any("@" in str(p) for p in parties if p is not None)
    network = _str(v.get("mccMnc"), strip=False)
    return {
        "record_id": _str(v.get("messageId"), strip=False),
        "event_time": _time(_first(v.get("receivedAt"), v.get("sentAt")), tz),
        "end_time": _time(v.get("doneAt"), tz),
        "channel": _str(_first(v.get("channel"), "email" if email else "sms"), strip=False),
        "channel_detail": None,
        "direction": "inbound" if inbound else "outbound",
        "customer_id": _str(
            _first(v.get("customerId"), v.get("applicationId"), v.get("entityId")), strip=False
        ),
        "origin_network": network if inbound else None,
        "destination_network": None if inbound else network,
        "route_id": _str(v.get("route"), strip=False),
        "duration_s": None,
        "units": _num(_first(v.get("smsCount"), v.get("messageCount")), int),
        "status": _str(_first(status.get("groupName"), status.get("name")), strip=False),
        "error_code": _str(error.get("name"), strip=False),
        "price": _num(price.get("pricePerMessage")),
        "currency": _str(price.get("currency"), strip=False),
    }


def messaging(chunks: Iterable[bytes], ctx: dict[str, Any]) -> Iterator[Record]:
    text = _text(chunks)
    head = text.read(256)
    if head.lstrip().startswith("{") and '"results"' in head:
        doc = json.loads(head + text.read())
        for i, v in enumerate(doc.get("results") or [], start=1):
            yield i, _message(v, _zone(ctx)) if isinstance(v, dict) else {"record_id": None}
        return
    for n, line in enumerate((head + text.read()).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            v = json.loads(line)
        except ValueError:
            v = None
        yield n, _message(v, _zone(ctx)) if isinstance(v, dict) else {"record_id": None}


def _pbx(names: list[str], widths: set[int], fields: Callable[..., dict[str, Any]]):  # type: ignore[no-untyped-def]
    def read(chunks: Iterable[bytes], ctx: dict[str, Any]) -> Iterator[Record]:
        tz = _zone(ctx)
        for line, row in _csv_records(chunks):
            if len(row) not in widths:
                yield line, {"record_id": None}
                continue
            v = {k: _str(x) for k, x in zip(names, row, strict=False)}
            yield line, fields(v, len(row), line, ctx, tz)

    return read


def _call(
    v: dict[str, Any], tz: dt.tzinfo | None, start: str, end: str, context: str
) -> dict[str, Any]:
    """What both PBXs write alike: a voice call, its times in the PBX's zone, its length."""
    return {
        "event_time": _time(v.get(start), tz),
        "end_time": _time(v.get(end), tz),
        "channel": "voice",
        "channel_detail": None,
        "direction": "inbound" if _INBOUND.search(v.get(context) or "") else "outbound",
        "customer_id": v.get("accountcode"),
        "origin_network": None,
        "destination_network": None,
        "duration_s": _num(v.get("duration")),
        "units": _num(v.get("billsec"), int),
        "price": None,
        "currency": None,
    }


def _asterisk(v: dict[str, Any], width: int, line: int, ctx: dict[str, Any], tz: dt.tzinfo | None) -> dict[str, Any]:  # fmt: skip
    call = _call(v, tz, "start", "end", "dcontext")
    uid = v.get("uniqueid")
    if not (uid and (width == 18 or _UNIQUEID.match(uid))):  # numbered across a zip's members
        uid = derived_record_id(ctx["sha256"], line + ctx.get("line_offset", 0))
    trunk = v.get("channel") if call["direction"] == "inbound" else v.get("dstchannel")
    route = _CHANNEL_SUFFIX.sub("", trunk) if trunk is not None else None
    return {**call, "record_id": uid, "route_id": route, "status": v.get("disposition"),
            "error_code": None}  # fmt: skip


def _freeswitch(v: dict[str, Any], width: int, line: int, ctx: dict[str, Any], tz: dt.tzinfo | None) -> dict[str, Any]:  # fmt: skip
    call = _call(v, tz, "start_stamp", "end_stamp", "context")
    cause = v.get("hangup_cause")
    return {**call, "record_id": v.get("uuid"), "route_id": v.get("context"), "status": cause,
            "error_code": cause if cause != "NORMAL_CLEARING" else None}  # fmt: skip


Reader = Callable[[Iterable[bytes], dict[str, Any]], Iterator[Record]]
READERS: dict[str, Reader] = {
    "canonical_csv": canonical_csv,
    "canonical_parquet": canonical_parquet,
    "messaging": messaging,
    "asterisk": _pbx(ASTERISK, {16, 17, 18}, _asterisk),
    "freeswitch": _pbx(FREESWITCH, {15}, _freeswitch),
}

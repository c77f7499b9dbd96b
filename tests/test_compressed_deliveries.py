"""Compressed and re-encoded deliveries as operators' systems send them: gzip from a cron job
(also under a `.csv` name), bzip2, xz, zips made on Windows and macOS, UTF-16 exports. Each case
is the file, the command and the check; `verify --deep` reads every original again as ingest
opened it (the autouse deep check after every test)."""

from __future__ import annotations

import bz2
import codecs
import datetime as dt
import gzip
import hashlib
import io
import lzma
import zipfile
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from pipeline.cli import main as cli
from pipeline.core import layout
from pipeline.core.config import Settings
from pipeline.core.resources import Resources
from pipeline.proof.integrity import read_entry
from pipeline.records.synth import generate
from tests.helpers import read_tier

AS_OF = "2025-06-15"
START = dt.date(2025, 3, 1)


@pytest.fixture
def res(local_env: dict[str, str]) -> Resources:
    return Resources.from_settings(Settings.from_env(local_env))


def _ingest(*paths: Path, code: int = 0) -> None:
    assert cli(["ingest", "--as-of", AS_OF, "--default-region", "PK", *map(str, paths)]) == code


def _entry(res: Resources, delivered: bytes) -> dict:  # type: ignore[type-arg]
    entry = read_entry(res.store, layout.parse_key(hashlib.sha256(delivered).hexdigest()))
    assert entry is not None
    return entry["body"]  # type: ignore[no-any-return]


def _zip(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buf.getvalue()


def _damaged(data: bytes) -> bytes:
    """Bytes flipped in the middle of the compressed stream (a bad disk, a bad transfer)."""
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0x5A for b in data[middle : middle + 16]) + data[middle + 16 :]


WRAPS: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "gzip": ("cdrs.csv.gz", gzip.compress),
    "gzip under a .csv name": ("cdrs.csv", gzip.compress),
    "bzip2": ("cdrs.csv.bz2", bz2.compress),
    "xz": ("cdrs.csv.xz", lzma.compress),
    "zip": ("cdrs.zip", lambda b: _zip({"cdrs.csv": b})),
    "stored zip": ("cdrs.zip", lambda b: _zip({"cdrs.csv": b}, zipfile.ZIP_STORED)),
    "utf-16 with a BOM": ("cdrs.csv", lambda b: b.decode().encode("utf-16")),
    "utf-16-be with a BOM": (
        "cdrs.csv",
        lambda b: codecs.BOM_UTF16_BE + b.decode().encode("utf-16-be"),
    ),
    "utf-16 without a BOM": ("cdrs.csv", lambda b: b.decode().encode("utf-16-le")),
    "gzip of utf-16": ("cdrs.csv.gz", lambda b: gzip.compress(b.decode().encode("utf-16"))),
}


@pytest.mark.parametrize("wrap", list(WRAPS))
def test_a_wrapped_delivery_is_read_as_the_plain_file_is(
    res: Resources,
    local_env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    wrap: str,
) -> None:
    """The same records, delivered plain in one store and wrapped in another, give the same
    gold; the seal covers the bytes delivered, the signed parse entry each member's digest."""
    g = generate("canonical_csv", tmp_path / "plain" / "cdrs.csv", 1500, start=START)
    plain = g.path.read_bytes()
    _ingest(g.path)
    expected = read_tier(res.store, "gold/").drop("source_file", "ingest_id", strict=False)
    name, wrapper = WRAPS[wrap]
    delivered = wrapper(plain)
    path = tmp_path / "wrapped" / name
    path.parent.mkdir()
    path.write_bytes(delivered)
    store_env = {n: str(tmp_path / n) for n in ("CDR_STORE", "CDR_KEYRING", "CDR_DATA_DOCS")}
    other = Resources.from_settings(Settings.from_env({**local_env, **store_env}))
    with pytest.MonkeyPatch.context() as mp:
        for k, v in store_env.items():
            mp.setenv(k, v)
        _ingest(path)
        capsys.readouterr()
        assert cli(["verify", "--deep"]) == 0
        assert "original (deep)  ok (1,500 records re-read)" in capsys.readouterr().out
    got = read_tier(other.store, "gold/").drop("source_file", "ingest_id", strict=False)
    keys = ["record_id", "event_time", "channel", "direction", "duration_s", "route_id"]
    assert sorted(got.select(keys).rows(), key=repr) == sorted(expected.select(keys).rows(), key=repr)  # fmt: skip
    body = _entry(other, delivered)
    assert body["status"] == "ingested" and body["records"] == 1500
    seal = read_entry(other.store, layout.seal_key(hashlib.sha256(delivered).hexdigest()))
    assert seal is not None and seal["body"]["size"] == len(delivered)
    [member] = body["unpacked"]["members"]
    raw = plain if "utf-16" not in wrap else plain.decode().encode("utf-16")
    if wrap in ("utf-16-be with a BOM", "utf-16 without a BOM"):
        raw = delivered
    assert member["sha256"] == hashlib.sha256(raw).hexdigest() and member["bytes"] == len(raw)
    assert member["member"] == "cdrs.csv"
    assert ("encoding" in member) == ("utf-16" in wrap)


def test_a_zip_of_many_pbx_files_keeps_every_call_once(
    res: Resources, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A zip of a month of daily Asterisk files (made on a Mac: a folder and `__MACOSX`
    entries beside them): every call of every member, each record ID derived from its line
    unique across members, folders and metadata skipped and listed."""
    members: dict[str, bytes] = {"cdr/": b""}
    for day in range(3):
        g = generate("asterisk", tmp_path / f"Master-{day}.csv", 400, seed=day + 3, start=START, bad_share=0.0)  # fmt: skip
        # 17-field lines (no userfield) with uniqueids a PBX restarts each day: derived IDs
        lines = [line.rsplit(",", 2)[0] + ',"1"' for line in g.path.read_text().splitlines()]
        members[f"cdr/Master-{day}.csv"] = ("\n".join(lines) + "\n").encode()
        members[f"__MACOSX/cdr/._Master-{day}.csv"] = b"\x00\x05\x16\x07junk"
    path = tmp_path / "march.zip"
    path.write_bytes(_zip(members))
    _ingest(path)
    body = _entry(res, path.read_bytes())
    assert body["format"] == "asterisk" and body["records"] == 1200
    assert [m["member"] for m in body["unpacked"]["members"]] == [f"Master-{d}.csv" for d in range(3)]  # fmt: skip
    assert len(body["unpacked"]["skipped_members"]) == 4
    kept = pl.concat([read_tier(res.store, "gold/"), read_tier(res.store, "quarantine/rows/")], how="diagonal")  # fmt: skip
    lines = kept.get_column("source_line")
    assert lines.n_unique() == 1200 and lines.max() == 1200
    gold = read_tier(res.store, "gold/")
    assert gold.get_column("record_id").n_unique() == len(gold)
    capsys.readouterr()
    assert cli(["verify", "--deep"]) == 0


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda b: gzip.compress(b)[:-40], "compressed:gzip"),
        (lambda b: b"\x28\xb5\x2f\xfd" + b[:100], "compressed:zstd"),
        (lambda b: b"7z\xbc\xaf\x27\x1c" + b[:100], "compressed:7z"),
        (lambda b: gzip.compress(gzip.compress(b)), "compressed:gzip"),
        (lambda b: _damaged(gzip.compress(b)), "compressed:gzip"),
        (lambda b: _damaged(_zip({"a.csv": b})), "compressed:zip"),
        (lambda b: _damaged(_zip({"a.csv": b}, zipfile.ZIP_LZMA)), "compressed:zip"),
        (lambda b: _zip({f"d{i}.csv": b for i in range(2001)}), "compressed:zip"),
        (lambda b: _zip({"a.csv": b})[:-30], "compressed:zip"),
        (
            lambda b: _zip({"a.csv": b, "b.jsonl": b'{"messageId": "m1"}\n'}),
            "compressed:mixed_formats",
        ),
        (lambda b: _zip({"readme/": b""}), "compressed:zip"),
        (lambda b: b.decode().encode("utf-16") + b"\x00", "encoding:utf-16"),
        (lambda b: b"+/v8" + b, "encoding:utf-7"),
        (lambda b: b.replace(b",", b"|"), "delimiter"),
        (lambda b: gzip.compress(b"\x00\x01binary" * 50), "unrecognised_format"),
    ],
    ids=[
        "truncated gzip",
        "zstd",
        "7z",
        "gzip in gzip",
        "damaged deflate in gzip",
        "damaged deflate in zip",
        "damaged lzma in zip",
        "too many members",
        "truncated zip",
        "mixed formats",
        "zip of folders",
        "odd utf-16",
        "utf-7",
        "pipes",
        "gzip of binary",
    ],
)
def test_a_delivery_that_cannot_be_opened_is_quarantined_naming_its_cause(
    res: Resources,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make: Callable[[bytes], bytes],
    reason: str,
) -> None:
    """Never `unrecognised_format` with no hint: the refusal says what the file is and what
    to send instead; the delivered bytes are sealed and kept, `verify` is green (a final
    state), and no number from the file is in the report."""
    g = generate("canonical_csv", tmp_path / "src.csv", 50, start=START, bad_share=0.0)
    path = tmp_path / "delivery.csv"
    path.write_bytes(make(g.path.read_bytes()))
    _ingest(path)
    out = capsys.readouterr()
    body = _entry(res, path.read_bytes())
    assert body["status"] == "quarantined_file" and body["reason"] == reason
    assert reason in out.out + out.err
    assert "+92" not in out.out + out.err + body["detail"]
    assert any(layout.is_bronze(k) for k in body["outputs"])
    assert cli(["verify"]) == 0


def test_a_decompression_bomb_is_stopped_at_its_limit(
    res: Resources, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A gzip that grows 1000× (a header, then 72 MB of line ends) is stopped once it passes
    the ratio, and a plain-sized file past `CDR_UNPACK_MAX_BYTES`: both
    `too_large_when_decompressed`, sealed and kept, nothing published."""
    line = b"b1,2025-03-02T10:00:00Z,sms,outbound,InfoSMS,+923001234567\n"
    bomb = tmp_path / "bomb.csv.gz"
    bomb.write_bytes(gzip.compress(b"record_id,event_time,channel,direction,origin,destination\n" + line + b"\n" * 72_000_000, 9))  # fmt: skip
    assert bomb.stat().st_size * 500 < 72e6
    _ingest(bomb)
    body = _entry(res, bomb.read_bytes())
    assert body["reason"] == "too_large_when_decompressed"
    assert not list(res.store.list("gold/")) and not list(res.store.list("silver/"))
    small = tmp_path / "small.csv.xz"
    small.write_bytes(lzma.compress(b"record_id,event_time,channel,direction,origin,destination\n" + line.replace(b"b1", b"s1") * 2000))  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CDR_UNPACK_MAX_BYTES", "100000")
        _ingest(small)
        assert _entry(res, small.read_bytes())["reason"] == "too_large_when_decompressed"
    capsys.readouterr()
    assert cli(["verify"]) == 0


def test_a_compressed_delivery_of_nothing_is_empty_and_verifies(
    res: Resources, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`gzip` of a file a PBX rotated with no calls: the `empty` state, not a failure."""
    path = tmp_path / "Master.csv.gz"
    path.write_bytes(gzip.compress(b""))
    _ingest(path)
    body = _entry(res, path.read_bytes())
    assert body["status"] == "empty" and body["unpacked"]["members"][0]["bytes"] == 0
    capsys.readouterr()
    assert cli(["verify"]) == 0


def test_a_member_named_with_a_number_is_never_named_in_the_clear(
    res: Resources, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A zip member named after a subscriber (`+923001234567.csv`) is labelled like a file."""
    g = generate("canonical_csv", tmp_path / "src.csv", 30, start=START, bad_share=0.0)
    path = tmp_path / "export.zip"
    path.write_bytes(_zip({"+923001234567.csv": g.path.read_bytes()}))
    _ingest(path)
    out = capsys.readouterr()
    body = _entry(res, path.read_bytes())
    assert "923001234567" not in str(body) + out.out + out.err
    assert body["unpacked"]["members"][0]["member"].startswith("file-")


def test_deep_verify_sees_a_member_that_differs_from_its_signed_digest(
    res: Resources, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The check `verify --deep` makes on members can fail: a parse entry whose member digest
    is not what the original decompresses to is reported."""
    from pipeline.flows.verify import FileCheck, check_original

    g = generate("canonical_csv", tmp_path / "src.csv", 40, start=START, bad_share=0.0)
    path = tmp_path / "cdrs.csv.gz"
    path.write_bytes(gzip.compress(g.path.read_bytes()))
    _ingest(path)
    body = _entry(res, path.read_bytes())
    check = FileCheck(hashlib.sha256(path.read_bytes()).hexdigest(), body["file"])
    check_original(res, check, body)
    assert check.checks["original (deep)"].startswith("ok")
    body["unpacked"]["members"][0]["sha256"] = "0" * 64
    check = FileCheck(hashlib.sha256(path.read_bytes()).hexdigest(), body["file"])
    check_original(res, check, body)
    assert check.checks["original (deep)"] == "FAIL"
    assert any("no longer opens as it did at ingest (members)" in p for p in check.problems)


def test_the_same_records_in_another_format_or_wrapping_are_a_redelivery(
    res: Resources, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given by path without `--source` as CSV, then as Parquet, then gzipped: one source for
    the deployment (`CDR_DEFAULT_SOURCE`), so the second and third are found as re-deliveries
    and gold counts each record once."""
    g = generate("canonical_csv", tmp_path / "cdrs.csv", 300, start=START, bad_share=0.0)
    parquet = tmp_path / "cdrs.parquet"
    pl.read_csv(g.path, infer_schema=False).write_parquet(parquet)
    gz = tmp_path / "cdrs-again.csv.gz"
    gz.write_bytes(gzip.compress(g.path.read_bytes()))
    _ingest(g.path)
    kept = len(read_tier(res.store, "gold/"))
    assert kept == 300
    _ingest(parquet, gz)
    assert len(read_tier(res.store, "gold/")) == kept
    for delivered in (parquet.read_bytes(), gz.read_bytes()):
        body = _entry(res, delivered)
        assert body["source"] == "default" and body["reasons"] == {"duplicate_record_id": 300}


def test_a_plain_csv_that_starts_like_a_magic_number_is_read_as_csv() -> None:
    """`BZh9,` or `PK` alone start a CSV as well as an archive: the second magic is required."""
    from pipeline.records.unpack import compression_of

    assert compression_of(b"BZh9,2025-03-01,sms\n") is None
    assert compression_of(bz2.compress(b"x")) == "bzip2"
    assert compression_of(bz2.compress(b"")) == "bzip2"
    assert compression_of(b"PK,record_id\n") is None


def test_a_member_of_blank_records_or_only_a_bom_keeps_lines_and_ids_aligned(
    res: Resources, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A member ending in a line of separators only (an empty record, quarantined), a member
    that is a UTF-16 byte-order mark and nothing else: the members after them are numbered
    alike by ingest and by `verify --deep`, which finds every record where gold keeps it."""
    header = b"record_id,event_time,channel,direction,origin,destination\n"
    a = header + b"a1,2025-03-02T10:00:00Z,sms,outbound,InfoSMS,+923001234567\n,,,,,\n"
    b = header + b"b1,2025-03-02T11:00:00Z,sms,outbound,InfoSMS,+923001234568\n"
    path = tmp_path / "day.zip"
    path.write_bytes(_zip({"a.csv": a, "bom.csv": codecs.BOM_UTF16_LE, "b.csv": b}))
    _ingest(path)
    body = _entry(res, path.read_bytes())
    assert body["status"] == "ingested" and body["records"] == 3 and body["gold"] == 2
    gold = read_tier(res.store, "gold/").sort("source_line")
    assert gold.select("record_id", "source_line").rows() == [("a1", 2), ("b1", 5)]
    capsys.readouterr()
    assert cli(["verify", "--deep"]) == 0

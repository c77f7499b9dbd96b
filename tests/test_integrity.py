"""Original form (Pakistan): tampering with any layer is caught and named, and gold records still
verify against their original seal after the identifiers and keys are gone."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from pipeline.core.keys import LocalKeyring
from pipeline.core.layout import seal_key
from pipeline.core.resources import Resources
from pipeline.core.store import ObjectStore
from pipeline.flows.ingest import ingest_file
from pipeline.flows.retention import RetentionRequest, run_retention
from pipeline.flows.verify import VerifyReport, VerifyRequest, run_verify
from pipeline.proof.integrity import sign
from pipeline.records.synth import generate
from tests.helpers import read_tier


def _ingest(res: Resources, tmp_path: Path) -> str:
    g = generate(
        "canonical_csv",
        tmp_path / "cdr.csv",
        1500,
        start=dt.date(2025, 3, 1),
        months=2,
        bad_share=0.03,
    )
    return ingest_file(res, g.path, as_of=dt.date(2025, 6, 1)).sha256


def _check(res: Resources) -> VerifyReport:
    return run_verify(res, VerifyRequest(expectations=False))


def _rewrite(store: ObjectStore, key: str, change) -> None:  # type: ignore[no-untyped-def]
    frame = pl.from_arrow(pq.read_table(io.BytesIO(store.get_bytes(key))))
    buf = io.BytesIO()
    change(frame).write_parquet(buf)
    store.put_bytes(key, buf.getvalue())


def _part(tier: str, month: str, sha: str) -> str:
    y, m = month.split("-")
    return f"{tier}/cdr/year={y}/month={m}/part-{sha}.parquet"


def test_an_untouched_store_verifies(res: Resources, tmp_path: Path) -> None:
    _ingest(res, tmp_path)
    report = _check(res)
    assert report.ok, report.problems()
    checks = report.files[0].checks
    assert {"seal", "bronze", "proofs", "quarantine", "gold 2025-03", "silver 2025-04"} <= set(
        checks
    )


def test_a_flipped_byte_in_bronze_is_named(res: Resources, tmp_path: Path) -> None:
    sha = _ingest(res, tmp_path)
    key = f"bronze/default/{sha}.enc"
    data = bytearray(res.bronze.get_bytes(key))
    data[len(data) // 2] ^= 0x01
    res.bronze.put_bytes(key, bytes(data))
    report = _check(res)
    assert not report.ok
    assert report.files[0].checks["bronze"] == "FAIL"
    assert any(key in p and "cdr.csv" in p for p in report.problems())


def test_a_row_deleted_from_silver_is_named(res: Resources, tmp_path: Path) -> None:
    sha = _ingest(res, tmp_path)
    _rewrite(res.store, _part("silver", "2025-03", sha), lambda f: f.slice(1))
    report = _check(res)
    assert report.files[0].checks["silver 2025-03"] == "FAIL"
    assert any("records deleted" in p for p in report.problems())
    assert report.files[0].checks["gold 2025-03"].startswith("ok")


@pytest.mark.tampers
def test_a_changed_duration_in_gold_names_the_record(res: Resources, tmp_path: Path) -> None:
    sha = _ingest(res, tmp_path)
    key = _part("gold", "2025-04", sha)
    gold = pl.from_arrow(pq.read_table(io.BytesIO(res.store.get_bytes(key))))
    target = gold.filter(pl.col("duration_s").is_not_null()).get_column("record_id")[0]
    _rewrite(res.store, key, lambda f: f.with_columns(
        pl.when(pl.col("record_id") == target).then(pl.col("duration_s") + 1).otherwise(pl.col("duration_s")).alias("duration_s")
    ))  # fmt: skip
    report = _check(res)
    assert report.files[0].checks["gold 2025-04"] == "FAIL"
    assert any(f"record {target} " in p and "differs" in p for p in report.problems())


@pytest.mark.parametrize("how", ["copy", "forged"])
@pytest.mark.tampers
def test_a_record_added_to_gold_is_named(res: Resources, tmp_path: Path, how: str) -> None:
    sha = _ingest(res, tmp_path)
    key = _part("gold", "2025-03", sha)

    def add(f: pl.DataFrame) -> pl.DataFrame:
        extra = f.head(1).with_columns(pl.lit("FORGED-1").alias("record_id"))
        if how == "forged":
            extra = extra.with_columns(pl.lit(10**9, pl.Int64).alias("leaf_index"))
        return pl.concat([f, extra])

    _rewrite(res.store, key, add)
    report = _check(res)
    assert report.files[0].checks["gold 2025-03"] == "FAIL"
    assert any(("more than once" in p or "not in the sealed tree" in p) for p in report.problems())


def test_a_seal_re_signed_with_another_key_is_named(res: Resources, tmp_path: Path) -> None:
    sha = _ingest(res, tmp_path)
    entry = json.loads(res.store.get_bytes(seal_key(sha)))
    other = LocalKeyring(tmp_path / "intruder").signing_key()
    body = {k: v for k, v in entry["body"].items() if k != "signer"}
    res.store.put_bytes(seal_key(sha), json.dumps(sign(body, other)).encode())
    report = _check(res)
    assert report.files[0].checks["seal"] == "FAIL"
    assert any("cdr.csv" in p and "seal" in p for p in report.problems())


def test_a_swapped_pair_of_audit_entries_is_named(res: Resources, tmp_path: Path) -> None:
    _ingest(res, tmp_path)
    a, b = "audit/000000000001.json", "audit/000000000002.json"
    first, second = res.store.get_bytes(a), res.store.get_bytes(b)
    res.store.put_bytes(a, second)
    res.store.put_bytes(b, first)
    report = _check(res)
    assert not report.ok and report.audit_problem and a in report.audit_problem


def test_gold_verifies_against_the_original_seal_after_the_purge(
    res: Resources, tmp_path: Path
) -> None:
    sha = _ingest(res, tmp_path)
    run_retention(res, RetentionRequest(dt.date(2026, 6, 1)))
    assert not res.keyring.has_data_key("month-2025-03")
    assert not res.keyring.has_data_key(f"file-{sha}")  # every key of the file is gone
    assert not list(res.store.list("silver/"))
    report = _check(res)
    assert report.ok, report.problems()
    checks = report.files[0].checks
    assert checks["gold 2025-03"].startswith("ok") and checks["gold 2025-04"].startswith("ok")
    assert checks["silver 2025-03"].startswith("skipped") and checks["bronze"].startswith("skipped")
    # ...and tampering is still caught then.
    _rewrite(
        res.store,
        _part("gold", "2025-03", sha),
        lambda f: f.with_columns(pl.lit("XX").alias("destination_country")),
    )
    assert not _check(res).ok


def test_a_phone_number_smuggled_into_a_free_text_field_is_masked_counted_and_never_stored(
    res: Resources, tmp_path: Path
) -> None:
    """A status text carrying a number is masked before any tier is written; the expectations
    (which refuse a file with a number in status: tests/test_quality.py) stay a second line."""
    bad = tmp_path / "smuggled.csv"
    bad.write_text(
        "record_id,event_time,channel,direction,origin,destination,status\n"
        "s1,2025-05-02T10:00:00Z,sms,outbound,InfoSMS,+923001234567,DELIVERED\n"
        "s2,2025-05-02T11:00:00Z,sms,outbound,InfoSMS,+923001234568,call me on 0300-7654321\n"
    )
    report = ingest_file(res, bad, as_of=dt.date(2025, 6, 1))
    assert report.status == "ingested" and report.gold == 2
    assert report.scrubbed.get("masked:status") == 1
    statuses = set(read_tier(res.store, "gold").get_column("status"))
    assert statuses == {"DELIVERED", "masked"}
    for tier in ("silver", "gold"):
        for obj in res.store.list(f"{tier}/"):
            assert b"7654321" not in res.store.get_bytes(obj.key), obj.key
    for obj in res.store.list("seals/"):
        assert b"7654321" not in res.store.get_bytes(obj.key), obj.key


def test_identity_commitments_do_not_link_records_of_the_same_parties(
    res: Resources, tmp_path: Path
) -> None:
    _ingest(res, tmp_path)
    silver = read_tier(res.store, "silver/")
    pairs = silver.select("origin", "destination").n_unique()
    assert pairs < len(silver)  # the same parties recur across records
    for tier in ("silver/", "gold/"):
        commitments = read_tier(res.store, tier).get_column("identity_commitment")
        assert commitments.n_unique() == len(commitments), tier


def _flip_in_first_page(store: ObjectStore, key: str) -> None:
    """Flip one byte inside the first data page of a Parquet object (a damaged disk block)."""
    data = bytearray(store.get_bytes(key))
    meta = pq.ParquetFile(io.BytesIO(bytes(data))).metadata
    column = meta.row_group(0).column(0)
    data[column.data_page_offset + column.total_compressed_size // 2] ^= 0xFF
    store.put_bytes(key, bytes(data))


def test_a_flipped_byte_in_a_gold_page_is_a_named_failure_and_other_files_are_checked(
    res: Resources, tmp_path: Path
) -> None:
    sha = _ingest(res, tmp_path)
    g = generate(
        "messaging_jsonl", tmp_path / "other.jsonl", 300, start=dt.date(2025, 3, 1), months=1
    )
    other = ingest_file(res, g.path, as_of=dt.date(2025, 6, 1)).sha256
    key = _part("gold", "2025-03", sha)
    _flip_in_first_page(res.store, key)
    report = _check(res)  # no exception escapes
    assert not report.ok
    damaged = next(f for f in report.files if f.sha256 == sha)
    assert damaged.checks["gold 2025-03"] == "FAIL"
    assert any(key in p and "cannot be read" in p and "cdr.csv" in p for p in report.problems())
    assert damaged.checks["gold 2025-04"].startswith("ok")  # the file's other objects too
    healthy = next(f for f in report.files if f.sha256 == other)
    assert not healthy.problems and healthy.checks["proofs"] == "ok"


def test_a_damaged_parse_entry_is_named_not_raised(res: Resources, tmp_path: Path) -> None:
    sha = _ingest(res, tmp_path)
    res.store.put_bytes(f"seals/{sha}.parse.json", b'{"body": {"fi')
    report = _check(res)
    assert not report.ok
    assert any(f"seals/{sha}.parse.json cannot be read" in p for p in report.problems())


@pytest.mark.parametrize(
    "args", [["--file", "nothere"], ["--month", "2026-1"], ["--month", "2031-01"]]
)
def test_verify_with_a_filter_matching_nothing_exits_2(
    res: Resources, tmp_path: Path, local_env: dict[str, str], args: list[str], capsys
) -> None:  # type: ignore[no-untyped-def]
    from pipeline.cli import main as cli
    from pipeline.core.config import Settings

    ingest_file(
        Resources.from_settings(Settings.from_env()),
        generate("canonical_csv", tmp_path / "c.csv", 50, start=dt.date(2025, 3, 1)).path,
        as_of=dt.date(2025, 6, 1),
    )
    assert cli(["verify", *args]) == 2
    out = capsys.readouterr()
    assert "VERIFIED" not in out.out and "error:" in out.err
    assert cli(["verify", "--month", "2025-03"]) == 0

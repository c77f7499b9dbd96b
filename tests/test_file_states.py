"""Every sealed file ends in a signed state that summary, verify and retention see, and no
identifier outlives its month in any form: failed and refused files, future dates, files
spanning months."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main as cli
from pipeline.core.config import Settings
from pipeline.flows import ingest
from pipeline.flows.ingest import Resources, copy_into_landing
from pipeline.proof.integrity import parse_key, read_entry
from tests.helpers import read_tier

FAR_FUTURE = "2040-01-01"


@pytest.fixture
def res(local_env: dict[str, str]) -> Resources:
    return Resources.from_settings(Settings.from_env(local_env))


def run(*args: str) -> int:
    return cli(list(args))


def smuggled(tmp_path: Path) -> Path:
    """A file for the expectations to refuse (see `refusing_gold_suite`)."""
    p = tmp_path / "smuggled.csv"
    p.write_text(
        "record_id,event_time,channel,direction,origin,destination,status\n"
        "s1,2025-05-02T10:00:00Z,sms,outbound,InfoSMS,+923001234567,DELIVERED\n"
        "s2,2025-05-02T11:00:00Z,sms,outbound,InfoSMS,+923001234568,DELIVERED\n"
    )
    return p


@pytest.fixture
def refusing_gold_suite(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real suites run, and the gold suite reports one more failed expectation: bad data
    now leaves row by row, so a refusal is what a stricter suite of the future would do."""
    real = ingest._validate

    def validate(*args: object, **kwargs: object) -> dict[str, list[str]]:
        failed = real(*args, **kwargs)  # type: ignore[arg-type]
        return {**failed, "gold": [*failed.get("gold", []), "expect_column_values_to_be_in_set(status)"]}  # fmt: skip

    monkeypatch.setattr(ingest, "_validate", validate)


def damaged_parquet(tmp_path: Path) -> Path:
    """A Parquet export whose footer is intact but whose data pages are damaged."""
    n = 5000
    table = pa.table(
        {
            "record_id": [f"r{i}" for i in range(n)],
            "event_time": ["2025-05-02T10:00:00Z"] * n,
            "origin": ["InfoSMS"] * n,
            "destination": ["+923001234567"] * n,
        }
    )
    p = tmp_path / "export.parquet"
    pq.write_table(table, p, compression="zstd", use_dictionary=False)
    data = bytearray(p.read_bytes())
    for i in range(200, 260):
        data[i] ^= 0x5A
    p.write_bytes(bytes(data))
    return p


def test_refused_and_failed_files_reach_a_signed_state_and_are_purged_on_time(
    res: Resources, tmp_path: Path, capsys: pytest.CaptureFixture[str], refusing_gold_suite: None
) -> None:
    files = {"refused": smuggled(tmp_path), "failed": damaged_parquet(tmp_path)}
    shas = {s: hashlib.sha256(p.read_bytes()).hexdigest() for s, p in files.items()}
    for p in files.values():
        copy_into_landing(res.store, p, "operator-a")
    assert run("ingest", "--landing", "--as-of", "2025-06-15") == 1
    # The plaintext left landing once the originals were safe in bronze; nothing is retried.
    assert list(res.store.list("landing/")) == []
    assert run("ingest", "--landing", "--as-of", "2025-06-15") == 0
    for status, sha in shas.items():
        entry = read_entry(res.store, parse_key(sha))
        assert entry is not None and entry["body"]["status"] == status
        assert res.store.exists(f"bronze/operator-a/{sha}.enc")
    assert read_entry(res.store, parse_key(shas["refused"]))["body"]["months"] == ["2025-05"]  # type: ignore[index]
    capsys.readouterr()

    assert run("summary") == 0
    out = capsys.readouterr().out
    assert "FILE REFUSED: smuggled.csv" in out and "FILE FAILED: export.parquet" in out
    # refused is final (quarantined whole); failed is not: its records are only in bronze
    assert run("verify") == 1
    out = capsys.readouterr().out
    assert "refused: " in out and "failed: ArrowInvalid" in out
    assert "NOT VERIFIED: 1 sealed file not ingested" in out and "MISMATCHES" not in out

    # The refused file held May 2025: its original goes on May's purge date, not a day later.
    assert run("retention", "--as-of", "2026-05-31") == 0
    assert res.store.exists(f"bronze/operator-a/{shas['refused']}.enc")
    assert run("retention", "--as-of", "2026-06-01") == 0
    assert not res.store.exists(f"bronze/operator-a/{shas['refused']}.enc")
    assert not res.keyring.has_data_key(f"file-{shas['refused']}")
    # The failed file's months are unknown: it follows its arrival month (today).
    assert run("retention", "--as-of", FAR_FUTURE, "--allow-future-as-of", "--confirm") == 0
    assert "Verified: nothing identifying is left" in capsys.readouterr().out
    assert not any(True for _ in res.store.list("bronze/"))
    assert not res.keyring.data_key_names("file-")


def test_future_dates_never_reach_the_tiers_and_leave_nothing_behind(
    res: Resources, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "export.csv"
    p.write_text(
        "record_id,event_time,channel,direction,origin,destination\n"
        "f1,2026-03-10T10:00:00Z,sms,outbound,InfoSMS,+923001234567\n"
        "f2,2027-01-01T10:00:00Z,sms,outbound,InfoSMS,+923001234568\n"
        "f3,2099-12-31T10:00:00Z,sms,outbound,InfoSMS,+923001234569\n"
    )
    assert run("ingest", "--as-of", "2026-03-15", "--default-region", "PK", str(p)) == 0
    reasons = read_tier(res.store, "quarantine/rows/").get_column("reason").to_list()
    assert reasons == ["future_timestamp", "future_timestamp"]
    assert [o.key.split("/")[2:4] for o in res.store.list("silver/")] == [["year=2026", "month=03"]]
    assert res.keyring.data_key_names("month-") == ["month-2026-03"]
    assert run("retention", "--as-of", FAR_FUTURE, "--allow-future-as-of", "--confirm") == 0
    for prefix in ("bronze/", "silver/", "vault/", "quarantine/rows/"):
        assert not any(True for _ in res.store.list(prefix)), prefix
    assert not res.keyring.data_key_names("month-") and not res.keyring.data_key_names("file-")


def test_a_file_spanning_two_months_loses_its_original_at_the_first_months_purge(
    res: Resources, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "export.csv"
    p.write_text(
        "record_id,event_time,channel,direction,origin,destination\n"
        "j1,2025-06-30T23:59:59Z,sms,outbound,InfoSMS,+923001234567\n"
        "j2,2025-07-01T00:00:00Z,sms,outbound,InfoSMS,+923001234568\n"
    )
    assert run("ingest", "--as-of", "2025-07-02", "--default-region", "PK", str(p)) == 0
    sha = hashlib.sha256(p.read_bytes()).hexdigest()
    assert run("retention", "--as-of", "2026-07-01") == 0  # June's purge date; July's is August
    # June's identifiers are readable from the original no more: bronze and file key are gone.
    assert not res.store.exists(f"bronze/default/{sha}.enc")
    assert not res.keyring.has_data_key(f"file-{sha}")
    # July keeps its silver and vault, and every kept record still verifies.
    silver = read_tier(res.store, "silver/")
    assert silver.get_column("record_id").to_list() == ["j2"]
    assert res.keyring.data_key_names("month-") == ["month-2025-07"]
    capsys.readouterr()
    assert run("verify") == 0
    out = capsys.readouterr().out
    assert "VERIFIED" in out and "bronze           skipped: purged" in out
    body = json.loads(res.store.get_bytes(f"seals/{sha}.parse.json"))["body"]
    assert body["months"] == ["2025-06", "2025-07"]


def test_verify_is_never_green_while_a_sealed_file_is_not_ingested(
    res: Resources,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An ingest killed after sealing leaves a seal and no parse entry: verify names the file as
    not ingested yet and exits 1 (also for one month, and as JSON) until it is ingested."""
    header = "record_id,event_time,channel,direction,origin,destination\n"
    done, cut = tmp_path / "done.csv", tmp_path / "cut.csv"
    done.write_text(header + "d1,2025-05-02T10:00:00Z,sms,outbound,InfoSMS,+923001234567\n")
    cut.write_text(header + "c1,2025-05-02T10:00:00Z,sms,outbound,InfoSMS,+923001234568\n")
    assert run("ingest", "--as-of", "2025-06-01", "--default-region", "PK", str(done)) == 0

    real = ingest._parse_into_tiers

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # as far as the store can tell, the process died here

    monkeypatch.setattr(ingest, "_parse_into_tiers", killed)
    with pytest.raises(KeyboardInterrupt):
        ingest.ingest_file(res, cut, as_of=dt.date(2025, 6, 1))
    assert res.store.exists(f"seals/{hashlib.sha256(cut.read_bytes()).hexdigest()}.seal.json")
    capsys.readouterr()
    assert run("verify") == 1  # never green over a gap
    out = capsys.readouterr().out
    assert "sealed, not parsed" in out and "\nVERIFIED" not in out
    assert "NOT VERIFIED: 1 sealed file not ingested yet" in out
    assert "cut.csv" in out.split("NOT VERIFIED")[1]
    # the same for one month (its months are unknown: it is listed for every month), and as JSON
    assert run("verify", "--month", "2025-05", "--json") == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False
    assert [f["gap"] for f in data["files"] if f["file"] == "cut.csv"] == [
        "sealed, not parsed: rerun ingest"
    ]
    # ingested after all, the store is whole again
    monkeypatch.setattr(ingest, "_parse_into_tiers", real)
    assert run("ingest", "--as-of", "2025-06-01", "--default-region", "PK", str(cut)) == 0
    capsys.readouterr()
    assert run("verify", "--month", "2025-05") == 0
    out = capsys.readouterr().out
    assert "VERIFIED: 2 files" in out, out


def test_an_engine_panic_on_a_file_fails_that_file_not_the_run(
    res: Resources, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """A polars panic is a `BaseException`: on a hostile file it must end the file as failed
    (signed, kept in bronze, nothing published), not escape past every handler."""
    hostile, fine = smuggled(tmp_path), tmp_path / "fine.csv"
    fine.write_text(
        "record_id,event_time,channel,direction,origin,destination\n"
        "k1,2025-05-02T10:00:00Z,sms,outbound,InfoSMS,+923001234567\n"
    )
    real = ingest.prepare

    def prepare(parsed, ctx, book):  # type: ignore[no-untyped-def]
        if ctx.source_file == hostile.name:
            raise pl.exceptions.PanicException("index out of bounds: +923001234567")
        return real(parsed, ctx, book)

    monkeypatch.setattr(ingest, "prepare", prepare)
    for p in (hostile, fine):
        copy_into_landing(res.store, p, "operator-a")
    assert run("ingest", "--landing", "--as-of", "2025-06-15", "--default-region", "PK") == 1
    out = capsys.readouterr()
    said = out.out + out.err + caplog.text
    assert "FAILED (PanicException)" in said and "923001234567" not in said
    assert list(res.store.list("landing/")) == []  # neither file is left to be retried
    sha = hashlib.sha256(hostile.read_bytes()).hexdigest()
    entry = read_entry(res.store, parse_key(sha))
    assert entry is not None and entry["body"]["status"] == "failed"
    assert res.store.exists(f"bronze/operator-a/{sha}.enc")
    assert not any(sha in o.key for o in res.store.list("silver/"))
    assert read_tier(res.store, "silver/").get_column("record_id").to_list() == ["k1"]
    # its records are in bronze and nowhere else: verify is not green until it is ingested
    assert run("verify") == 1
    out = capsys.readouterr().out
    assert "failed: PanicException" in out and "NOT VERIFIED: 1 sealed file not ingested" in out


def test_a_file_without_kept_records_verifies(
    res: Resources, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A header-only "no traffic" file and a file whose every record was quarantined keep no
    leaves: nothing to store in proofs, and nothing missing either."""
    header = "record_id,event_time,channel,direction,origin,destination\n"
    empty, rejected = tmp_path / "empty.csv", tmp_path / "rejected.csv"
    empty.write_text(header)
    rejected.write_text(header + "q1,2025-05-02T10:00:00Z,sms,outbound,InfoSMS,\n")
    assert run("ingest", "--as-of", "2025-06-01", "--default-region", "PK", str(empty), str(rejected)) == 0  # fmt: skip
    capsys.readouterr()
    assert run("verify", "--deep") == 0
    out = capsys.readouterr().out
    assert out.count("proofs           ok (no record kept)") == 2
    assert "VERIFIED: 2 files" in out

"""Ingest end to end on a local folder: reconciliation, one token per person, idempotency,
crash recovery, late arrivals, the tiers' contents, and no identifier in clear anywhere."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import polars as pl
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pipeline.cli import main as cli
from pipeline.core.config import Settings
from pipeline.core.layout import parse_key, seal_key
from pipeline.core.resources import Resources
from pipeline.flows.ingest import ingest_file
from pipeline.proof.crypto import decrypt_value
from pipeline.proof.integrity import SealError, read_entry, verify
from pipeline.records.bronze import read_original
from pipeline.records.schema import SILVER
from pipeline.records.synth import FORMATS, generate
from pipeline.records.tokenise import TOKEN_PATTERN
from tests.conftest import AS_OF
from tests.helpers import all_text_outputs, assert_no_identifiers, needles_for, read_tier

CONTENT = ["Your code is", "Hello, call us", "STOP +", "Your order"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_counts_reconcile_for_every_format(res: Resources, tmp_path: Path, fmt: str) -> None:
    g = generate(fmt, tmp_path / f"in.{fmt}", 3000, bad_share=0.05, start=dt.date(2025, 3, 1))
    report = ingest_file(res, g.path, as_of=AS_OF)
    assert report.status == "ingested"
    assert report.records == g.rows
    assert report.quarantined == g.bad_rows > 0
    assert report.gold == report.records - report.quarantined
    assert len(read_tier(res.store, "silver/")) == report.silver
    assert len(read_tier(res.store, "gold/")) == report.gold
    quarantined = read_tier(res.store, "quarantine/rows/")
    assert len(quarantined) == report.quarantined
    assert sum(report.reasons.values()) == report.quarantined
    # The signed parse entry states the same counts and names the seal it completes.
    public = res.keyring.public_key()
    seal = verify(read_entry(res.store, seal_key(report.sha256)), public)  # type: ignore[arg-type]
    parsed = verify(read_entry(res.store, parse_key(report.sha256)), public)  # type: ignore[arg-type]
    assert seal["sha256"] == report.sha256 == hashlib.sha256(g.path.read_bytes()).hexdigest()
    assert (parsed["records"], parsed["quarantined"], parsed["silver"]) == (
        report.records, report.quarantined, report.silver,
    )  # fmt: skip


def test_a_record_id_repeated_in_a_later_batch_is_quarantined(
    res: Resources, tmp_path: Path
) -> None:
    g = generate("canonical_csv", tmp_path / "in.csv", 2000, start=dt.date(2025, 3, 1))
    lines = g.path.read_text().splitlines()
    first_id = lines[1].split(",")[0]
    # Batches are 700 rows: line 1500 is in the third batch, far from the first.
    lines[1500] = ",".join([first_id, *lines[1500].split(",")[1:]])
    g.path.write_text("\n".join(lines) + "\n")
    report = ingest_file(res, g.path, as_of=AS_OF)
    assert report.reasons.get("duplicate_record_id") == 1
    assert report.gold + report.quarantined == report.records == 2000
    kept = read_tier(res.store, "gold/").get_column("record_id")
    assert kept.n_unique() == len(kept) and first_id in kept.to_list()
    quarantined = read_tier(res.store, "quarantine/rows/")
    repeat = quarantined.filter(pl.col("reason") == "duplicate_record_id")
    assert repeat.get_column("source_line").to_list() == [1501]  # the file's line number


def test_same_person_in_four_forms_across_two_files_and_formats_gets_one_token(
    res: Resources, tmp_path: Path
) -> None:
    csv = tmp_path / "operator.csv"
    csv.write_text(
        "record_id,event_time,channel,direction,origin,destination\n"
        "a1,2025-05-02T10:00:00Z,sms,outbound,InfoSMS,+92 300 1234567\n"
        "a2,2025-05-02T11:00:00Z,sms,outbound,InfoSMS,0300-1234567\n"
        "a3,2025-05-02T12:00:00Z,email,outbound,shop@example.net,Ali.Khan@Example.com\n"
    )
    jsonl = tmp_path / "messaging.jsonl"
    jsonl.write_text(
        '{"messageId":"b1","from":"InfoSMS","to":"00923001234567","sentAt":"2025-05-03T10:00:00.000+0000"}\n'
        '{"messageId":"b2","from":"923001234567","to":"8080","receivedAt":"2025-05-03T11:00:00.000+0000"}\n'
        '{"messageId":"b3","from":"shop@example.net","to":" ali.khan@example.COM","sentAt":"2025-05-03T12:00:00.000+0000"}\n'
    )
    ingest_file(res, csv, as_of=AS_OF)
    ingest_file(res, jsonl, as_of=AS_OF)
    silver = read_tier(res.store, "silver/")
    person = pl.concat(
        [
            silver.filter(pl.col("destination_kind") == "msisdn").select(t=pl.col("destination")),
            silver.filter(pl.col("origin_kind") == "msisdn").select(t=pl.col("origin")),
        ]
    ).get_column("t")
    assert len(person) == 4 and person.n_unique() == 1
    assert person[0].startswith("msisdn.v1.")
    emails = silver.filter(pl.col("destination_kind") == "email").get_column("destination")
    assert len(emails) == 2 and emails.n_unique() == 1 and emails[0].startswith("email.v1.")
    assert silver.filter(pl.col("destination_kind") == "msisdn").get_column(
        "destination_country"
    ).unique().to_list() == ["PK"]

    # Another keyring (another deployment) gives other tokens for the same person.
    other = Resources.from_settings(
        Settings.from_env({"CDR_STORE": str(tmp_path / "s2"), "CDR_KEYRING": str(tmp_path / "k2")})
    )
    ingest_file(other, csv, as_of=AS_OF, default_region="PK")
    other_tokens = set(read_tier(other.store, "silver/").get_column("destination").to_list())
    assert person[0] not in other_tokens


def _snapshot(res: Resources) -> dict[str, object]:
    silver = read_tier(res.store, "silver/").sort("record_id")
    gold = read_tier(res.store, "gold/").sort("record_id")
    vault = read_tier(res.store, "vault/").sort("token")
    quarantine = read_tier(res.store, "quarantine/rows/").drop("raw_encrypted").sort("source_line")
    return {
        "silver": silver.to_dicts(),
        "gold": gold.to_dicts(),
        "vault_tokens": vault.get_column("token").to_list(),
        "quarantine": quarantine.to_dicts(),
        "keys": sorted(o.key for o in res.store.list("") if not o.key.startswith("seals/")),
    }


def test_second_ingest_of_the_same_file_adds_nothing(res: Resources, tmp_path: Path) -> None:
    g = generate("canonical_csv", tmp_path / "a.csv", 2000, start=dt.date(2025, 4, 1))
    first = ingest_file(res, g.path, as_of=AS_OF)
    before = _snapshot(res)
    renamed = tmp_path / "same-bytes-other-name.csv"
    renamed.write_bytes(g.path.read_bytes())
    for path in (g.path, renamed):
        again = ingest_file(res, path, as_of=AS_OF)
        assert again.status == "already_ingested"
        assert again.sha256 == first.sha256
        assert again.records == 0
    assert _snapshot(res) == before


def test_crash_before_commit_then_rerun_equals_one_clean_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    g = generate(
        "messaging_jsonl", tmp_path / "m.jsonl", 2500, bad_share=0.05, start=dt.date(2025, 4, 1)
    )

    def resources(store: str) -> Resources:
        return Resources.from_settings(
            Settings.from_env(
                {"CDR_STORE": str(tmp_path / store), "CDR_KEYRING": str(tmp_path / "keys"),
                 "CDR_BATCH_ROWS": "600"}
            )
        )  # fmt: skip

    clean = resources("clean")
    ingest_file(clean, g.path, as_of=AS_OF)

    crashed = resources("crashed")
    calls = {"n": 0}
    real_put_file = crashed.store.put_file

    def failing_put_file(key: str, path: Path, lock_until: object = None) -> None:
        calls["n"] += 1
        if calls["n"] == 4:  # dies half-way through publishing the parts
            raise OSError("simulated crash")
        real_put_file(key, path)

    monkeypatch.setattr(crashed.store, "put_file", failing_put_file)
    with pytest.raises(OSError):
        ingest_file(crashed, g.path, as_of=AS_OF)
    assert (
        read_entry(crashed.store, parse_key(hashlib.sha256(g.path.read_bytes()).hexdigest()))
        is None
    )
    monkeypatch.setattr(crashed.store, "put_file", real_put_file)
    rerun = ingest_file(crashed, g.path, as_of=AS_OF)
    assert rerun.status == "ingested"
    assert _snapshot(crashed) == _snapshot(clean)


def test_gold_has_no_personal_value_or_token_and_silver_no_content(
    res: Resources, tmp_path: Path
) -> None:
    for fmt in ("canonical_csv", "messaging_jsonl", "asterisk"):
        g = generate(fmt, tmp_path / f"x.{fmt}", 1500, start=dt.date(2025, 4, 1))
        ingest_file(res, g.path, as_of=AS_OF)
    silver = read_tier(res.store, "silver/")
    gold = read_tier(res.store, "gold/")
    assert silver.columns == list(SILVER) and gold.columns == list(SILVER)
    personal = ["msisdn", "email", "sip"]
    assert (
        gold.filter(pl.col("origin_kind").is_in(personal)).get_column("origin").null_count()
        == gold.filter(pl.col("origin_kind").is_in(personal)).height
    )
    assert (
        gold.filter(pl.col("destination_kind").is_in(personal))
        .get_column("destination")
        .null_count()
        == gold.filter(pl.col("destination_kind").is_in(personal)).height
    )
    for col in gold.columns:
        if gold.schema[col] == pl.String:
            assert not gold.get_column(col).str.contains(r"(msisdn|email|sip)\.v\d+\.").any(), col
    # Business identifiers stay literal in gold: routing data, not personal data.
    assert {"InfoSMS", "8080"} & set(gold.get_column("origin").drop_nulls().to_list())
    assert (
        silver.filter(pl.col("origin_kind") == "msisdn")
        .get_column("origin")
        .str.contains(TOKEN_PATTERN)
        .all()
    )
    assert gold.get_column("destination_country").null_count() < len(gold)
    texts = list(all_text_outputs(res.store))
    for phrase in CONTENT:
        assert not [k for k, t in texts if phrase in t and not k.startswith("bronze/")], phrase


def test_no_identifier_in_any_output_reason_log_or_cli_output(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    for k, v in {"CDR_STORE": settings.store, "CDR_KEYRING": settings.keyring,
                 "CDR_DATA_DOCS": settings.data_docs, "CDR_DEFAULT_REGION": "PK",
                 "CDR_BATCH_ROWS": "700"}.items():  # fmt: skip
        monkeypatch.setenv(k, v)
    files, numbers, emails = [], set(), set()
    for seed, fmt in enumerate(FORMATS):
        g = generate(
            fmt,
            tmp_path / "in" / f"f.{fmt}",
            1200,
            bad_share=0.05,
            seed=seed,
            start=dt.date(2025, 3, 1),  # three months, all before the run's date
        )
        files.append(str(g.path))
        numbers |= g.numbers
        emails |= g.emails
    assert len(numbers) > 100 and len(emails) > 10
    caplog.set_level(logging.DEBUG)
    assert cli(["-v", "ingest", "--as-of", AS_OF.isoformat(), "--data-docs", *files]) == 0
    out = capsys.readouterr()
    needles = needles_for(numbers, emails)
    store = Resources.from_settings(settings).store
    texts = [("stdout", out.out), ("stderr", out.err), ("log", caplog.text)]
    texts += [(k, t) for k, t in all_text_outputs(store)]
    docs = [
        (str(p), p.read_text("latin-1")) for p in Path(settings.data_docs).rglob("*") if p.is_file()
    ]
    assert any(p.endswith("index.html") for p, _ in docs)  # Data Docs were built, and searched
    texts += docs
    assert_no_identifiers(texts, needles)
    reasons = read_tier(store, "quarantine/rows/").get_column("reason").unique().to_list()
    assert all(r.split(":")[0] in {"bad_json", "bad_timestamp", "missing_id", "wrong_column_count",
               "unparseable_number", "missing_destination", "duplicate_record_id"} for r in reasons), reasons  # fmt: skip
    assert "records" in out.out and "TOTAL" in out.out


def test_vault_reidentifies_every_silver_token_of_its_month(res: Resources, tmp_path: Path) -> None:
    g = generate("messaging_jsonl", tmp_path / "m.jsonl", 1500, start=dt.date(2025, 4, 1), months=2)
    ingest_file(res, g.path, as_of=AS_OF)
    silver = read_tier(res.store, "silver/")
    for (year, month), part in silver.group_by(
        pl.col("event_time").dt.year().alias("y"), pl.col("event_time").dt.month().alias("m")
    ):
        vault = read_tier(res.store, f"vault/year={year:04d}/month={month:02d}/")
        gcm = AESGCM(res.keyring.data_key(f"month-{year:04d}-{month:02d}", create=False))
        clear = {
            t: decrypt_value(gcm, blob, t.encode()).decode()
            for t, blob in vault.select("token", "identifier_encrypted").iter_rows()
        }
        used = set(
            part.filter(pl.col("destination_kind").is_in(["msisdn", "email"])).get_column(
                "destination"
            )
        )
        assert used <= set(clear)
        # The sender's own address is an e-mail too: tokenised like any other, never guessed.
        assert set(clear.values()) <= g.numbers | g.emails | {"noreply@shop.example.com"}
        assert vault.get_column("token").n_unique() == len(vault)  # once per distinct identifier


def test_late_arrivals_go_to_gold_only_with_exact_month_boundaries(
    res: Resources, tmp_path: Path
) -> None:
    csv = tmp_path / "late.csv"
    csv.write_text(
        "record_id,event_time,channel,direction,origin,destination\n"
        "l1,2024-05-31T23:59:59Z,sms,outbound,InfoSMS,+923001234567\n"  # purge day 2025-06-01
        "l2,2024-06-01T00:00:00Z,sms,outbound,InfoSMS,+923001234568\n"  # purge day 2025-07-01
        "l3,2024-02-29T12:00:00Z,sms,outbound,InfoSMS,+923001234569\n"  # purge day 2025-03-01
    )
    report = ingest_file(res, csv, as_of=dt.date(2025, 6, 1))
    assert (report.gold, report.silver, report.gold_only) == (3, 1, 2)
    silver = read_tier(res.store, "silver/")
    assert silver.get_column("record_id").to_list() == ["l2"]
    assert not res.keyring.has_data_key("month-2024-05")
    assert not res.keyring.has_data_key("month-2024-02")
    assert res.keyring.has_data_key("month-2024-06")
    assert not list(res.store.list("vault/year=2024/month=05/"))
    gold = read_tier(res.store, "gold/")
    assert sorted(gold.get_column("record_id").to_list()) == ["l1", "l2", "l3"]
    assert gold.get_column("destination").null_count() == 3
    assert gold.get_column("destination_country").to_list() == ["PK"] * 3


def test_bronze_holds_the_exact_original_and_the_seal_verifies(
    res: Resources, tmp_path: Path
) -> None:
    g = generate("asterisk", tmp_path / "Master.csv", 800, start=dt.date(2025, 4, 1))
    report = ingest_file(res, g.path, as_of=AS_OF)
    key = f"bronze/default/{report.sha256}.enc"
    assert key in report.outputs
    file_key = res.keyring.data_key(f"file-{report.sha256}", create=False)
    assert b"".join(read_original(res.store, key, report.sha256, file_key)) == g.path.read_bytes()
    assert g.path.read_bytes()[:40] not in res.store.get_bytes(key)
    entry = read_entry(res.store, seal_key(report.sha256))
    assert entry is not None
    body = verify(entry, res.keyring.public_key())
    assert (body["size"], body["source"], body["file"]) == (
        g.path.stat().st_size,
        "default",  # CDR_DEFAULT_SOURCE: a file given by path without --source
        "Master.csv",
    )
    forged = json.loads(json.dumps(entry))
    forged["body"]["size"] += 1
    with pytest.raises(SealError):
        verify(forged, res.keyring.public_key())


def test_unreadable_file_is_quarantined_whole_and_said_so(res: Resources, tmp_path: Path) -> None:
    bad = tmp_path / "garbage.bin"
    bad.write_bytes(b"\x00\xff not a cdr file at all\n")
    report = ingest_file(res, bad, as_of=AS_OF)
    assert report.status == "quarantined_file"
    assert "unrecognised_format" in (report.detail or "")
    note = json.loads(res.store.get_bytes(f"quarantine/files/{report.sha256}.json"))
    assert note["reason"] == "unrecognised_format"
    assert res.store.exists(f"bronze/default/{report.sha256}.enc")
    assert ingest_file(res, bad, as_of=AS_OF).status == "already_ingested"


def test_cli_reports_bad_arguments_and_missing_files(capsys: pytest.CaptureFixture[str], settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("CDR_STORE", settings.store)
    monkeypatch.setenv("CDR_KEYRING", settings.keyring)
    with pytest.raises(SystemExit) as exit_:
        cli(["ingest", "--as-of", "2025-02-30", "x"])
    assert exit_.value.code == 2
    assert "not a date" in capsys.readouterr().err
    assert cli(["ingest", "/nonexistent/file.csv"]) == 2
    assert capsys.readouterr().err == "error: no such file or folder: /nonexistent/file.csv\n"


@pytest.mark.parametrize("lost", ["seal", "ingest"])
def test_an_audit_write_lost_in_a_crash_is_written_by_the_rerun(
    res: Resources, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lost: str
) -> None:
    from pipeline.proof.audit import read_log, verify_log

    g = generate("canonical_csv", tmp_path / "in.csv", 300, start=dt.date(2025, 3, 1))
    sha = hashlib.sha256(g.path.read_bytes()).hexdigest()
    real = res.store.put_new

    def dying(key: str, data: bytes) -> bool:
        committed = res.store.exists(parse_key(sha))
        if key.startswith("audit/") and committed == (lost == "ingest"):
            raise OSError("connection lost")
        return real(key, data)

    monkeypatch.setattr(res.store, "put_new", dying)
    with pytest.raises(OSError):
        ingest_file(res, g.path, as_of=AS_OF)
    monkeypatch.setattr(res.store, "put_new", real)
    ingest_file(res, g.path, as_of=AS_OF)
    events = [e["event"] for e in read_log(res.store)]
    assert events == [f"seal:{sha}", f"ingest:{sha}"]
    assert verify_log(res.store, res.keyring.public_key()).ok
    assert ingest_file(res, g.path, as_of=AS_OF).status == "already_ingested"
    assert [e["event"] for e in read_log(res.store)] == events


def test_the_same_bytes_under_two_names_at_once_are_ingested_by_one_run(
    res: Resources, tmp_path: Path
) -> None:
    import shutil
    import threading

    from pipeline.flows.verify import VerifyRequest, run_verify
    from pipeline.proof.audit import read_log

    g = generate("canonical_csv", tmp_path / "cdr.csv", 1500, start=dt.date(2025, 3, 1))
    other = tmp_path / "cdr-resent.csv"
    shutil.copy(g.path, other)
    reading, go_on = threading.Event(), threading.Event()

    def paused(rows: int) -> None:  # the first run stops after its first batch, before publishing
        reading.set()
        go_on.wait(60)

    first: dict[str, object] = {}
    worker = threading.Thread(
        target=lambda: first.update(report=ingest_file(res, g.path, as_of=AS_OF, progress=paused))
    )
    worker.start()
    assert reading.wait(60)
    second = ingest_file(res, other, as_of=AS_OF)
    go_on.set()
    worker.join(120)
    assert second.status == "in_progress"
    assert first["report"].status == "ingested"  # type: ignore[attr-defined]
    assert ingest_file(res, other, as_of=AS_OF).status == "already_ingested"
    assert not list(res.store.list("leases/"))
    assert run_verify(res, VerifyRequest(expectations=False)).ok
    ingests = [e for e in read_log(res.store) if e["action"] == "ingest"]
    assert len(ingests) == 1 and ingests[0]["what"]["file"] == "cdr.csv"


def test_an_expired_lease_is_taken_over(res: Resources, tmp_path: Path) -> None:
    from pipeline.core import layout
    from pipeline.flows.ingest import lease

    g = generate("canonical_csv", tmp_path / "cdr.csv", 200, start=dt.date(2025, 3, 1))
    sha = hashlib.sha256(g.path.read_bytes()).hexdigest()
    dead = {"owner": "a run that died", "expires": "2026-01-01T00:00:00+00:00"}
    res.store.put_bytes(layout.lease_key(sha), json.dumps(dead).encode())
    assert ingest_file(res, g.path, as_of=AS_OF).status == "ingested"
    with lease(res.store, sha) as held, lease(res.store, sha) as second:
        assert held and not second  # a live lease keeps others out


def test_the_lease_of_a_killed_run_not_yet_reaped_is_taken_over(
    res: Resources, tmp_path: Path
) -> None:
    """Right after `kill -9` the run's PID still answers a signal until its parent reaps it (a
    zombie); a rerun then must not wait out the lease as if the run were still ingesting."""
    import signal
    import subprocess
    import sys

    from pipeline.core import layout, staging

    g = generate("canonical_csv", tmp_path / "cdr.csv", 200, start=dt.date(2025, 3, 1))
    sha = hashlib.sha256(g.path.read_bytes()).hexdigest()
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        os.kill(victim.pid, signal.SIGKILL)
        for _ in range(100):  # killed, not reaped: its state turns to Z
            if Path(f"/proc/{victim.pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z":
                break
            time.sleep(0.05)
        tag = f"{staging.owner_tag().split('-')[0]}-{victim.pid}-"
        assert staging.dead_here(tag + "x")
        expires = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
        held = {"owner": f"someone/{tag}abc", "expires": expires}
        res.store.put_bytes(layout.lease_key(sha), json.dumps(held).encode())
        assert ingest_file(res, g.path, as_of=AS_OF).status == "ingested"
    finally:
        victim.wait(10)
    assert not staging.dead_here(f"{staging.owner_tag()}x")  # this process is alive

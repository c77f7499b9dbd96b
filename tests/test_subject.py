"""Data subject requests end to end on generated data: a person's own records and nobody
else's identifiers, erasure refused or carried out as the policy says, restriction honoured by
exports, and no identifier anywhere outside the encrypted request and package."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from pathlib import Path

import polars as pl
import pytest

from pipeline.cli import main as cli
from pipeline.core.config import Settings
from pipeline.core.policy import DEFAULT_FILE, parse_policy
from pipeline.core.resources import Resources
from pipeline.flows.export import run_export
from pipeline.flows.export_request import ExportRequest
from pipeline.flows.ingest import ingest_file
from pipeline.flows.retention import RetentionRequest, run_retention
from pipeline.flows.subject import (
    SubjectRequest,
    SubjectRequestError,
    SubjectRun,
    create_subject_request,
    deadline_alert,
    run_subject_request,
)
from pipeline.proof.access_package import verify_access
from pipeline.proof.audit import read_log, verify_log
from pipeline.records.synth import Generated, generate
from tests.helpers import (
    all_text_outputs,
    assert_no_identifiers,
    needles_for,
    read_tier,
    repacked,
    resigned,
)
from tests.test_export import _pem_pair

INGEST_DAY = dt.date(2025, 6, 1)
PURGE_DAY = dt.date(2026, 4, 1)  # March 2025's identifiers go; April's stay until 2026-05-01
PERMISSIVE = DEFAULT_FILE.read_text().replace(
    "erasure_before_retention_ends = false", "erasure_before_retention_ends = true"
)


def _ingested(res: Resources, tmp_path: Path) -> Generated:
    g = generate(
        "canonical_csv", tmp_path / "cdr.csv", 3000, start=dt.date(2025, 3, 1), months=2,
        bad_share=0.0, people=50,
    )  # fmt: skip
    ingest_file(res, g.path, as_of=INGEST_DAY)
    return g


def _person(g: Generated) -> dict[str, str]:
    """A Pakistani end user with records in both months."""
    assert g.truth is not None
    people = g.truth.group_by("e164", "email").len().sort("len", "e164", descending=True)
    return people.filter(pl.col("e164").str.starts_with("+92")).row(0, named=True)


def _written(person: dict[str, str]) -> list[str]:
    """The person as they would write themselves: national number, and e-mail in capitals."""
    e164 = person["e164"]
    return ["0" + e164[3:6] + "-" + e164[6:], person["email"].upper()]


def _truth(g: Generated, person: dict[str, str], months: set[int]) -> set[str]:
    assert g.truth is not None
    t = g.truth.filter(pl.col("event_time").dt.month().is_in(months), pl.col("bad") < 0)
    mine = ((pl.col("e164") == person["e164"]) & (pl.col("channel") != "email")) | (
        (pl.col("email") == person["email"]) & (pl.col("channel") == "email")
    )
    return set(t.filter(mine).get_column("record_id"))


def _others(g: Generated, person: dict[str, str]) -> list[str]:
    return needles_for(g.numbers - {person["e164"]}, g.emails - {person["email"]})


def _request(ref: str, kind: str, ids: list[str], **changes: object) -> SubjectRequest:
    fields = {
        "case": ref,
        "type": kind,
        "identifiers": ids,
        "identity_verified_by": "counter check ID-2026-118",
        "received": "2026-04-10",
        "requested_by": "dpo.officer",
    } | changes
    return SubjectRequest.from_mapping(fields)


def _outside(res: Resources) -> list[tuple[str, str]]:
    """Every object but the encrypted request and package."""
    return [
        (k, t)
        for k, t in all_text_outputs(res.store)
        if not k.endswith((".cdrs", "request.enc", ".cdrx"))
    ]


@pytest.fixture(params=["local", "s3"])
def any_res(request: pytest.FixtureRequest, settings: Settings) -> Resources:
    if request.param == "local":
        return Resources.from_settings(settings)
    env = request.getfixturevalue("s3_env") | {"CDR_DEFAULT_REGION": "PK", "CDR_BATCH_ROWS": "900"}
    return Resources.from_settings(Settings.from_env(env))


def test_access_returns_exactly_the_persons_live_records_and_nobody_elses_identifier(
    any_res: Resources, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    res = any_res
    g = _ingested(res, tmp_path)
    run_retention(res, RetentionRequest(PURGE_DAY))
    person = _person(g)
    caplog.set_level(logging.INFO)
    status = create_subject_request(
        res, _request("DSR-1", "access", _written(person)), dt.datetime(2026, 4, 12, tzinfo=dt.UTC)
    )
    assert status["deadline"] == "2026-05-10" and status["state"] == "open"
    passphrase = status["passphrase"]
    answer = run_subject_request(res, SubjectRun("DSR-1", dt.date(2026, 4, 15)))

    assert answer.outcome == "delivered"
    verdict = verify_access(
        res.store.get_bytes(answer.done["package"]),
        res.keyring.public_key_pem().encode(),
        passphrase=passphrase,
    )
    assert verdict.ok, verdict.problems
    records = json.loads(verdict.files["records.json"])["records"]
    assert {r["record_id"] for r in records} == _truth(g, person, {4}) != set()
    assert {r["your_identifier"] for r in records} == {person["e164"], person["email"]}
    kinds = {r["counterparty_kind"] for r in records}
    assert {"sender id", "e-mail address"} <= kinds
    mailers = {r["counterparty_domain"] for r in records if r["counterparty_kind"] == "e-mail address"}  # fmt: skip
    assert mailers == {"shop.example.com"}  # the domain gold keeps, never the address
    # A purged month is reported, in the package and in the answer.
    assert answer.done["purged_months"] == [{"month": "2025-03", "purged_on": "2026-04-01"}]
    assert "2025-03: identifiers deleted on 2026-04-01" in verdict.files["README.txt"].decode()
    assert "2025-03" in res.store.get_bytes("requests/DSR-1/response.txt").decode()
    # No other end user's identifier anywhere in the package.
    package = [(name, data.decode("latin-1")) for name, data in verdict.files.items()]
    assert_no_identifiers(package, _others(g, person))
    # The person's own identifiers nowhere outside the encrypted request and package.
    mine = needles_for({person["e164"]}, {person["email"]})
    assert_no_identifiers(_outside(res), mine)
    assert_no_identifiers([("log", caplog.text)], mine)
    entry = read_log(res.store)[-1]
    assert entry["action"] == "subject_request_answered" and entry["what"]["records"] == len(
        records
    )
    assert verify_log(res.store, res.keyring.public_key()).ok

    # A changed byte fails; so does a wrong passphrase.
    blob = bytearray(res.store.get_bytes(answer.done["package"]))
    blob[len(blob) // 2] ^= 1
    seal = res.keyring.public_key_pem().encode()
    assert not verify_access(bytes(blob), seal, passphrase=passphrase).ok
    wrong = verify_access(res.store.get_bytes(answer.done["package"]), seal, passphrase="x" * 20)
    assert "wrong passphrase" in " ".join(wrong.problems)


def test_access_package_to_a_recipient_key(res: Resources, tmp_path: Path) -> None:
    g = _ingested(res, tmp_path)
    person = _person(g)
    public, secret = _pem_pair()
    create_subject_request(
        res, _request("DSR-K", "access", [person["e164"]], recipient_key=public, received="2025-06-01"),
        dt.datetime(2025, 6, 2, tzinfo=dt.UTC),
    )  # fmt: skip
    answer = run_subject_request(res, SubjectRun("DSR-K", dt.date(2025, 6, 15)))
    verdict = verify_access(
        res.store.get_bytes(answer.done["package"]),
        res.keyring.public_key_pem().encode(),
        private_pem=secret,
    )
    assert verdict.ok, verdict.problems
    got = {r["record_id"] for r in json.loads(verdict.files["records.json"])["records"]}
    sms = _truth(g, person, {3, 4}) - _truth(g, {**person, "e164": ""}, {3, 4})
    assert got == sms != set()

    # records.json of another shape, even signed again with the seal key, is named, not a crash.
    blob, seal = res.store.get_bytes(answer.done["package"]), res.keyring.public_key_pem().encode()
    for body in (b"nope", b"{}", b'{"records": {"a": 1}}', b'{"records": [{}]}'):

        def put(files: dict[str, bytes], body: bytes = body) -> None:
            files["records.json"] = body

        forged = repacked(blob, secret, public, resigned(put, res.keyring.signing_key()))
        verdict = verify_access(forged, seal, private_pem=secret)
        assert verdict.problems == ["records.json is not a list of records"], body


def test_erasure_is_refused_under_a_retention_law_with_the_deletion_date(
    res: Resources, tmp_path: Path
) -> None:
    g = _ingested(res, tmp_path)
    person = _person(g)
    vault_before = read_tier(res.store, "vault/")
    create_subject_request(
        res, _request("DSR-2", "erasure", _written(person), received="2025-06-10"),
        dt.datetime(2025, 6, 12, tzinfo=dt.UTC),
    )  # fmt: skip
    answer = run_subject_request(res, SubjectRun("DSR-2", dt.date(2025, 6, 15)))
    assert answer.outcome == "refused"
    assert answer.refused["automatic_deletion"] == "2026-05-01"
    assert answer.refused["automatic_deletion_by_month"] == {
        "2025-03": "2026-04-01",
        "2025-04": "2026-05-01",
    }
    assert "Prevention of Electronic Crimes Act" in answer.refused["legal_basis"]
    text = res.store.get_bytes("requests/DSR-2/response.txt").decode()
    assert "deleted automatically by 2026-05-01" in text
    assert read_tier(res.store, "vault/").height == vault_before.height
    entry = read_log(res.store)[-1]
    assert entry["what"]["outcome"] == "refused" and "retention" in entry["why"]


def test_erasure_under_a_permitting_policy_removes_vault_entries_for_good(
    settings: Settings, tmp_path: Path
) -> None:
    res = Resources.from_settings(settings, parse_policy(PERMISSIVE, "permissive.toml"))
    g = _ingested(res, tmp_path)
    person = _person(g)
    create_subject_request(
        res, _request("DSR-3", "erasure", _written(person), received="2025-06-10"),
        dt.datetime(2025, 6, 12, tzinfo=dt.UTC),
    )  # fmt: skip
    vault_before = read_tier(res.store, "vault/").height
    answer = run_subject_request(res, SubjectRun("DSR-3", dt.date(2025, 6, 15)))
    assert answer.outcome == "erased" and answer.done["verified"]
    assert answer.done["vault_entries_left"] == 0
    assert vault_before - read_tier(res.store, "vault/").height == answer.done["vault_entries_deleted"] > 0  # fmt: skip

    # A later export finds the records but cannot re-identify the person.
    public, secret = _pem_pair()
    export = run_export(res, ExportRequest.from_mapping({
        "case": "LE-9", "authority": "FIA", "legal_basis": "PECA s.31", "requested_by": "a",
        "approved_by": "b", "identifiers": [person["e164"]], "date_from": "2025-03-01",
        "date_to": "2025-04-30", "recipient_key": public,
    }))  # fmt: skip
    from pipeline.proof.verify_export import verify_package

    opened = verify_package(res.store.get_bytes(export.package), secret, res.keyring.public_key_pem().encode())  # fmt: skip
    assert opened.ok, opened.problems
    found = pl.read_parquet(io.BytesIO(opened.files["records.parquet"]))
    sms = _truth(g, person, {3, 4}) - _truth(g, {**person, "e164": ""}, {3, 4})
    assert set(found.get_column("record_id")) == sms != set()
    csv = opened.files["records.csv"].decode()
    assert person["e164"] not in csv and person["e164"][-9:] not in csv
    assert opened.manifest["identity_check"]["unchecked"] == len(found)

    # A re-delivered file (the same records, other bytes) does not bring the entries back.
    # (Sent by another source: from the same source its records are duplicates, kept nowhere.)
    again = tmp_path / "redelivered.csv"
    again.write_bytes(g.path.read_bytes() + b"\n")
    report = ingest_file(res, again, as_of=INGEST_DAY, source="resent")
    assert report.status == "ingested" and report.silver > 0
    assert_no_identifiers(_vault_clear(res), needles_for({person["e164"]}, {person["email"]}))
    assert_no_identifiers(_outside(res), needles_for({person["e164"]}, {person["email"]}))


def _vault_clear(res: Resources) -> list[tuple[str, str]]:
    """Every vault entry decrypted (what re-identification could recover)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from pipeline.core import layout
    from pipeline.proof.crypto import decrypt_value

    out = []
    for obj in res.store.list(layout.VAULT):
        m = layout.month_of(obj.key)
        assert m is not None
        gcm = AESGCM(res.keyring.data_key(layout.month_key_name(m), create=False))
        entries = read_tier(res.store, obj.key)
        clear = [decrypt_value(gcm, b, t.encode()).decode() for t, b in entries.select("token", "identifier_encrypted").iter_rows()]  # fmt: skip
        assert clear, obj.key
        out.append((obj.key, "\n".join(clear)))
    return out


def test_restriction_keeps_the_person_out_of_exports_without_a_law_enforcement_basis(
    res: Resources, tmp_path: Path
) -> None:
    g = _ingested(res, tmp_path)
    person = _person(g)
    create_subject_request(
        res, _request("DSR-4", "restriction", [person["e164"]], received="2025-06-10", grounds="accuracy contested"),
        dt.datetime(2025, 6, 12, tzinfo=dt.UTC),
    )  # fmt: skip
    answer = run_subject_request(res, SubjectRun("DSR-4", dt.date(2025, 6, 15)))
    assert answer.outcome == "restricted" and answer.found["records"] > 0
    public, _ = _pem_pair()
    base = {
        "authority": "Interconnect partner", "legal_basis": "contract 12 s.4", "requested_by": "a",
        "approved_by": "b", "identifiers": [person["e164"]], "date_from": "2025-03-01",
        "date_to": "2025-04-30", "recipient_key": public,
    }  # fmt: skip
    billing = run_export(res, ExportRequest.from_mapping(base | {"case": "BILL-1", "purpose": "billing_dispute"}))  # fmt: skip
    assert billing.records == 0
    assert sum(m.get("restricted_excluded", 0) for m in billing.months.values()) == answer.found["records"]  # fmt: skip
    order = run_export(res, ExportRequest.from_mapping(base | {"case": "LE-4"}))
    assert order.records == answer.found["records"]
    entry = [e for e in read_log(res.store) if e["action"] == "export"][-1]
    assert entry["what"]["restricted_included"] == order.records


REFUSALS = [
    ({"type": "rectify"}, "type must be one of"),
    ({"identity_verified_by": ""}, "identity_verified_by is missing"),
    ({"received": "2099-01-01"}, "received is in the future"),
    ({"identifiers": ["+923001234567", "call me maybe"]}, "identifier #2 is not a phone number"),
    ({"case": "../x"}, "case must be letters"),
    ({"passphrase": "short"}, "at least 12 characters"),
    ({"recipient_key": "not a key"}, "not a PEM public key"),
]


@pytest.mark.parametrize(("changes", "message"), REFUSALS)
def test_refused_requests_are_audited_without_identifiers(
    res: Resources, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(SubjectRequestError) as err:
        create_subject_request(res, _request("DSR-R", "access", ["+923001234567"], **changes))
    assert message in str(err.value) and "3001234567" not in str(err.value)
    entry = read_log(res.store)[-1]
    assert entry["action"] == "subject_request_refused"
    assert any(message in p for p in entry["what"]["problems"])
    assert "3001234567" not in json.dumps(entry) and "maybe" not in json.dumps(entry)
    assert not any(k for k, _ in all_text_outputs(res.store) if k.startswith("requests/"))


def test_requests_near_their_deadline_raise_an_alert(res: Resources) -> None:
    create_subject_request(
        res, _request("DSR-5", "restriction", ["+923001234567"], received="2026-01-31"),
        dt.datetime(2026, 2, 1, tzinfo=dt.UTC),
    )  # fmt: skip
    assert deadline_alert(res, dt.date(2026, 2, 10)) is None
    alert = deadline_alert(res, dt.date(2026, 2, 22))
    assert alert is not None and "DSR-5 (restriction, due 2026-02-28)" in alert.detail
    assert "OVERDUE" in deadline_alert(res, dt.date(2026, 3, 1)).detail  # type: ignore[union-attr]


def test_cli_records_answers_and_verifies_an_access_request(
    res: Resources, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    for key, value in {"CDR_STORE": str(settings.store), "CDR_KEYRING": str(settings.keyring),
                       "CDR_DATA_DOCS": str(tmp_path / "docs")}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    g = _ingested(res, tmp_path)
    person = _person(g)
    (tmp_path / "pass.txt").write_text("correct horse battery staple\n")
    (tmp_path / "seal.pem").write_text(res.keyring.public_key_pem())
    capsys.readouterr()
    create = ["subject-request", "create", "--case", "DSR-CLI", "--type", "access",
              "--identifier", _written(person)[0], "--default-region", "PK",
              "--identity-verified-by", "video call 12", "--received", "2025-06-01",
              "--requested-by", "dpo", "--passphrase-file", str(tmp_path / "pass.txt")]  # fmt: skip
    assert cli(create) == 0
    assert cli(create) == 2 and "exists already" in capsys.readouterr().err
    assert cli(["subject-request", "run", "--case", "DSR-CLI", "--as-of", "2025-06-15",
                "--out", str(tmp_path / "out")]) == 0  # fmt: skip
    assert cli(["subject-request", "show", "--case", "DSR-CLI"]) == 0
    assert cli(["subject-request", "list"]) == 0
    out = capsys.readouterr().out
    assert "Outcome:   delivered" in out and '"state": "answered"' in out
    package = next((tmp_path / "out").glob("*.cdrs"))
    assert cli(["verify-access", str(package), "--passphrase-file", str(tmp_path / "pass.txt"),
                "--seal-public-key", str(tmp_path / "seal.pem")]) == 0  # fmt: skip
    out += capsys.readouterr().out
    assert "VERDICT: VERIFIED" in out
    assert_no_identifiers([("cli", out)], needles_for({person["e164"]}, {person["email"]}))


def test_held_records_are_reported_as_held_and_keep_their_identifiers(
    settings: Settings, tmp_path: Path
) -> None:
    from pipeline.flows import holds

    res = Resources.from_settings(settings, parse_policy(PERMISSIVE, "permissive.toml"))
    g = _ingested(res, tmp_path)
    person = _person(g)
    holds.run_hold(res, holds.HoldRequest.from_mapping({
        "action": "place", "case": "HOLD-3", "reason": "claim 4/2025",
        "date_from": "2025-03-01", "date_to": "2025-03-31",
    }))  # fmt: skip
    create_subject_request(
        res, _request("DSR-6", "erasure", [person["e164"]], received="2025-06-10"),
        dt.datetime(2025, 6, 12, tzinfo=dt.UTC),
    )  # fmt: skip
    answer = run_subject_request(res, SubjectRun("DSR-6", dt.date(2025, 6, 15)))
    assert answer.outcome == "erased"
    march = _truth(g, person, {3}) - _truth(g, {**person, "e164": ""}, {3})
    assert answer.done["held_records"] == len(march) > 0
    assert answer.done["vault_entries_deleted"] > 0
    vaults = dict(_vault_clear(res))
    assert [k for k, text in vaults.items() if person["e164"] in text] == [
        k for k in vaults if "month=03" in k
    ]
    assert (
        "under a legal hold and were kept"
        in res.store.get_bytes("requests/DSR-6/response.txt").decode()
    )


def test_the_policy_file_sets_deadlines_and_erasure_per_country() -> None:
    from pipeline.core.errors import PipelineError

    text = PERMISSIVE.replace("erasure_before_retention_ends = true", "erasure_before_retention_ends = false") + (
        '\n[[subject_rights.country]]\ncountry = "IT"\ndeadline_days = 30\n'
        'erasure_before_retention_ends = true\nlegal_basis = "GDPR art. 17"\n'
    )  # fmt: skip
    rights = parse_policy(text, "p.toml").rights
    assert rights.for_country("IT").deadline(dt.date(2026, 1, 31)) == dt.date(2026, 3, 2)
    assert rights.for_country("IT").erasure_before_retention_ends
    assert rights.for_country("PK").deadline(dt.date(2026, 1, 31)) == dt.date(2026, 2, 28)
    assert not rights.for_country("PK").erasure_before_retention_ends
    with pytest.raises(PipelineError) as err:
        parse_policy(text.replace("\ndeadline_days = 30\n", "\ndeadline_days = 30\ndeadline_months = 1\n"), "p.toml")  # fmt: skip
    assert "p.toml, line" in str(err.value) and "not both" in str(err.value)


def test_an_answered_request_forgets_the_person_after_its_days(
    res: Resources, tmp_path: Path
) -> None:
    """The encrypted request and its package hold the person's identifiers: retention shreds
    them REQUEST_IDENTIFIER_DAYS after the answer; the status and response stay."""
    from pipeline.core.keys import KeyDestroyed
    from pipeline.flows.retention import REQUEST_IDENTIFIER_DAYS, RetentionRequest, run_retention

    g = _ingested(res, tmp_path)
    person = _person(g)
    public, _ = _pem_pair()
    create_subject_request(
        res, _request("DSR-F", "access", [person["e164"]], recipient_key=public, received="2025-06-01"),
        dt.datetime(2025, 6, 2, tzinfo=dt.UTC),
    )  # fmt: skip
    answered = dt.datetime(2025, 6, 15, tzinfo=dt.UTC)
    answer = run_subject_request(res, SubjectRun("DSR-F", answered.date()), now=answered)
    package = answer.done["package"]
    kept_until = answered.date() + dt.timedelta(REQUEST_IDENTIFIER_DAYS - 1)

    early = run_retention(res, RetentionRequest(kept_until)).to_dict()
    assert early["requests_forgotten"] == []
    assert res.store.exists("requests/DSR-F/request.enc") and res.store.exists(package)

    late = run_retention(res, RetentionRequest(kept_until + dt.timedelta(days=1))).to_dict()
    assert late["requests_forgotten"] == ["DSR-F"]
    assert not res.store.exists("requests/DSR-F/request.enc")
    assert not res.store.exists(package)
    assert res.store.exists("requests/DSR-F/response.json")
    with pytest.raises(KeyDestroyed):
        run_subject_request(res, SubjectRun("DSR-F", kept_until), now=answered)
    again = run_retention(res, RetentionRequest(kept_until + dt.timedelta(days=2))).to_dict()
    assert again["requests_forgotten"] == []  # said once
    assert [e for e in read_log(res.store) if e["action"] == "subject_request_forgotten"]

"""Law-enforcement export: exactly the generator's records for the named end users, purged months
reported, a package only the authority opens and anyone can verify, and refusals audited."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import polars as pl
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from pipeline.cli import main as cli
from pipeline.core.config import Settings
from pipeline.core.resources import Resources
from pipeline.core.store import LocalStore
from pipeline.flows import holds
from pipeline.flows.export import ExportResult, run_export
from pipeline.flows.export_request import ExportRequest, RequestError
from pipeline.flows.ingest import ingest_file
from pipeline.flows.retention import RetentionRequest, run_retention
from pipeline.proof.audit import read_log, verify_log
from pipeline.proof.verify_export import case_of, verify_package
from pipeline.records.synth import Generated, generate
from tests.helpers import (
    all_text_outputs,
    assert_no_identifiers,
    needles_for,
    repacked,
    resigned,
)

PERIOD = ("2025-03-01", "2025-04-30")
PURGE_DAY = dt.date(2026, 4, 1)  # March 2025's identifiers go; April's stay until 2026-05-01


def _pem_pair(kind: str = "x25519") -> tuple[str, bytes]:
    private = X25519PrivateKey.generate() if kind == "x25519" else rsa.generate_private_key(65537, 3072)  # fmt: skip
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    secret = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return public.decode(), secret


def _request(recipient: str, identifiers: list[str], **changes: object) -> ExportRequest:
    """A complete, valid request; `changes` replace fields (`ids` the identifiers)."""
    if "ids" in changes:
        identifiers = changes.pop("ids")  # type: ignore[assignment]
    fields = {
        "case": "FIA-2026-044",
        "authority": "Federal Investigation Agency, Cyber Crime Wing",
        "legal_basis": "PECA 2016 s.31 production order 7/2026",
        "requested_by": "officer.a",
        "approved_by": "officer.b",
        "identifiers": identifiers,
        "date_from": PERIOD[0],
        "date_to": PERIOD[1],
        "recipient_key": recipient,
    } | changes
    return ExportRequest.from_mapping(fields)


def _ingested(res: Resources, tmp_path: Path) -> Generated:
    g = generate(
        "canonical_csv", tmp_path / "cdr.csv", 4000, start=dt.date(2025, 3, 1), months=2,
        bad_share=0.0, people=60,
    )  # fmt: skip
    ingest_file(res, g.path, as_of=dt.date(2025, 6, 1))
    return g


def _two_people(g: Generated) -> tuple[dict[str, str], dict[str, str]]:
    """A Pakistani number and another person's e-mail address, each with records in April."""
    assert g.truth is not None
    people = g.truth.group_by("e164", "email").len().sort("e164")
    pk = people.filter(pl.col("e164").str.starts_with("+92")).row(0, named=True)
    other = people.filter(pl.col("e164") != pk["e164"]).row(0, named=True)
    return pk, other


def _truth(g: Generated, pk: dict[str, str], other: dict[str, str], month: int) -> set[str]:
    assert g.truth is not None
    t = g.truth.filter(pl.col("event_time").dt.month() == month, pl.col("bad") < 0)
    mine = ((pl.col("e164") == pk["e164"]) & (pl.col("channel") != "email")) | (
        (pl.col("email") == other["email"]) & (pl.col("channel") == "email")
    )
    return set(t.filter(mine).get_column("record_id"))


def _open(res: Resources, result: ExportResult, secret: bytes) -> tuple[dict, pl.DataFrame]:  # type: ignore[type-arg]
    verdict = verify_package(
        res.store.get_bytes(result.package), secret, res.keyring.public_key_pem().encode()
    )
    assert verdict.ok, verdict.problems
    return verdict.manifest, pl.read_parquet(io.BytesIO(verdict.files["records.parquet"]))


@pytest.fixture
def s3_res(s3_env: dict[str, str]) -> Resources:
    env = s3_env | {"CDR_DEFAULT_REGION": "PK", "CDR_BATCH_ROWS": "900"}
    return Resources.from_settings(Settings.from_env(env))


def test_export_over_a_purged_and_a_live_month_on_s3(
    s3_res: Resources,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    res = s3_res
    g = _ingested(res, tmp_path)
    run_retention(res, RetentionRequest(PURGE_DAY))
    pk, other = _two_people(g)
    national = "0" + pk["e164"][3:6] + "-" + pk["e164"][6:]  # 0300-1234567
    shouting = other["email"].upper()
    public, secret = _pem_pair()
    caplog.set_level(logging.INFO)

    result = run_export(res, _request(public, [national, shouting]))

    manifest, records = _open(res, result, secret)
    assert set(records.get_column("record_id")) == _truth(g, pk, other, 4) != set()
    assert result.records == len(records) == manifest["counts"]["records"]
    march = result.months["2025-03"]
    assert march["identifiers"] == "purged" and march["records"] == 0
    assert march["note"] == "identifiers purged on 2026-04-01 under the 12-month rule"
    assert g.truth is not None
    march_rows = g.truth.filter(pl.col("event_time").dt.month() == 3).height
    assert march["unattributable_gold_records"] == march_rows
    assert manifest["purged_periods"][0]["month"] == "2025-03"
    # Both parties re-identified: the requested one in E.164 or lower case, whatever the form.
    parties = set(records.get_column("origin_identifier")) | set(
        records.get_column("destination_identifier")
    )
    assert {pk["e164"], other["email"]} <= parties
    # The file held March too: its key went with March's identifiers, so April's commitments
    # can no longer be recomputed by the operator (the records still verify against the seal).
    assert manifest["identity_check"]["unchecked"] == len(records)

    # The recipient's tool, as a recipient runs it.
    package = tmp_path / "package.cdrx"
    package.write_bytes(res.store.get_bytes(result.package))
    (tmp_path / "recipient.pem").write_bytes(secret)
    (tmp_path / "seal.pem").write_text(res.keyring.public_key_pem())
    capsys.readouterr()
    code = cli(["verify-export", str(package), "--private-key", str(tmp_path / "recipient.pem"),
                "--seal-public-key", str(tmp_path / "seal.pem"), "--extract", str(tmp_path / "x")])  # fmt: skip
    assert code == 0 and "VERDICT: VERIFIED" in capsys.readouterr().out
    assert pk["e164"] in (tmp_path / "x" / "records.csv").read_text()

    # Nowhere outside the encrypted package: not the store, the audit log or the logs.
    needles = needles_for({pk["e164"]}, {other["email"]})
    outside = [(k, t) for k, t in all_text_outputs(res.store) if not k.endswith(".cdrx")]
    assert_no_identifiers(outside, needles)
    assert_no_identifiers([("log", caplog.text)], needles)
    entry = [e for e in read_log(res.store) if e["action"] == "export"][-1]
    assert entry["what"]["package_sha256"] == result.package_sha256
    assert entry["what"]["requested_by"] == "officer.a" and entry["what"]["identifiers"] == 2
    assert verify_log(res.store, res.keyring.public_key()).ok


def test_a_purged_month_is_searched_in_the_legal_hold_store(res: Resources, tmp_path: Path) -> None:
    g = _ingested(res, tmp_path)
    pk, _ = _two_people(g)
    holds.run_hold(
        res,
        holds.HoldRequest.from_mapping({"action": "place", "case": "HOLD-7", "reason": "order 3/2026", "identifiers": [pk["e164"]]}),
    )  # fmt: skip
    run_retention(res, RetentionRequest(PURGE_DAY))
    public, secret = _pem_pair("rsa")
    result = run_export(res, _request(public, [pk["e164"]]))
    _, records = _open(res, result, secret)
    march = records.filter(pl.col("event_time").dt.month() == 3)
    assert set(march.get_column("record_id")) == _truth(g, pk, {"email": ""}, 3) != set()
    assert set(march.get_column("found_in")) == {"hold:HOLD-7"}
    assert set(records.filter(pl.col("event_time").dt.month() == 4).get_column("found_in")) == {
        "silver"
    }
    assert result.months["2025-03"]["records"] == len(march)


def _drop_first_record(files: dict[str, bytes]) -> None:
    records = pl.read_parquet(io.BytesIO(files["records.parquet"]))
    buf = io.BytesIO()
    records.slice(1).write_parquet(buf)
    files["records.parquet"] = buf.getvalue()
    lines = files["records.csv"].decode().splitlines(keepends=True)
    files["records.csv"] = "".join(lines[:1] + lines[2:]).encode()


def _resign(files: dict[str, bytes]) -> None:
    files["manifest.json.sig"] = base64.b64encode(
        Ed25519PrivateKey.generate().sign(files["manifest.json"])
    )


def _edited(edit: Callable[[pl.DataFrame], pl.DataFrame]) -> Callable[[dict[str, bytes]], None]:
    """A change of a package's Parquet records (the CSV left as it was)."""

    def change(files: dict[str, bytes]) -> None:
        buf = io.BytesIO()
        edit(pl.read_parquet(io.BytesIO(files["records.parquet"]))).write_parquet(buf)
        files["records.parquet"] = buf.getvalue()

    return change


_change_duration = _edited(lambda r: r.with_columns(pl.col("duration_s").fill_null(0) + 60))


def test_tampered_packages_fail_with_a_clear_message(res: Resources, tmp_path: Path) -> None:
    g = _ingested(res, tmp_path)
    pk, _ = _two_people(g)
    public, secret = _pem_pair()
    result = run_export(res, _request(public, [pk["e164"]]))
    blob = res.store.get_bytes(result.package)
    seal = res.keyring.public_key_pem().encode()
    assert verify_package(blob, secret, seal).ok

    def problems(data: bytes, key: bytes = secret) -> str:
        verdict = verify_package(data, key, seal)
        assert not verdict.ok
        return " ".join(verdict.problems)

    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 1
    assert "modified" in problems(bytes(flipped))
    assert "records.parquet does not match its digest" in problems(
        repacked(blob, secret, public, _drop_first_record)
    )
    assert "signed by another key" in problems(repacked(blob, secret, public, _resign))
    assert "not encrypted for this private key" in problems(blob, _pem_pair()[1])

    # Even with the digests and signature redone by a forger holding the seal key, a changed
    # record does not reach the original seal, and records or a manifest of the wrong shape are
    # named as such, never a crash of the verifier (nor a value quoted).
    def forged(change: Callable[[dict[str, bytes]], None], manifest_change=None) -> bytes:  # type: ignore[no-untyped-def]
        signer = res.keyring.signing_key()
        return repacked(blob, secret, public, resigned(change, signer, manifest_change))

    assert "do not reach the sealed root (changed)" in problems(forged(_change_duration))

    wrong_shape = "the records do not have the record schema"
    no_duration = _edited(lambda r: r.drop("duration_s"))
    assert wrong_shape in problems(forged(no_duration))
    as_words = _edited(lambda r: r.with_columns(pl.lit("sixty seconds").alias("duration_s")))
    words = problems(forged(as_words))
    assert wrong_shape in words and "sixty" not in words

    def not_parquet(files: dict[str, bytes]) -> None:
        files["records.parquet"] = b"PAR1 this is not parquet PAR1"

    assert wrong_shape in problems(forged(not_parquet))
    assert "the manifest lacks 'counts'" in problems(
        forged(lambda files: None, lambda m: m.pop("counts"))
    )
    assert "records.csv is not listed in the manifest" in problems(
        forged(lambda files: None, lambda m: m["files"].pop("records.csv"))
    )
    assert "does not list the package's files" in problems(
        forged(lambda files: None, lambda m: m.update(files=["records.csv"]))
    )
    # What a forger wrote in the manifest is never quoted back, whatever its shape.
    hostile = "+923001234567"
    assert "the manifest is malformed (AttributeError)" in problems(
        forged(lambda files: None, lambda m: m.update(sources=[]))
    )
    said = problems(forged(lambda files: None, lambda m: m["counts"].update(records=hostile)))
    assert "counts something else" in said and hostile not in said
    said = problems(
        forged(lambda files: None, lambda m: [p.update(batch=hostile) for p in m["proofs"]])
    )
    assert "malformed" in said and hostile not in said
    # A manifest that states no case still verifies; the verdict says so instead of failing.
    no_case = verify_package(forged(lambda files: None, lambda m: m.pop("request")), secret, seal)
    assert no_case.ok and case_of(no_case.manifest) == "not stated as a case reference"
    assert case_of(verify_package(blob, secret, seal).manifest) == "FIA-2026-044"


class SpyStore(LocalStore):
    """A local store that notes every object read."""

    reads: ClassVar[list[str]] = []

    def get_bytes(self, key: str) -> bytes:
        self.reads.append(key)
        return super().get_bytes(key)

    def open(self, key: str):  # type: ignore[no-untyped-def]
        self.reads.append(key)
        return super().open(key)

    def list(self, prefix: str):  # type: ignore[no-untyped-def]
        self.reads.append(prefix)
        return super().list(prefix)


def _small_rsa() -> str:
    key = rsa.generate_private_key(65537, 1024).public_key()
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()  # fmt: skip


def _dsa() -> str:
    key = dsa.generate_private_key(2048).public_key()
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()  # fmt: skip


REFUSALS = [
    ({"authority": ""}, "authority is missing"),
    ({"legal_basis": "  "}, "legal_basis is missing"),
    ({"approved_by": "Officer.A"}, "approved_by must be a different person"),
    ({"date_to": "2099-01-31"}, "the period ends in the future"),
    ({"date_from": "2025-05-01", "date_to": "2025-04-01"}, "the period is reversed"),
    ({"date_from": "2025-02-30"}, "date_from is not a date"),
    ({"ids": ["+923001234567", "call me maybe"]}, "identifier #2 is not a phone number"),
    ({"ids": []}, "identifiers are missing"),
    ({"channels": ["pigeon"]}, "unknown channels ['pigeon']"),
    ({"recipient_key": "not a key"}, "not a PEM public key"),
    ({"recipient_key": "small-rsa"}, "at least 2048"),
    ({"recipient_key": "dsa"}, "X25519 or RSA only"),
    ({"case": "../../etc"}, "case must be letters"),
    # Four eyes as one person tried to pass them: invisible or full-width look-alikes.
    ({"approved_by": "officer.a\u200b"}, "approved_by must be a different person"),
    ({"approved_by": "officer.a\u200b"}, "approved_by holds control or invisible characters"),
    ({"approved_by": "\uff4ffficer.a"}, "approved_by must be a different person"),
    ({"approved_by": " OFFICER.A "}, "approved_by must be a different person"),
    ({"requested_by": "officer.b\x00"}, "requested_by holds control or invisible characters"),
    ({"date_from": "2026-10-01T99:99garbage"}, "date_from is not a date"),
    ({"date_to": "20250430"}, "date_to is not a date"),
]


@pytest.mark.parametrize(("changes", "message"), REFUSALS)
def test_refused_requests_read_nothing_and_are_audited(
    settings: Settings, changes: dict[str, object], message: str
) -> None:
    res = Resources.from_settings(settings)
    res.store = SpyStore(settings.store)
    SpyStore.reads = []
    public, _ = _pem_pair()
    key = changes.get("recipient_key")
    changes = changes | ({"recipient_key": {"small-rsa": _small_rsa(), "dsa": _dsa()}.get(str(key), key)} if key else {})  # fmt: skip
    with pytest.raises(RequestError) as err:
        run_export(res, _request(public, ["+923001234567"], **changes))
    assert message in str(err.value)
    assert "3001234567" not in str(err.value) and "maybe" not in str(err.value)
    data = [k for k in SpyStore.reads if k.split("/")[0] in {"silver", "gold", "vault", "holds"}]
    assert data == []
    entry = read_log(res.store)[-1]
    assert entry["action"] == "export_refused"
    assert any(message in p for p in entry["what"]["problems"])
    assert "3001234567" not in json.dumps(entry)


def test_cli_export_prints_where_and_how_many(
    res: Resources, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    for key, value in {"CDR_STORE": str(settings.store), "CDR_KEYRING": str(settings.keyring),
                       "CDR_DATA_DOCS": str(tmp_path / "docs")}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    g = _ingested(res, tmp_path)
    pk, _ = _two_people(g)
    public, _ = _pem_pair()
    (tmp_path / "authority.pem").write_text(public)
    request = {
        "case": "CLI-1", "authority": "FIA", "legal_basis": "PECA s.31", "requested_by": "a",
        "approved_by": "b", "identifiers": [pk["e164"]], "date_from": PERIOD[0],
        "date_to": PERIOD[1], "recipient_key": "authority.pem",
    }  # fmt: skip
    (tmp_path / "request.json").write_text(json.dumps(request))
    capsys.readouterr()
    code = cli(["export", "--request", str(tmp_path / "request.json"), "--out", str(tmp_path / "out")])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "exports/CLI-1/package-" in out and "2025-04" in out
    assert len(list((tmp_path / "out").glob("*.cdrx"))) == 1
    assert pk["e164"] not in out
    code = cli(["export", "--request", str(tmp_path / "request.json"), "--approved-by", "a"])
    assert code == 2 and "different person" in capsys.readouterr().err


def test_cli_export_with_a_missing_key_file_is_refused_and_audited(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    for key, value in {"CDR_STORE": str(settings.store), "CDR_KEYRING": str(settings.keyring),
                       "CDR_DATA_DOCS": str(tmp_path / "docs")}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    args = ["export", "--case", "CLI-2", "--authority", "FIA", "--legal-basis", "PECA s.31",
            "--requested-by", "a", "--approved-by", "b", "--identifier", "+923001234567",
            "--from", PERIOD[0], "--to", PERIOD[1], "--recipient-key", str(tmp_path / "nope.pem")]  # fmt: skip
    assert cli(args) == 2
    assert "recipient_key: the key file cannot be read" in capsys.readouterr().err
    res = Resources.from_settings(settings)
    entry = read_log(res.store)[-1]
    assert entry["action"] == "export_refused"
    assert entry["what"]["problems"] == ["recipient_key: the key file cannot be read (FileNotFoundError)"]  # fmt: skip
    assert cli(["export", "--request", str(tmp_path / "missing.json")]) == 2
    assert "the request file cannot be read" in read_log(res.store)[-1]["what"]["problems"][0]

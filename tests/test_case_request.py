"""Export and hold requests recorded by case reference: sealed in the store (no identifier's bytes
in any object), shown and listed without identifiers, refused whole (audited), and carried out
only when a second person approves."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from pipeline.cli import main as cli
from pipeline.core import layout
from pipeline.core.config import Settings
from pipeline.core.resources import Resources
from pipeline.flows import holds
from pipeline.flows.case_request import (
    Approval,
    CaseRequestError,
    RequestRejected,
    approval_problems,
    carry_out,
    create_request,
)
from pipeline.flows.export_request import four_eyes_problems
from pipeline.proof.audit import read_log
from pipeline.proof.sealed_request import open_request
from tests.test_export import _pem_pair

NUMBER, NATIONAL, EMAIL, CUSTOMER = (
    "+923001234567",
    "0300 1234567",
    "Ali.Raza@example.pk",
    "ACME-7781",
)
NEEDLES = [b"3001234567", b"300 1234567", b"ali.raza", b"Ali.Raza", b"ACME-7781"]


def _raw_bytes(root: Path) -> list[tuple[str, bytes]]:
    return [(str(p), p.read_bytes()) for p in root.rglob("*") if p.is_file()]


def _export_fields(public_pem: str) -> dict[str, object]:
    return {"case": "LE-7", "authority": "FIA", "legal_basis": "PECA s.31",
            "requested_by": "a.khan", "identifiers": [NUMBER, NATIONAL, EMAIL],
            "default_region": "PK", "date_from": "2025-03-01", "date_to": "2025-04-30",
            "recipient_key": public_pem}  # fmt: skip


def test_requests_are_stored_encrypted_and_shown_without_identifiers(
    local_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    res = Resources.from_settings(Settings.from_env(local_env))
    public, _ = _pem_pair()
    create_request(res, "export", _export_fields(public))
    hold = {"case": "H-7", "reason": "order 7", "requested_by": "a.khan",
            "identifiers": [NATIONAL], "default_region": "PK", "customer": CUSTOMER}  # fmt: skip
    create_request(res, "hold", hold)
    assert cli(["request", "list"]) == 0
    assert cli(["request", "show", "--case", "LE-7"]) == 0
    shown = capsys.readouterr().out
    assert "LE-7" in shown and "H-7" in shown and "FIA" in shown
    listed = {line.split()[0]: line for line in shown.splitlines() if line[:1] in "LH"}
    assert " 1 identifier " in listed["H-7"] and " 3 identifiers " in listed["LE-7"]
    hits = [
        (path, n)
        for path, data in [*_raw_bytes(Path(local_env["CDR_STORE"])), ("out", shown.encode())]
        for n in NEEDLES
        if n in data
    ]
    assert hits == []
    assert open_request(res, "LE-7")["request"]["identifiers"] == [NUMBER, NATIONAL, EMAIL]
    assert open_request(res, "H-7")["request"]["customer"] == CUSTOMER


def test_a_refused_request_is_audited_whole_without_identifiers(
    local_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli(["request", "create", "--case", "LE-8", "--identifier", "12345",
                "--identifier", EMAIL, "--from", "2025-04-30", "--to", "2025-03-01"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    res = Resources.from_settings(Settings.from_env(local_env))
    entry = read_log(res.store)[-1]
    assert entry["action"] == "request_refused" and entry["what"]["identifiers"] == 2
    problems = " ".join(entry["what"]["problems"])
    for wanted in ("authority is missing", "requested_by is missing", "identifier #1", "reversed"):
        assert wanted in problems and wanted in err
    assert "12345" not in str(entry) + err and "ali.raza" not in (str(entry) + err).lower()
    assert not res.store.exists(layout.request_object_key("LE-8", "request.enc"))


def test_one_case_holds_one_request_of_any_kind(local_env: dict[str, str]) -> None:
    res = Resources.from_settings(Settings.from_env(local_env))
    public, _ = _pem_pair()
    create_request(res, "export", _export_fields(public))
    with pytest.raises(CaseRequestError, match="exists already"):
        create_request(res, "hold", {"case": "LE-7", "reason": "r", "requested_by": "x",
                                     "identifiers": [NUMBER]})  # fmt: skip
    code = cli(["subject-request", "create", "--case", "LE-7", "--type", "restriction",
                "--identifier", NUMBER, "--identity-verified-by", "desk 1",
                "--received", "2025-05-01", "--requested-by", "dpo"])  # fmt: skip
    assert code == 2


@pytest.mark.parametrize(
    ("triggered", "approver", "recorded", "refused"),
    [
        ("alice", "bob", "carol", False),
        ("alice", "ALICE", "carol", True),
        ("alice", "\uff41lice", "carol", True),  # full-width a
        ("alice", "ali\u200bce ", "carol", True),  # zero-width space, trailing space
        ("alice", "Carol", "carol", True),  # the officer who recorded it
        ("alice", None, "carol", True),
        (None, "bob", "carol", True),
    ],
)
def test_four_eyes_in_airflow(
    triggered: str | None, approver: str | None, recorded: str, refused: bool
) -> None:
    approval = Approval("C-1", "hold", True, approver, triggered)
    assert bool(approval_problems(approval, recorded)) is refused


def test_the_cli_four_eyes_check_is_the_same_function() -> None:
    assert four_eyes_problems("Officer.A", " officer.a ") == [
        "approved_by must be a different person from requested_by"
    ]


def test_carry_out_refuses_audits_and_does_nothing_for_the_same_user(
    local_env: dict[str, str],
) -> None:
    res = Resources.from_settings(Settings.from_env(local_env))
    create_request(res, "hold", {"case": "H-9", "reason": "order 9", "requested_by": "a.khan",
                                 "identifiers": [NUMBER]})  # fmt: skip
    with pytest.raises(CaseRequestError):
        carry_out(res, Approval("H-9", "hold", True, "b.ali", "B.Ali"))
    with pytest.raises(RequestRejected):
        carry_out(res, Approval("H-9", "hold", False, "c.shah", "b.ali"))
    assert holds.load(res.store, "H-9") is None
    actions = [e["action"] for e in read_log(res.store)]
    assert actions == ["request_created", "approval_refused", "request_rejected"]
    placed = carry_out(
        res, Approval("H-9", "hold", True, "c.shah", "b.ali"), dt.datetime.now(dt.UTC)
    )
    assert placed["tokens"] == 1 and placed["customer"] is False
    with pytest.raises(CaseRequestError, match="is a hold request, not export"):
        carry_out(res, Approval("H-9", "export", True, "c.shah", "b.ali"))

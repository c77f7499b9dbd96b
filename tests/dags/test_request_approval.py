"""`cdr_le_export` and `cdr_legal_hold` run from a case reference and a second user's approval:
the identifiers stay in the sealed request, never in the run's parameters, XCom, task logs or
the human-in-the-loop record; the user who triggered the run cannot approve it.

The approval is given as a second Airflow user through the HITL API's own function, from a
thread, while `dag.test()` waits (see `tests/dags/hitl.py`)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from pipeline.cli import main as cli
from pipeline.core.config import Settings
from pipeline.core.resources import Resources
from pipeline.flows import holds
from pipeline.flows.ingest import ingest_file
from pipeline.proof.audit import read_log
from pipeline.proof.verify_export import verify_package
from pipeline.records.synth import generate
from tests.dags.hitl import APPROVERS, TRIGGERED_BY, run_answered, run_rows, task_logs
from tests.helpers import assert_no_identifiers, load_dag, needles_for


@pytest.fixture(autouse=True)
def approvers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The approvers as a deployment lists them, including the triggering user (`dag_test`) and
    the officer who records the requests (`a.khan`): the step itself must exclude both."""
    monkeypatch.setenv("CDR_APPROVERS", f"a.khan,{APPROVERS}")


def _hold_request(case: str, number: str, customer: str = "") -> None:
    extra = ["--customer", customer] if customer else []
    assert cli(["request", "create", "--type", "hold", "--case", case, "--requested-by", "a.khan",
                "--identifier", number, "--reason", "production order 12/2026",
                "--default-region", "PK", *extra]) == 0  # fmt: skip


@pytest.mark.airflow
def test_export_by_case_reference_approved_by_a_second_user_leaves_no_identifier_in_airflow(
    airflow_db: None,
    tmp_path: Path,
    local_env: dict[str, str],
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO")
    res = Resources.from_settings(Settings.from_env(local_env))
    g = generate("messaging_jsonl", tmp_path / "m.jsonl", 800, start=dt.date(2025, 3, 1), months=2)
    ingest_file(res, g.path, as_of=dt.date(2025, 6, 1))
    number = sorted(g.numbers)[0]
    private = X25519PrivateKey.generate()
    (tmp_path / "fia.pem").write_bytes(private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))  # fmt: skip
    assert cli(["request", "create", "--case", "DAG-1", "--authority", "FIA",
                "--legal-basis", "PECA s.31", "--requested-by", "a.khan", "--identifier", number,
                "--from", "2025-03-01", "--to", "2025-04-30",
                "--recipient-key", str(tmp_path / "fia.pem")]) == 0  # fmt: skip

    # Neither the user who triggered the run nor the officer who recorded the request can answer.
    run = run_answered(
        "cdr_le_export", {"case": "DAG-1"}, user="b.ali", refused_first=("dag_test", "a.khan")
    )
    assert run.state == "success"
    packages = [o.key for o in res.store.list("exports/DAG-1/") if o.key.endswith(".cdrx")]
    assert len(packages) == 1
    secret = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    verdict = verify_package(
        res.store.get_bytes(packages[0]), secret, res.keyring.public_key_pem().encode()
    )
    assert verdict.ok and verdict.manifest["counts"]["records"] > 0

    log = read_log(res.store)
    approved = next(e for e in log if e["action"] == "request_approved")
    assert (approved["what"]["triggered_by"], approved["what"]["approved_by"]) == (TRIGGERED_BY, "b.ali")  # fmt: skip
    assert "action" not in approved["what"]  # a hold's field: an export's approval has none
    export = next(e for e in log if e["action"] == "export")
    assert (export["what"]["requested_by"], export["what"]["approved_by"]) == ("a.khan", "b.ali")
    # The people who acted, with the process that wrote each entry kept apart.
    created = next(e for e in log if e["action"] == "request_created")
    assert created["actor"] == "a.khan" and "airflow:" not in created["process"]
    for entry in (approved, export):
        assert entry["actor"] == "b.ali"
        assert f"airflow:cdr_le_export/{run.run_id}/export_package" in entry["process"]

    rows = run_rows(run.run_id)
    tables = {table for table, _ in rows}
    assert {"dag_run", "xcom", "task_instance", "hitl_detail"} <= tables
    conf = [json.loads(r)["conf"] for t, r in rows if t == "dag_run"]
    assert conf == [{"case": "DAG-1"}]
    hitl = [json.loads(r) for t, r in rows if t == "hitl_detail"]
    assert hitl and "FIA" in hitl[0]["body"] and "b.ali" in json.dumps(hitl[0])
    # dag.test() runs tasks in this process: their logs are this process's log records and
    # output (a scheduler's worker would write them to files, read here too where present).
    logs = [*task_logs("cdr_le_export", run.run_id), ("log records", caplog.text)]
    assert "export_package" in caplog.text
    out = capfd.readouterr()
    texts = [*rows, *logs, ("stdout", out.out), ("stderr", out.err)]
    assert_no_identifiers(texts, needles_for({number}, set()))


@pytest.mark.airflow
def test_the_user_who_triggered_the_run_cannot_answer_and_a_rejection_fails_the_run(
    airflow_db: None, local_env: dict[str, str]
) -> None:
    res = Resources.from_settings(Settings.from_env(local_env))
    _hold_request("SAME-1", "+923001234567")
    run = run_answered(
        "cdr_legal_hold",
        {"action": "place", "case": "SAME-1"},
        "b.ali",
        "Reject",
        refused_first=(TRIGGERED_BY, " DAG_Test", "a.khan"),  # any spelling of the same person
    )
    assert run.state == "failed"  # rejected: never mistaken for a hold placed
    assert holds.load(res.store, "SAME-1") is None
    hitl = [json.loads(r) for t, r in run_rows(run.run_id) if t == "hitl_detail"]
    assert [u["id"] for u in hitl[0]["assignees"]] == ["b.ali", "c.shah"]
    entry = read_log(res.store)[-1]
    assert entry["action"] == "request_rejected"
    assert (entry["what"]["triggered_by"], entry["what"]["approved_by"]) == (TRIGGERED_BY, "b.ali")


@pytest.mark.airflow
def test_with_no_eligible_approver_the_step_fails_before_asking(
    airflow_db: None, local_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.dags.test_ingest_states import _states

    monkeypatch.setenv("CDR_APPROVERS", "a.khan, dag_test")
    _hold_request("NONE-1", "+923001234567")
    run = load_dag("cdr_legal_hold").test(run_conf={"action": "place", "case": "NONE-1"})
    assert run.state == "failed"
    states = _states(run.run_id)
    assert states[("approve", None)] == "failed"
    assert [t for t, _ in run_rows(run.run_id) if t == "hitl_detail"] == []  # nobody was asked


@pytest.mark.airflow
def test_hold_placed_and_released_by_reference_a_rejection_does_nothing(
    airflow_db: None, local_env: dict[str, str], capfd: pytest.CaptureFixture[str]
) -> None:
    res = Resources.from_settings(Settings.from_env(local_env))
    number, customer = "+923001234567", "ACME-LTD-7781"
    _hold_request("HOLD-1", number, customer)
    rejected = run_answered(
        "cdr_legal_hold", {"action": "place", "case": "HOLD-1"}, "b.ali", "Reject"
    )
    assert rejected.state == "failed"  # rejected: nothing done, and the run list says so
    assert holds.load(res.store, "HOLD-1") is None
    assert read_log(res.store)[-1]["action"] == "request_rejected"

    placed = run_answered("cdr_legal_hold", {"action": "place", "case": "HOLD-1"}, "b.ali")
    assert placed.state == "success"
    hold = holds.load(res.store, "HOLD-1")
    assert hold is not None and len(hold.tokens) == 1 and hold.customer == customer
    released = run_answered("cdr_legal_hold", {"action": "release", "case": "HOLD-1"}, "c.shah")
    assert released.state == "success"
    assert holds.load(res.store, "HOLD-1").released_at  # type: ignore[union-attr]

    out = capfd.readouterr()
    texts = [("stdout", out.out), ("stderr", out.err)]
    for run in (rejected, placed, released):
        texts += run_rows(run.run_id) + task_logs("cdr_legal_hold", run.run_id)
    assert_no_identifiers(texts, [*needles_for({number}, set()), customer])

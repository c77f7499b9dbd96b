"""`cdr_le_export` really runs from its form: a package for the request, the run's XCom and
output free of identifiers, and a refused request failing the run with an audit entry."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from pipeline.core.config import Settings
from pipeline.core.resources import Resources
from pipeline.flows.ingest import ingest_file
from pipeline.proof.audit import read_log
from pipeline.proof.verify_export import verify_package
from pipeline.records.synth import generate
from tests.helpers import assert_no_identifiers, load_dag, needles_for


def _xcom_text(run_id: str) -> str:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(XComModel).filter(XComModel.run_id == run_id).all()
        return " ".join(str(row.value) for row in rows)


@pytest.mark.airflow
def test_export_form_builds_a_verifiable_package(
    airflow_db: None,
    tmp_path: Path,
    local_env: dict[str, str],
    capfd: pytest.CaptureFixture[str],
) -> None:
    res = Resources.from_settings(Settings.from_env(local_env))
    g = generate("messaging_jsonl", tmp_path / "m.jsonl", 800, start=dt.date(2025, 3, 1), months=2)
    ingest_file(res, g.path, as_of=dt.date(2025, 6, 1))
    number = sorted(g.numbers)[0]
    private = X25519PrivateKey.generate()
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    form = {
        "case": "DAG-1", "authority": "FIA", "legal_basis": "PECA s.31", "requested_by": "a.khan",
        "approved_by": "b.ali", "identifiers": [number], "date_from": "2025-03-01",
        "date_to": "2025-04-30", "channels": [], "recipient_key": public.decode(),
    }  # fmt: skip
    run = load_dag("cdr_le_export").test(run_conf=form)
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
    xcom = _xcom_text(run.run_id)
    assert "DAG-1" in xcom and packages[0] in xcom
    out = capfd.readouterr()
    texts = [("xcom", xcom), ("stdout", out.out), ("stderr", out.err)]
    assert_no_identifiers(texts, needles_for({number}, set()))

    refused = load_dag("cdr_le_export").test(run_conf=form | {"approved_by": "A.Khan"})
    assert refused.state == "failed"
    entry = read_log(res.store)[-1]
    assert entry["action"] == "export_refused" and entry["what"]["case"] == "DAG-1"

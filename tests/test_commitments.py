"""Commitments a third party can recompute: the documented encoding is the one hashed, the
standalone verifier agrees with `verify`, a leaf does not depend on the file's name, and files
committed under the first encoding still verify."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.cli import main as cli
from pipeline.core.config import Settings
from pipeline.flows import ingest as ingest_module
from pipeline.flows.export import run_export
from pipeline.flows.ingest import Resources, ingest_file
from pipeline.flows.retention import RetentionRequest, run_retention
from pipeline.flows.verify import VerifyRequest, run_verify
from pipeline.proof.commitments import ENCODING, leaf, record_digest, retained_fields
from pipeline.proof.integrity import parse_key, sign
from pipeline.proof.verify_export import extract, verify_package
from pipeline.records.schema import CANONICAL
from pipeline.records.synth import generate
from tests.conftest import ROOT
from tests.helpers import read_tier

TOOL = ROOT / "tools" / "verify_commitments.py"
sys.path.insert(0, str(TOOL.parent))
import verify_commitments as standalone  # noqa: E402


def _standalone(what: str, folder: Path, tmp_path: Path, *extra: str) -> tuple[int, str]:
    """Run the verifier as an auditor would: isolated interpreter, outside the project."""
    done = subprocess.run(
        [sys.executable, "-I", str(TOOL), what, str(folder), *extra],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done.returncode, done.stdout + done.stderr


def _demo(tmp_path: Path) -> tuple[Resources, Path, Path]:
    assert cli(["demo", "--records", "3000", "--as-of", "2025-06-15"]) == 0
    res = Resources.from_settings(Settings.from_env())
    seal_pem = tmp_path / "seal.pem"
    seal_pem.write_text(res.keyring.public_key_pem())
    return res, Path(Settings.from_env().store), seal_pem


def test_the_standalone_verifier_imports_nothing_of_the_pipeline() -> None:
    import ast

    tree = ast.parse(TOOL.read_text())
    imports = {
        a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    imports |= {
        n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
    }
    assert imports - {"pyarrow"} <= set(sys.stdlib_module_names) | {"__future__"}
    assert "pyarrow" in imports and "pipeline" not in imports


def test_standalone_verifier_agrees_with_verify_on_the_demo_store_before_and_after_a_purge(
    local_env: dict[str, str], tmp_path: Path
) -> None:
    res, store, seal_pem = _demo(tmp_path)
    assert run_verify(res, VerifyRequest(expectations=False)).ok
    code, out = _standalone("store", store, tmp_path, "--public-key", str(seal_pem))
    assert code == 0, out
    assert "VERIFIED" in out and out.count("encoding 3") == 6  # six demo files with records

    run_retention(res, RetentionRequest(dt.date(2026, 9, 1)))
    assert not list(res.store.list("silver/"))
    assert run_verify(res, VerifyRequest(expectations=False)).ok
    code, out = _standalone("store", store, tmp_path, "--public-key", str(seal_pem))
    assert code == 0, out

    # An edited duration: both name the record.
    key, gold = next(
        (o.key, frame)
        for o in res.store.list("gold/")
        if len(frame := pl.read_parquet(io.BytesIO(res.store.get_bytes(o.key))))
        and frame.get_column("duration_s").is_not_null().any()
    )
    target = gold.filter(pl.col("duration_s").is_not_null()).get_column("record_id")[0]
    edited = gold.with_columns(
        pl.when(pl.col("record_id") == target)
        .then(pl.col("duration_s") + 0.5)
        .otherwise(pl.col("duration_s"))
        .alias("duration_s")
    )
    buf = io.BytesIO()
    edited.write_parquet(buf)
    res.store.put_bytes(key, buf.getvalue())
    report = run_verify(res, VerifyRequest(expectations=False))
    assert not report.ok and any(f"record {target} " in p for p in report.problems())
    code, out = _standalone("store", store, tmp_path)
    assert code == 1 and f"record {target} " in out


def test_standalone_verifier_agrees_with_verify_export_on_an_extracted_package(
    res: Resources, tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from pipeline.flows.export_request import ExportRequest

    g = generate(
        "canonical_csv", tmp_path / "cdr.csv", 1500, start=dt.date(2025, 3, 1), months=2, people=30
    )
    ingest_file(res, g.path, as_of=dt.date(2025, 6, 1))
    assert g.truth is not None
    person = g.truth.filter(pl.col("e164").str.starts_with("+92")).get_column("e164")[0]
    private = X25519PrivateKey.generate()
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    secret = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    request = ExportRequest.from_mapping(
        {
            "case": "C-1", "authority": "FIA", "legal_basis": "PECA s.31",
            "requested_by": "a", "approved_by": "b", "identifiers": [person],
            "date_from": "2025-03-01", "date_to": "2025-04-30", "recipient_key": public.decode(),
        }
    )  # fmt: skip
    result = run_export(res, request)
    seal_pem = res.keyring.public_key_pem().encode()
    verdict = verify_package(res.store.get_bytes(result.package), secret, seal_pem)
    assert verdict.ok, verdict.problems
    folder = tmp_path / "package"
    extract(verdict, folder)
    (tmp_path / "seal.pem").write_bytes(seal_pem)
    code, out = _standalone("package", folder, tmp_path, "--public-key", str(tmp_path / "seal.pem"))
    assert code == 0, out
    assert f"{result.records:,} records" in out

    # A record's duration edited (and the manifest digest left alone): named.
    records = pl.read_parquet(folder / "records.parquet")
    records.with_columns(pl.col("duration_s").fill_null(0.0) + 1).write_parquet(
        folder / "records.parquet"
    )
    code, out = _standalone("package", folder, tmp_path)
    assert code == 1 and "do not reach the sealed root" in out


def test_a_record_leaf_does_not_depend_on_the_name_the_file_arrived_under(
    tmp_path: Path,
) -> None:
    g = generate("canonical_csv", tmp_path / "a.csv", 400, start=dt.date(2025, 3, 1))
    copy = tmp_path / "renamed-upload.csv"
    copy.write_bytes(g.path.read_bytes())
    roots, leaves = [], []
    for name, path, source in (("one", g.path, "operator-a"), ("two", copy, "operator-b")):
        env = {
            "CDR_STORE": str(tmp_path / name / "store"),
            "CDR_KEYRING": str(tmp_path / name / "keys"),
            "CDR_DATA_DOCS": str(tmp_path / name / "docs"),
            "CDR_DEFAULT_REGION": "PK",
        }
        res = Resources.from_settings(Settings.from_env(env))
        report = ingest_file(res, path, source=source, as_of=dt.date(2025, 6, 1))
        roots.append(report.merkle_root)
        gold = read_tier(res.store, "gold/")
        assert set(gold.get_column("source_file")) == {path.name}  # the name is still kept
        leaves.append(gold.sort("leaf_index").select(leaf(record_digest(), pl.lit("x"))))
    assert leaves[0].equals(leaves[1])
    assert "source_file" not in retained_fields() and "source" not in retained_fields()


def test_a_renamed_source_file_column_is_named_by_verify(res: Resources, tmp_path: Path) -> None:
    g = generate("canonical_csv", tmp_path / "a.csv", 200, start=dt.date(2025, 3, 1))
    sha = ingest_file(res, g.path, as_of=dt.date(2025, 6, 1)).sha256
    key = f"gold/cdr/year=2025/month=03/part-{sha}.parquet"
    gold = pl.read_parquet(io.BytesIO(res.store.get_bytes(key)))
    buf = io.BytesIO()
    gold.with_columns(pl.lit("other.csv").alias("source_file")).write_parquet(buf)
    res.store.put_bytes(key, buf.getvalue())
    report = run_verify(res, VerifyRequest(expectations=False))
    assert any("source_file differs from the sealed file name" in p for p in report.problems())


def test_floats_are_hashed_as_documented() -> None:
    """The documented encoding, computed by hand, is what the pipeline hashes."""
    row = {name: None for name in CANONICAL}
    row |= {"record_id": "r1", "duration_s": 1e-7, "price": 0.0125, "units": 1}
    frame = pl.DataFrame([row], schema=CANONICAL)
    bits = [struct.unpack(">q", struct.pack(">d", v))[0] for v in (1e-7, 0.0125)]
    parts = []
    for name in retained_fields(ENCODING):
        value = {"record_id": "r1", "duration_s": bits[0], "price": bits[1], "units": 1}.get(name)
        parts.append("-" if value is None else f"{len(str(value))}:{value}")
    import hashlib

    expected = hashlib.sha256("|".join(parts).encode()).hexdigest()
    assert frame.select(record_digest()).item() == expected
    assert standalone.record_digests(frame.to_arrow(), ENCODING) == [expected]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(allow_nan=False), min_size=1, max_size=20))
def test_the_first_encoding_of_floats_is_reproduced_without_polars(values: list[float]) -> None:
    assert [standalone.float_v1(v) for v in values] == pl.Series(values).cast(pl.String).to_list()


def test_a_file_committed_under_the_first_encoding_still_verifies(
    res: Resources, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A parse entry written before the encoding had a version states none: encoding 1."""
    monkeypatch.setattr(ingest_module, "ENCODING", 1)
    g = generate("canonical_csv", tmp_path / "old.csv", 600, start=dt.date(2025, 3, 1))
    sha = ingest_file(res, g.path, as_of=dt.date(2025, 6, 1)).sha256
    entry = json.loads(res.store.get_bytes(parse_key(sha)))
    body = {k: v for k, v in entry["body"].items() if k not in ("signer", "commitment_encoding")}
    res.store.put_bytes(parse_key(sha), json.dumps(sign(body, res.keyring.signing_key())).encode())
    report = run_verify(res, VerifyRequest(expectations=False))
    assert report.ok, report.problems()
    code, out = _standalone("store", Path(res.settings.store), tmp_path)
    assert code == 0 and "encoding 1" in out, out


def _row(fields: dict[str, object]) -> pl.DataFrame:
    """One canonical row from JSON values (timestamps as ISO 8601 text)."""
    text_times = {**CANONICAL, "event_time": pl.String, "end_time": pl.String}
    frame = pl.DataFrame([{n: fields.get(n) for n in CANONICAL}], schema=text_times)
    return frame.with_columns(
        pl.col(c).str.to_datetime(time_zone="UTC", time_unit="us")
        for c in ("event_time", "end_time")
    )


def test_the_worked_examples_in_the_documentation_are_what_the_pipeline_computes() -> None:
    doc = (ROOT / "docs" / "commitments.md").read_text()
    seen = 0
    for example in re.finditer(
        r"```json example\n(.*?)```.*?canonical bytes.*?```\n(.*?)\n```.*?digest `([0-9a-f]{64})`"
        r".*?leaf `([0-9a-f]{64})`",
        doc,
        re.S,
    ):
        row, text, digest, leaf_hex = example.groups()
        fields = json.loads(row)
        version = fields.pop("_encoding")
        commitment = fields.pop("identity_commitment")
        frame = _row(fields)
        assert standalone.record_digests(frame.to_arrow(), version) == [digest]
        assert frame.select(record_digest(version)).item() == digest
        import hashlib

        assert hashlib.sha256(text.encode()).hexdigest() == digest
        assert standalone.leaf(digest, commitment) == leaf_hex
        seen += 1
    assert seen == len(re.findall(r"```json example", doc)) == 3


def test_a_damaged_proofs_object_is_named_by_the_standalone_verifier(
    res: Resources, tmp_path: Path
) -> None:
    g = generate("canonical_csv", tmp_path / "a.csv", 300, start=dt.date(2025, 3, 1))
    sha = ingest_file(res, g.path, as_of=dt.date(2025, 6, 1)).sha256
    store = Path(res.settings.store)
    proofs = store / "proofs" / f"{sha}.parquet"
    table = pq.read_table(proofs)
    pq.write_table(table.slice(1), proofs)
    code, out = _standalone("store", store, tmp_path)
    assert code == 1 and sha[:12] in out and "leaves stored" in out
    code, out = _standalone("store", tmp_path / "empty", tmp_path)
    assert code == 2 and "nothing to verify" in out

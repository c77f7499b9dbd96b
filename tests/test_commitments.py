"""Commitments a third party can recompute: the documented encoding is the one hashed, the
standalone verifier agrees with `verify`, a leaf does not depend on the file's name, and files
committed under the first encoding still verify."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
import json
import re
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.cli import main as cli
from pipeline.core.config import Settings
from pipeline.core.layout import proof_key
from pipeline.core.resources import Resources
from pipeline.flows import ingest as ingest_module
from pipeline.flows.export import run_export
from pipeline.flows.ingest import ingest_file
from pipeline.flows.retention import RetentionRequest, run_retention
from pipeline.flows.verify import VerifyRequest, run_verify
from pipeline.proof.commitments import (
    COMMIT_BLOCK,
    ENCODING,
    block_roots,
    file_root,
    leaves_of,
    merkle_root,
    record_digest,
    retained_fields,
    subtree_roots,
)
from pipeline.proof.integrity import parse_key, sign
from pipeline.proof.verify_export import extract, verify_package
from pipeline.records.schema import CANONICAL
from pipeline.records.search import prove, record_proofs
from pipeline.records.synth import generate
from pipeline.records.tiers import PROOF_GROUP
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
    assert (
        "VERIFIED" in out and out.count(f"encoding {ENCODING}") == 6
    )  # six demo files with records

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


def _extracted_export(
    res: Resources, truth: pl.DataFrame | None, tmp_path: Path
) -> tuple[Path, bytes]:
    """An export of a Pakistani end user of `truth`, verified and extracted: the folder and the
    seal public key."""
    assert truth is not None
    person = truth.filter(pl.col("e164").str.starts_with("+92")).get_column("e164")[0]
    blob, _, secret = _export(res, person)
    seal_pem = res.keyring.public_key_pem().encode()
    verdict = verify_package(blob, secret, seal_pem)
    assert verdict.ok, verdict.problems
    folder = tmp_path / "package"
    extract(verdict, folder)
    return folder, seal_pem


def test_standalone_verifier_agrees_with_verify_export_on_an_extracted_package(
    res: Resources, tmp_path: Path
) -> None:
    g = generate(
        "canonical_csv", tmp_path / "cdr.csv", 1500, start=dt.date(2025, 3, 1), months=2, people=30
    )
    ingest_file(res, g.path, as_of=dt.date(2025, 6, 1))
    folder, seal_pem = _extracted_export(res, g.truth, tmp_path)
    (tmp_path / "seal.pem").write_bytes(seal_pem)
    code, out = _standalone("package", folder, tmp_path, "--public-key", str(tmp_path / "seal.pem"))
    assert code == 0, out
    assert f"{len(pl.read_parquet(folder / 'records.parquet')):,} records" in out

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
        # Each store has its own file key: the identity commitments differ, the fields do not.
        same_key = gold.sort("leaf_index").with_columns(pl.lit("x").alias("identity_commitment"))
        leaves.append(leaves_of(same_key))
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
    frame = pl.DataFrame([row], schema=CANONICAL).with_columns(
        pl.lit("c" * 64).alias("identity_commitment")
    )
    bits = [struct.unpack(">q", struct.pack(">d", v))[0] for v in (1e-7, 0.0125)]
    known = {"record_id": 2, "duration_s": bits[0], "price": bits[1], "units": 1}
    fields = retained_fields(ENCODING)
    flags = bytes(int(name in known) for name in fields)
    values = struct.pack(f">{len(fields)}q", *(known.get(name, 0) for name in fields))
    data = b"L" + flags + values + b"r1" + b"c" * 64
    expected = hashlib.sha256(data).hexdigest()
    assert leaves_of(frame).to_list() == [expected]
    assert standalone.record_leaves(frame.to_arrow(), ENCODING) == [expected]
    # Under encoding 3, the text form of the same bits.
    parts = []
    for name in retained_fields(3):
        value = {**known, "record_id": "r1"}.get(name)
        parts.append("-" if value is None else f"{len(str(value))}:{value}")
    digest = hashlib.sha256("|".join(parts).encode()).hexdigest()
    assert frame.select(record_digest(3)).item() == digest
    assert standalone.record_digests(frame.to_arrow(), 3) == [digest]


_TEXT = st.one_of(
    st.none(), st.text(max_size=12), st.sampled_from(["", "-", "|", "1:a", "é", "\x00"])
)
_INT = st.one_of(st.none(), st.integers(min_value=-(2**63), max_value=2**63 - 1))
_FLOAT = st.one_of(st.none(), st.floats(allow_nan=False), st.sampled_from([-0.0, 0.0]))
_TIME = st.one_of(
    st.none(),
    st.datetimes(dt.datetime(1900, 1, 1), dt.datetime(2200, 1, 1), timezones=st.just(dt.UTC)),
)


def _strategy(dtype: pl.DataType) -> st.SearchStrategy[object]:
    if dtype == pl.Float64:
        return _FLOAT
    if isinstance(dtype, pl.Datetime):
        return _TIME
    return _INT if dtype.is_integer() else _TEXT


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries({n: _strategy(CANONICAL[n]) for n in retained_fields(ENCODING)}),
        min_size=1,
        max_size=8,
    ),
    st.one_of(st.none(), st.sampled_from(["a" * 64, "0f" * 32])),
)
def test_the_pipeline_and_the_standalone_verifier_compute_the_same_leaves(
    rows: list[dict[str, object]], commitment: str | None
) -> None:
    """Every encoding, on values at their edges: nulls, empty texts, separators, extremes,
    dates before 1970, -0.0. A row without an identity commitment has no leaf."""
    frame = pl.DataFrame(
        [{n: row.get(n) for n in CANONICAL} for row in rows], schema=CANONICAL
    ).with_columns(pl.lit(commitment, pl.String).alias("identity_commitment"))
    for version in (2, 3, ENCODING):
        ours = leaves_of(frame, version).to_list()
        assert ours == standalone.record_leaves(frame.to_arrow(), version)
        assert (ours == [None] * len(rows)) == (commitment is None)


def test_encoding_4_tells_apart_what_text_forms_could_confuse() -> None:
    """Bytes moved between neighbouring texts, an empty text against a null one, and a number
    against a text of its digits all change the leaf."""
    base = {n: None for n in CANONICAL} | {"record_id": "r1", "identity_commitment": "c" * 64}
    variants = [
        {"status": "ab", "error_code": "c"},
        {"status": "a", "error_code": "bc"},
        {"status": "", "error_code": "abc"},
        {"status": None, "error_code": "abc"},
        {"units": 12},
        {"units": 12, "status": "12"},
        {"units": 0},
    ]
    schema = {**CANONICAL, "identity_commitment": pl.String}
    frame = pl.DataFrame([base | v for v in variants], schema=schema)
    assert leaves_of(frame).n_unique() == len(variants)


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
    """Each example: the row, the bytes it is hashed as (text up to encoding 3, hex from 4),
    the digest (up to 3) and the leaf, recomputed by the pipeline and the standalone verifier."""
    doc = (ROOT / "docs" / "commitments.md").read_text()
    sections = doc.split("```json example\n")[1:]
    versions = set()
    for section in sections:
        row, rest = section.split("```", 1)
        data = re.search(r"```\n(.*?)\n```", rest, re.S)
        leaf_hex = re.search(r"leaf `([0-9a-f]{64})`", rest)
        assert data and leaf_hex, section[:200]
        fields = json.loads(row)
        version = fields.pop("_encoding")
        commitment = fields.pop("identity_commitment")
        frame = _row(fields).with_columns(pl.lit(commitment).alias("identity_commitment"))
        assert leaves_of(frame, version).to_list() == [leaf_hex.group(1)]
        assert standalone.record_leaves(frame.to_arrow(), version) == [leaf_hex.group(1)]
        if version >= 4:
            raw = bytes.fromhex("".join(data.group(1).split()))
            assert hashlib.sha256(raw).hexdigest() == leaf_hex.group(1)
            assert raw.endswith(commitment.encode())
        else:
            digest = re.search(r"digest `([0-9a-f]{64})`", rest)
            assert digest and hashlib.sha256(data.group(1).encode()).hexdigest() == digest[1]
            assert frame.select(record_digest(version)).item() == digest[1]
        versions.add(version)
    assert versions == {1, 2, 3, 4} and len(sections) == 4


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


# Commit blocks: a record's proof reads and hashes its block of COMMIT_BLOCK leaves, not its batch.
B = COMMIT_BLOCK


@pytest.fixture
def one_batch(settings: Settings) -> Resources:
    """Ingest batches bigger than the files: a file's leaves are cut into blocks in one batch."""
    return Resources.from_settings(dataclasses.replace(settings, batch_rows=100_000))


def _three_thousand(res: Resources, tmp_path: Path) -> tuple[str, str]:
    """A 3,000-record file over March and April; its SHA-256 and a person with records."""
    g = generate(
        "canonical_csv", tmp_path / "cdr.csv", 3000, start=dt.date(2025, 3, 1), months=2,
        bad_share=0.0, people=20,
    )  # fmt: skip
    report = ingest_file(res, g.path, as_of=dt.date(2025, 6, 1))
    assert report.gold == 3000
    assert g.truth is not None
    person = g.truth.filter(pl.col("e164").str.starts_with("+92")).get_column("e164")[0]
    return report.sha256, person


def _export(res: Resources, person: str) -> tuple[bytes, dict[str, Any], bytes]:
    """An export of `person` over March and April: the package, its manifest, the secret key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from pipeline.flows.export_request import ExportRequest

    private = X25519PrivateKey.generate()
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    secret = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    request = ExportRequest.from_mapping(
        {
            "case": "C-7", "authority": "FIA", "legal_basis": "PECA s.31",
            "requested_by": "a", "approved_by": "b", "identifiers": [person],
            "date_from": "2025-03-01", "date_to": "2025-04-30", "recipient_key": public.decode(),
        }
    )  # fmt: skip
    blob = res.store.get_bytes(run_export(res, request).package)
    verdict = verify_package(blob, secret, res.keyring.public_key_pem().encode())
    return blob, verdict.manifest, secret


def test_a_3000_record_file_is_sealed_in_blocks_and_its_proofs_in_row_groups_of_blocks(
    one_batch: Resources, tmp_path: Path
) -> None:
    sha, _ = _three_thousand(one_batch, tmp_path)
    body = json.loads(one_batch.store.get_bytes(parse_key(sha)))["body"]
    sizes = [B] * (3000 // B) + [3000 % B]
    assert body["batch_leaves"] == sizes
    proofs = pq.ParquetFile(io.BytesIO(one_batch.store.get_bytes(proof_key(sha))))
    groups = [proofs.metadata.row_group(g).num_rows for g in range(proofs.num_row_groups)]
    assert groups == [min(PROOF_GROUP, 3000 - s) for s in range(0, 3000, PROOF_GROUP)]
    assert PROOF_GROUP % B == 0  # whole blocks: a record's proof reads one row group
    leaves = proofs.read().column("leaf").to_pylist()
    roots = [merkle_root(pl.Series([v.hex() for v in leaves[s : s + n]])) for s, n in
             zip(range(0, 3000, B), sizes, strict=True)]  # fmt: skip
    assert body["batch_roots"] == roots and body["merkle_root"] == file_root(roots)


@pytest.mark.parametrize("n", [1, 2, B - 1, B, B + 1, 2 * B + 1, 2500, 4096])
def test_block_roots_are_the_merkle_roots_of_each_block_the_last_shorter(n: int) -> None:
    leaves = pl.Series([hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)])
    expected = [(min(B, n - s), merkle_root(leaves.slice(s, B))) for s in range(0, n, B)]
    assert block_roots(leaves) == expected


def test_an_export_of_records_in_several_blocks_verifies_and_a_tampered_leaf_is_caught(
    one_batch: Resources, tmp_path: Path
) -> None:
    res = one_batch
    sha, person = _three_thousand(res, tmp_path)
    blob, manifest, secret = _export(res, person)
    seal_pem = res.keyring.public_key_pem().encode()
    verdict = verify_package(blob, secret, seal_pem)
    assert verdict.ok, verdict.problems
    blocks = {p["batch"] for p in manifest["proofs"]}
    count = -(-3000 // B)
    assert len(blocks) > 1 and blocks <= set(range(count)), blocks  # in several blocks
    depth = (B - 1).bit_length()  # a path up a block, then up the tree of block roots
    assert all(
        len(p["batch_path"]) <= depth and 0 < len(p["file_path"]) <= (count - 1).bit_length()
        for p in manifest["proofs"]
    )
    folder = tmp_path / "package"
    extract(verdict, folder)
    (tmp_path / "seal.pem").write_bytes(seal_pem)
    code, out = _standalone("package", folder, tmp_path, "--public-key", str(tmp_path / "seal.pem"))
    assert code == 0 and f"{len(manifest['proofs']):,} records" in out, out
    code, out = _standalone("store", Path(res.settings.store), tmp_path)
    assert code == 0 and "6,000 records" in out, out  # gold and silver

    # One stored leaf changed, in the block of an exported record (not that record's own leaf).
    block = min(b for b in blocks if b < 3000 // B)  # a full block with an exported record
    exported = {p["leaf_index"] for p in manifest["proofs"] if p["batch"] == block}
    victim = next(i for i in range(block * B, (block + 1) * B) if i not in exported)
    key = proof_key(sha)
    table = pq.read_table(io.BytesIO(res.store.get_bytes(key)))
    leaves = table.column("leaf").to_pylist()
    leaves[victim] = bytes(32)
    buf = io.BytesIO()
    pq.write_table(pa.table({"leaf": pa.array(leaves, table.schema.field("leaf").type)}), buf,
                   row_group_size=B)  # fmt: skip
    res.store.put_bytes(key, buf.getvalue())
    report = run_verify(res, VerifyRequest(expectations=False))
    assert any("do not reach the sealed Merkle root" in p for p in report.problems())
    code, out = _standalone("store", Path(res.settings.store), tmp_path)
    assert code == 1 and "do not reach the sealed Merkle root" in out, out
    tampered, _, secret = _export(res, person)
    verdict = verify_package(tampered, secret, seal_pem)
    assert not verdict.ok
    assert any("do not reach the sealed root" in p for p in verdict.problems), verdict.problems


def test_a_file_sealed_in_batches_before_blocks_still_verifies_and_exports(
    one_batch: Resources, tmp_path: Path
) -> None:
    """An entry written before blocks states one root per ingest batch (up to 100,000 leaves):
    verifiers and the export take the sizes from the entry."""
    res = one_batch
    sha, person = _three_thousand(res, tmp_path)
    key = proof_key(sha)
    table = pq.read_table(io.BytesIO(res.store.get_bytes(key)))
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=2000)  # a row group per batch, as written then
    res.store.put_bytes(key, buf.getvalue())
    leaves = pl.Series([v.hex() for v in table.column("leaf").to_pylist()])
    entry = json.loads(res.store.get_bytes(parse_key(sha)))
    old = {k: v for k, v in entry["body"].items() if k != "signer"}
    roots = [merkle_root(leaves.head(2000)), merkle_root(leaves.slice(2000))]
    old |= {"batch_leaves": [2000, 1000], "batch_roots": roots, "merkle_root": file_root(roots)}
    assert old["merkle_root"] != entry["body"]["merkle_root"]  # another tree over the leaves
    res.store.put_bytes(parse_key(sha), json.dumps(sign(old, res.keyring.signing_key())).encode())

    assert run_verify(res, VerifyRequest(expectations=False)).ok
    code, out = _standalone("store", Path(res.settings.store), tmp_path)
    assert code == 0 and "6,000 records" in out, out  # gold and silver
    blob, manifest, secret = _export(res, person)
    verdict = verify_package(blob, secret, res.keyring.public_key_pem().encode())
    assert verdict.ok, verdict.problems
    proofs = manifest["proofs"]
    assert {p["batch"] for p in proofs} == {0, 1}
    assert max(len(p["batch_path"]) for p in proofs if p["batch"] == 0) == 11  # 2,000 leaves
    assert all(len(p["file_path"]) == 1 for p in proofs)


def test_one_batch_cut_into_blocks_keeps_the_batch_root() -> None:
    """COMMIT_BLOCK being a power of two, the root over a batch's block roots is the batch's root:
    a file ingested in one batch has the same root in blocks as it had before."""
    leaves = pl.Series([hashlib.sha256(str(i).encode()).hexdigest() for i in range(3000)])
    assert file_root(r for _, r in block_roots(leaves)) == merkle_root(leaves)


@pytest.mark.parametrize(
    "sizes",
    [[B, B, B // 2], [B, B - 3, B, B, 5], [1024, 452], [2000, 1000], [700, 100], [3000]],
)
def test_subtree_roots_are_the_roots_of_the_sizes_an_entry_states(sizes: list[int]) -> None:
    """Blocks of several batches, batches before blocks: each stated subtree's own root."""
    leaves = pl.Series([hashlib.sha256(str(i).encode()).hexdigest() for i in range(sum(sizes))])
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    expected = [merkle_root(leaves.slice(s, n)) for s, n in zip(starts, sizes, strict=True)]
    assert subtree_roots(leaves, sizes) == expected


def test_proofs_started_on_some_records_finish_the_same_for_all(
    one_batch: Resources, tmp_path: Path
) -> None:
    """An export proves the records found while it re-identifies them: what was proved early is
    reused, what was not is proved after, and the answer is the one proved at once."""
    sha, _ = _three_thousand(one_batch, tmp_path)
    records = read_tier(one_batch.store, "silver/").sample(300, seed=5)
    at_once = record_proofs(one_batch.store, records)
    early = prove(one_batch.store, records.head(100))
    assert len(early.paths) == 100
    assert record_proofs(one_batch.store, records, early) == at_once
    assert len(early.paths) == 300 and set(at_once[1]) == {sha}


@pytest.mark.tampers
def test_a_record_without_its_identity_commitment_is_named_not_passed(
    res: Resources, tmp_path: Path
) -> None:
    """A record whose commitment is emptied gets no leaf: an edit beside it cannot hide as an
    unknown comparison."""
    g = generate("canonical_csv", tmp_path / "a.csv", 300, start=dt.date(2025, 3, 1), months=1)
    sha = ingest_file(res, g.path, as_of=dt.date(2025, 6, 1)).sha256
    key = f"gold/cdr/year=2025/month=03/part-{sha}.parquet"
    gold = pl.read_parquet(io.BytesIO(res.store.get_bytes(key)))
    target = gold.get_column("record_id")[5]
    hit = pl.col("record_id") == target
    edited = gold.with_columns(
        pl.when(hit)
        .then(None)
        .otherwise(pl.col("identity_commitment"))
        .alias("identity_commitment"),
        pl.when(hit).then(pl.lit("FORGED")).otherwise(pl.col("status")).alias("status"),
    )
    buf = io.BytesIO()
    edited.write_parquet(buf)
    res.store.put_bytes(key, buf.getvalue())
    report = run_verify(res, VerifyRequest(expectations=False))
    assert not report.ok and any(f"record {target} " in p for p in report.problems())
    code, out = _standalone("store", Path(res.settings.store), tmp_path)
    assert code == 1 and f"record {target} " in out, out


def test_an_export_over_files_of_two_encodings_verifies_and_catches_an_edit_in_either(
    res: Resources, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file committed before encoding 4 keeps its version; one package holds both kinds of
    leaf, and each is recomputed under its own file's version."""
    old = generate("canonical_csv", tmp_path / "old.csv", 600, start=dt.date(2025, 3, 1), months=2, people=12)  # fmt: skip
    new = generate("canonical_csv", tmp_path / "new.csv", 700, start=dt.date(2025, 3, 1), months=2, people=12)  # fmt: skip
    monkeypatch.setattr(ingest_module, "ENCODING", 3)
    old_sha = ingest_file(res, old.path, source="pbx-old", as_of=dt.date(2025, 6, 1)).sha256
    monkeypatch.setattr(ingest_module, "ENCODING", ENCODING)
    new_sha = ingest_file(res, new.path, source="pbx-new", as_of=dt.date(2025, 6, 1)).sha256
    for sha, version in ((old_sha, 3), (new_sha, ENCODING)):
        body = json.loads(res.store.get_bytes(parse_key(sha)))["body"]
        assert body["commitment_encoding"] == version
    assert run_verify(res, VerifyRequest(expectations=False)).ok
    folder, _ = _extracted_export(res, old.truth, tmp_path)
    records = pl.read_parquet(folder / "records.parquet")
    assert set(records.get_column("source_sha256")) == {old_sha, new_sha}
    code, out = _standalone("package", folder, tmp_path)
    assert code == 0, out
    for sha in (old_sha, new_sha):
        target = records.filter(pl.col("source_sha256") == sha).get_column("record_id")[0]
        hit = (pl.col("record_id") == target) & (pl.col("source_sha256") == sha)
        records.with_columns(
            pl.when(hit).then(pl.lit("FORGED")).otherwise(pl.col("status")).alias("status")
        ).write_parquet(folder / "records.parquet")
        code, out = _standalone("package", folder, tmp_path)
        assert code == 1 and f"record {target}: its fields do not reach the sealed root" in out


def _forgery() -> tuple[pa.Table, pa.Table]:
    """A record, and a forgery of it that encoding 4 would hash alike if it read each column as
    the type it claims: `units` as the 5-byte text `ANSWE` (the header value of `units=5`), the
    texts after it shifted left, five characters taken off the commitment."""
    c = "5b1f0c3a2e4d6f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708"
    row: dict[str, object] = {f: None for f in retained_fields(ENCODING)}
    row |= {"record_id": "call-1", "source_sha256": "a" * 64, "source_line": 17, "units": 5,
            "event_time": dt.datetime(2025, 3, 15, 9, 30, tzinfo=dt.UTC), "channel": "voice",
            "status": "ANSWERED", "currency": "USD", "duration_s": 65.5}  # fmt: skip
    forged = row | {"units": "ANSWE", "status": "REDUSD" + c[:2], "currency": c[2:5]}
    times = {"event_time": pa.timestamp("us", "UTC"), "end_time": pa.timestamp("us", "UTC")}

    def table(
        values: dict[str, object], commitment: str, types: dict[str, pa.DataType]
    ) -> pa.Table:
        columns = {f: pa.array([values[f]], types.get(f)) for f in retained_fields(ENCODING)}
        return pa.table(columns | {"identity_commitment": pa.array([commitment])})

    return table(row, c, times), table(forged, c[5:], times | {"units": pa.string()})


def test_encoding_4_reads_each_field_as_its_kind_so_bytes_cannot_move_between_fields(
    tmp_path: Path,
) -> None:
    original, forged = _forgery()
    sealed = standalone.record_leaves(original, ENCODING)[0]
    assert sealed == leaves_of(pl.from_arrow(original), ENCODING).item()  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="units is stored as string"):
        standalone.record_leaves(forged, ENCODING)
    with pytest.raises(pl.exceptions.InvalidOperationError):
        leaves_of(pl.from_arrow(forged), ENCODING)  # type: ignore[arg-type]
    # A float stored as the integer of its bits is refused too.
    bits = struct.unpack(">q", struct.pack(">d", 65.5))[0]
    as_int = original.set_column(
        original.schema.get_field_index("duration_s"), "duration_s", pa.array([bits])
    )
    with pytest.raises(ValueError, match="duration_s is stored as int64"):
        standalone.record_leaves(as_int, ENCODING)
    assert leaves_of(pl.from_arrow(as_int), ENCODING).item() != sealed  # type: ignore[arg-type]
    # A commitment that is not 64 hex characters gives no leaf.
    short = original.set_column(
        original.schema.get_field_index("identity_commitment"), "identity_commitment",
        pa.array(["5b1f0c"]),
    )  # fmt: skip
    assert standalone.record_leaves(short, ENCODING) == [None]
    assert leaves_of(pl.from_arrow(short), ENCODING).to_list() == [None]  # type: ignore[arg-type]


def test_encoding_4_gives_one_leaf_whatever_type_parquet_reads_a_column_back_as() -> None:
    """Timestamps in other units and zones, narrower integers, dictionary texts and columns
    with no type (all null) are the same values: the same leaf, in both implementations."""
    original, _ = _forgery()
    frame = pl.from_arrow(original)
    assert isinstance(frame, pl.DataFrame)
    sealed = leaves_of(frame, ENCODING).item()
    variants = [
        frame.with_columns(
            pl.col("event_time").dt.convert_time_zone("Asia/Karachi").dt.cast_time_unit("ns")
        ),
        frame.with_columns(pl.col("units").cast(pl.Int32), pl.col("status").cast(pl.Categorical)),
        frame.with_columns(pl.lit(None).alias("end_time"), pl.lit(None).alias("error_code")),
    ]
    for variant in variants:
        assert leaves_of(variant, ENCODING).item() == sealed
        assert standalone.record_leaves(variant.to_arrow(), ENCODING) == [sealed]


@pytest.mark.parametrize("n", [2, 3, 7, 100, 513])
def test_a_small_tree_level_hashed_in_python_equals_the_polars_pass(
    n: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.proof import commitments

    level = pl.Series([hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)])
    by_python = commitments._parents(level).to_list()
    monkeypatch.setattr(commitments, "SMALL_LEVEL", 0)
    by_polars = commitments._parents(level).to_list()
    assert by_python == by_polars and len(by_python) == (n + 1) // 2
    assert by_python[0] == hashlib.sha256(f"N{level[0]}{level[1]}".encode()).hexdigest()

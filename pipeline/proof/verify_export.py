"""What a recipient runs on a disclosure package: decrypt, then check everything it claims.

Checks, in order: the package opens with the recipient's private key and every segment
authenticates; the manifest's detached signature verifies with the operator's seal public key;
each file's SHA-256 and size match the manifest; the CSV and Parquet hold the same records, as
many as the manifest counts; every source file's seal and parse entries verify with the same key
and link; and every record's leaf, recomputed from its retained fields, climbs its Merkle path
to its batch's sealed root and on to the file's sealed root. Any failure is named.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pipeline.core import layout
from pipeline.core.errors import failures
from pipeline.proof.commitments import encoding_of, record_leaves, root_from_path
from pipeline.proof.integrity import SealError, verify_pair
from pipeline.proof.package import PackageError, decrypt_with, load_private_key

FILES = ("manifest.json", "manifest.json.sig", "records.csv", "records.parquet")
#: the manifest's own field names: a missing one is named, any other key is not quoted
MANIFEST_FIELDS = frozenset(
    {"counts", "records", "sources", "seal", "parse", "proofs", "source_sha256", "leaf_index",
     "batch", "batch_path", "file_path", "batch_roots", "merkle_root", "request", "case"}
)  # fmt: skip
#: the files that vouch for the others, not listed among them
SIGNING = ("manifest.json", "manifest.json.sig")


@dataclass
class ExportVerdict:
    problems: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems and bool(self.checks)


def verify_package(
    blob: bytes, private_pem: bytes, seal_public_pem: bytes, passphrase: bytes | None = None
) -> ExportVerdict:
    """Open a package with the recipient's private key (and its passphrase, if it has one) and
    check everything it claims."""
    try:
        _, payload = decrypt_with(load_private_key(private_pem, passphrase), blob)
    except PackageError as exc:
        return ExportVerdict(problems=[str(exc)])
    return verify_payload(payload, seal_public_pem, "the recipient key")


def verify_payload(
    payload: bytes, seal_public_pem: bytes, opened_with: str, files: tuple[str, ...] = FILES
) -> ExportVerdict:
    """Check a decrypted package (a tar of `files`): signature, digests, records, proofs."""
    verdict = ExportVerdict()
    try:
        public = serialization.load_pem_public_key(seal_public_pem)
        if not isinstance(public, Ed25519PublicKey):
            raise ValueError
    except ValueError:
        verdict.problems.append("the seal public key is not an Ed25519 public key in PEM")
        return verdict
    verdict.checks.append(f"decrypted and authenticated with {opened_with}")
    try:
        with tarfile.open(fileobj=io.BytesIO(payload)) as archive:
            for member in archive.getmembers():
                data = archive.extractfile(member)
                if data is not None and member.name in files:
                    verdict.files[member.name] = data.read()
    except tarfile.TarError:
        verdict.problems.append("the decrypted package is not a readable archive")
        return verdict
    missing = [name for name in files if name not in verdict.files]
    if missing:
        verdict.problems.append(f"the package lacks {', '.join(missing)}")
        return verdict
    body = verdict.files["manifest.json"]
    try:
        public.verify(base64.b64decode(verdict.files["manifest.json.sig"]), body)
    except (InvalidSignature, ValueError):
        verdict.problems.append(
            "the manifest's signature does not verify with the seal public key "
            "(changed, or signed by another key)"
        )
        return verdict
    verdict.checks.append("manifest signature verifies with the seal public key")
    try:
        manifest = verdict.manifest = json.loads(body)
        listed = {name: (e["sha256"], e["size"]) for name, e in manifest["files"].items()}
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        verdict.problems.append("the manifest does not list the package's files and digests")
        return verdict
    # Every file read below is covered by a digest the signature vouches for.
    for name in files:
        if name not in SIGNING and name not in listed:
            verdict.problems.append(f"{name} is not listed in the manifest")
    for name, (sha256, size) in listed.items():
        data = verdict.files.get(name, b"")
        if hashlib.sha256(data).hexdigest() != sha256 or len(data) != size:
            shown = name if name in files else "a file the manifest lists"
            verdict.problems.append(f"{shown} does not match its digest in the manifest")
    if verdict.problems:
        return verdict
    verdict.checks.append("file digests match the manifest")
    try:
        _check_records(verdict, public)
    except KeyError as exc:  # a key the manifest's signer left out, or a value used as one
        key = exc.args[0] if exc.args else None
        named = repr(key) if isinstance(key, str) and key in MANIFEST_FIELDS else "a field"
        verdict.problems.append(f"the manifest lacks {named} where a check needs it")
    except failures() as exc:  # whatever the shape, named
        # By kind only: an engine's message can quote the values it could not read.
        verdict.problems.append(
            f"the records do not have the record schema, or the manifest is malformed "
            f"({type(exc).__name__})"
        )
    return verdict


def _check_records(verdict: ExportVerdict, public: Ed25519PublicKey) -> None:
    """Counts, then every record's leaf up its Merkle path to its source file's sealed root.
    A file or manifest of the wrong shape raises: `verify_payload` names it."""
    manifest = verdict.manifest
    records = pl.read_parquet(io.BytesIO(verdict.files["records.parquet"]))
    table = pl.read_csv(io.BytesIO(verdict.files["records.csv"]), infer_schema=False)
    count = manifest["counts"]["records"]
    if not len(records) == len(table) == count:
        counted = count if isinstance(count, int) else "something else"
        verdict.problems.append(
            f"{len(records)} Parquet and {len(table)} CSV records where the manifest counts "
            f"{counted}"
        )
        return
    if sorted(records.get_column("record_id")) != sorted(table.get_column("record_id")):
        verdict.problems.append("the CSV and Parquet records differ")
        return
    roots: dict[str, dict[str, Any]] = {}
    for sha, entries in manifest["sources"].items():
        try:
            _, roots[sha] = verify_pair(entries["seal"], entries["parse"], public, sha)
        except SealError as exc:
            verdict.problems.append(f"source {_digest_label(sha)}: {exc}")
    proofs = {(p["source_sha256"], p["leaf_index"]): p for p in manifest["proofs"]}
    encodings = {sha: encoding_of(parse) for sha, parse in roots.items()}
    leaves = record_leaves(records, encodings).to_list()
    keys = records.select("record_id", "source_sha256", "leaf_index").iter_rows()
    for (record_id, sha, index), leaf_hex in zip(keys, leaves, strict=True):
        proof, parse = proofs.pop((sha, index), None), roots.get(sha)
        if proof is None or parse is None:
            verdict.problems.append(f"record {record_id}: no proof against a verified seal")
            continue
        batch_root = root_from_path(leaf_hex, proof["batch_path"])
        if batch_root != parse["batch_roots"][proof["batch"]]:
            verdict.problems.append(
                f"record {record_id}: its fields do not reach the sealed root (changed)"
            )
        elif root_from_path(batch_root, proof["file_path"]) != parse["merkle_root"]:
            verdict.problems.append(f"record {record_id}: its batch does not reach the file root")
    if proofs:
        verdict.problems.append(f"{len(proofs)} proofs have no record (records dropped)")
    if not verdict.problems:
        verdict.checks.append(
            f"{len(records)} records match their original seals "
            f"({len(roots)} source files, Merkle paths to the signed roots)"
        )


def case_of(manifest: dict[str, Any]) -> str:
    """The case a verified package was exported for, as its manifest states it (a case
    reference, or a note that it states none)."""
    request = manifest.get("request")
    case = request.get("case") if isinstance(request, dict) else None
    try:
        return layout.case(case)  # type: ignore[arg-type]
    except layout.LayoutError:
        return "not stated as a case reference"


def _digest_label(sha: object) -> str:
    """A source file named by its digest's start, when it is a digest at all."""
    try:
        return f"{layout.sha(sha)[:12]}…"  # type: ignore[arg-type]
    except layout.LayoutError:
        return "(a key that is not a SHA-256 digest)"


def extract(verdict: ExportVerdict, target: Path) -> list[Path]:
    """Write the decrypted files to `target` (only when asked: they hold identifiers)."""
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in verdict.files.items():
        path = target / name
        path.write_bytes(data)
        path.chmod(0o600)
        written.append(path)
    return written

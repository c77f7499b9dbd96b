"""A person's own copy of their records: the package format, its encryption and its verifier.

The package is a tar of `FILES`: `records.json` (one object per communication, documented),
`records.csv` (the same, flat), `records.parquet` (each record's retained fields as gold holds
them: no end user's identifier, so the proofs can be checked without disclosing anyone),
`README.txt` (plain language), `manifest.json` (counts, purged months, each record's Merkle path
to its file's sealed root) and `manifest.json.sig` (Ed25519, the seal key).

It is encrypted for delivery either to a recipient's public key (`pipeline.proof.package`, as the
law-enforcement package) or to a passphrase given to the person out of band: scrypt
(n=2^15, r=8, p=1, random 16-byte salt) derives an AES-256 key, and the tar is encrypted in
authenticated AES-GCM segments (`pipeline.proof.crypto`) whose associated data is the header.
Layout: `CDRP1\\n`, a 4-byte big-endian header length, the header (JSON), the segments.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import os
import tarfile
from typing import Any

import polars as pl
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from pipeline.proof.crypto import DecryptionError, decrypt_stream
from pipeline.proof.package import (
    MAGIC as KEY_MAGIC,
)
from pipeline.proof.package import (
    PackageError,
    decrypt_with,
    encrypt_for,
    frame,
    load_private_key,
    load_recipient_key,
    unframe,
)
from pipeline.proof.verify_export import ExportVerdict, verify_payload

FORMAT = "cdr-subject-access/1"
MAGIC = b"CDRP1\n"
FILES = (
    "manifest.json",
    "manifest.json.sig",
    "records.json",
    "records.csv",
    "records.parquet",
    "README.txt",
)
SCRYPT = {"n": 2**15, "r": 8, "p": 1}
MIN_PASSPHRASE = 12


def _derive(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())


def encrypt_with_passphrase(passphrase: str, payload: bytes) -> bytes:
    salt = os.urandom(16)
    header = {"kdf": "scrypt", "salt": base64.b64encode(salt).decode(), **SCRYPT}
    header["alg"] = "A256GCM-segments"
    return frame(MAGIC, header, _derive(passphrase, salt, **SCRYPT), payload)


def decrypt_with_passphrase(passphrase: str, blob: bytes) -> bytes:
    """The payload; PackageError if the passphrase is wrong or a byte changed."""
    header, head, body = unframe(
        MAGIC, blob, "not a passphrase-encrypted package (no CDRP1 header)"
    )
    try:
        salt = base64.b64decode(header["salt"])
        params = {k: int(header[k]) for k in ("n", "r", "p")}
    except (ValueError, KeyError, TypeError):
        raise PackageError("the package header is damaged") from None
    if params["n"] > 2**20 or params["r"] > 16 or params["p"] > 4:
        raise PackageError("the package asks for unreasonable scrypt parameters")
    key = _derive(passphrase, salt, **params)
    try:
        return b"".join(decrypt_stream(key, io.BytesIO(body), head))
    except DecryptionError:
        raise PackageError("wrong passphrase, or the package was modified") from None


def seal_for(payload: bytes, recipient_key: str = "", passphrase: str = "") -> bytes:
    """Encrypt to the recipient's public key if one is given, else to the passphrase."""
    if recipient_key:
        return encrypt_for(load_recipient_key(recipient_key), payload)
    return encrypt_with_passphrase(passphrase, payload)


def signed_archive(
    files: dict[str, bytes], manifest: dict[str, Any], signer: Ed25519PrivateKey
) -> bytes:
    """A tar of the files, the manifest (with every file's digest) and its signature."""
    import hashlib

    manifest["files"] = {
        name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        for name, data in files.items()
    }
    # Compact: the manifest holds every source's signed entries, and JSON's fast encoder
    # writes no indentation (a verifier parses it; `jq` shows it indented).
    body = json.dumps(manifest, sort_keys=True, default=str, separators=(",", ":")).encode()
    everything = {**files, "manifest.json": body}
    everything["manifest.json.sig"] = base64.b64encode(signer.sign(body)) + b"\n"
    mtime = int(dt.datetime.fromisoformat(manifest["created_at"]).timestamp())
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name, data in everything.items():
            entry = tarfile.TarInfo(name)
            entry.size, entry.mtime, entry.mode = len(data), mtime, 0o600
            archive.addfile(entry, io.BytesIO(data))
    return out.getvalue()


def verify_access(
    blob: bytes, seal_public_pem: bytes, *, passphrase: str = "", private_pem: bytes = b""
) -> ExportVerdict:
    """Open the package (passphrase or private key) and check everything it claims: the
    signature, the digests, every record up its Merkle path to its sealed root, and that
    records.json and records.csv hold exactly the proven records."""
    try:
        if blob.startswith(KEY_MAGIC):
            _, payload = decrypt_with(load_private_key(private_pem), blob)
            opened = "the recipient key"
        else:
            payload, opened = decrypt_with_passphrase(passphrase, blob), "the passphrase"
    except PackageError as exc:
        return ExportVerdict(problems=[str(exc)])
    verdict = verify_payload(payload, seal_public_pem, opened, FILES)
    if verdict.problems:
        return verdict
    proven = sorted(
        pl.read_parquet(io.BytesIO(verdict.files["records.parquet"]))
        .get_column("record_id")
        .to_list()
    )
    try:
        listed = sorted(
            r["record_id"] for r in json.loads(verdict.files["records.json"])["records"]
        )
    except (ValueError, KeyError, TypeError, RecursionError):
        verdict.problems.append("records.json is not a list of records")
        return verdict
    if listed != proven:
        verdict.problems.append("records.json does not hold exactly the proven records")
    else:
        verdict.checks.append("records.json holds exactly the proven records")
    return verdict

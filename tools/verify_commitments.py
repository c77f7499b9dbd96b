#!/usr/bin/env python3
"""Recompute every record commitment of a CDR store or an extracted export package, alone.

Uses only the Python standard library and pyarrow (to read Parquet): nothing of the pipeline,
so an auditor can read it in full and run it anywhere. The encoding it implements is the one in
docs/commitments.md.

    python verify_commitments.py store STORE_FOLDER [--public-key seal.pem]
    python verify_commitments.py package EXTRACTED_FOLDER [--public-key seal.pem]

`store`: for every ingested file, the stored leaves (`proofs/<sha256>.parquet`) against the
batch roots and file root of its parse entry, and every gold and silver record's leaf, recomputed
from its fields, against the leaf at its index. `package`: the folder `verify-export --extract`
wrote; every record's leaf up its Merkle path to its source file's sealed root, and every file
against its digest in the manifest. With `--public-key` (the operator's seal key, PEM), the seal
and parse entries and the manifest's signature are checked too (Ed25519, RFC 8032).

Exit status: 0 verified, 1 a mismatch (each one named), 2 nothing to verify or bad arguments.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import struct
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

# The canonical fields, in order (docs/commitments.md). Encoding 2 leaves out `source` and
# `source_file`, which name where the bytes arrived, not what they hold, and adds
# `channel_detail`; encoding 3 adds the domains of e-mail and SIP parties; encoding 4 covers the
# fields of 3 in a fixed-width form.
ALL_FIELDS = [
    "record_id", "source", "source_file", "source_sha256", "source_line", "event_time",
    "end_time", "channel", "channel_detail", "direction", "customer_id", "origin", "origin_kind",
    "destination", "destination_kind", "origin_country", "destination_country", "origin_domain",
    "destination_domain", "origin_network", "destination_network", "route_id", "duration_s",
    "units", "status", "error_code", "price", "currency",
]  # fmt: skip
DOMAINS = ("origin_domain", "destination_domain")
FIELDS = {
    1: [f for f in ALL_FIELDS if f not in ("channel_detail", *DOMAINS)],
    2: [f for f in ALL_FIELDS if f not in ("source", "source_file", *DOMAINS)],
    3: [f for f in ALL_FIELDS if f not in ("source", "source_file")],
}
FIELDS[4] = FIELDS[3]
PERSONAL_KINDS = {"msisdn", "email", "sip"}


# --- the canonical encoding -------------------------------------------------------------------


def float_v2(x: float) -> str:
    """Encoding 2: the signed 64-bit integer with the same bits as the IEEE-754 binary64 value."""
    return str(struct.unpack(">q", struct.pack(">d", x))[0])


def float_v1(x: float) -> str:
    """Encoding 1: the shortest round-trip decimal as polars wrote it (exponent unpadded,
    and plain decimal from 1e-5 up)."""
    if x != x:
        return "NaN"
    text = repr(x)
    if "e-" in text:
        mantissa, exponent = text.split("e-")
        if int(exponent) == 5:
            return format(Decimal(text), "f")
        return f"{mantissa}e-{int(exponent)}"
    return text


def column_texts(table: pa.Table, name: str, version: int) -> list[str | None]:
    """Each row's text of one field (None for null), by the field's Parquet type."""
    column = table.column(name)
    kind = column.type
    if pa.types.is_timestamp(kind):
        values = column.cast(pa.timestamp("us", kind.tz)).cast(pa.int64()).to_pylist()
        return [None if v is None else str(v) for v in values]
    if pa.types.is_floating(kind):
        encode = float_v2 if version >= 2 else float_v1
        return [None if v is None else encode(v) for v in column.to_pylist()]
    return [None if v is None else str(v) for v in column.to_pylist()]


def record_digests(table: pa.Table, version: int) -> list[str]:
    """Encodings 1 to 3: SHA-256 (hex) of each row's canonical text, `<bytes>:<text>` or `-`,
    joined by `|`."""
    if version not in FIELDS or version > 3:
        raise ValueError(f"encoding {version!r} has no record digest")
    fields = FIELDS[version]
    columns = [column_texts(table, name, version) for name in fields]
    out = []
    for row in zip(*columns, strict=True):
        parts = ["-" if v is None else f"{len(v.encode())}:{v}" for v in row]
        out.append(hashlib.sha256("|".join(parts).encode()).hexdigest())
    return out


def leaf(digest: str, identity_commitment: str) -> str:
    """Encodings 1 to 3: the leaf of a record digest and its identity commitment."""
    return hashlib.sha256(f"L{digest}{identity_commitment}".encode()).hexdigest()


# Encoding 4 reads every field as its own kind, whatever type a Parquet column claims: a text
# stored where a number belongs (or a float as an integer) is refused, never hashed as if it
# were one, since the fixed-width form would then let bytes move between fields.
INTEGERS = ("source_line", "units")
TIMESTAMPS = ("event_time", "end_time")
FLOATS = ("duration_s", "price")
COMMITMENT = re.compile("[0-9a-f]{64}")


def fixed_values(table: pa.Table, name: str) -> list[tuple[int, bytes] | None]:
    """Encoding 4: each row's (64-bit value, text bytes) of one field, None for null. A text's
    value is its length in bytes; an integer is itself; a timestamp its microseconds since the
    epoch; a float the signed integer with its IEEE-754 binary64 bits."""
    column = table.column(name)
    kind = column.type
    if pa.types.is_dictionary(kind):
        column, kind = column.cast(kind.value_type), kind.value_type
    if pa.types.is_null(kind):
        return [None] * len(column)
    expected = {
        **dict.fromkeys(INTEGERS, pa.types.is_integer),
        **dict.fromkeys(TIMESTAMPS, pa.types.is_timestamp),
        **dict.fromkeys(FLOATS, pa.types.is_floating),
    }.get(name, lambda t: pa.types.is_string(t) or pa.types.is_large_string(t))
    if not expected(kind):
        raise ValueError(f"{name} is stored as {kind}, not as the kind encoding 4 commits")
    if pa.types.is_timestamp(kind):
        values = column.cast(pa.timestamp("us", kind.tz)).cast(pa.int64()).to_pylist()
        return [None if v is None else (v, b"") for v in values]
    if pa.types.is_floating(kind):
        return [
            None if v is None else (struct.unpack(">q", struct.pack(">d", v))[0], b"")
            for v in column.to_pylist()
        ]
    if pa.types.is_integer(kind):
        return [None if v is None else (v, b"") for v in column.to_pylist()]
    texts = [None if v is None else v.encode() for v in column.to_pylist()]
    return [None if t is None else (len(t), t) for t in texts]


def leaf_input_v4(row: list[tuple[int, bytes] | None], identity_commitment: str) -> bytes:
    """Encoding 4: `L`, a byte per field (1 present, 0 null), a signed 64-bit big-endian value
    per field (0 for null), the present texts' bytes, then the identity commitment (hex)."""
    flags = bytes(0 if v is None else 1 for v in row)
    values = struct.pack(f">{len(row)}q", *(0 if v is None else v[0] for v in row))
    texts = b"".join(v[1] for v in row if v is not None)
    return b"L" + flags + values + texts + identity_commitment.encode()


def record_leaves(table: pa.Table, version: int) -> list[str | None]:
    """Each row's leaf (hex) under an encoding; None where it has no identity commitment (or,
    from encoding 4, one that is not 64 lowercase hex characters)."""
    if version not in FIELDS:
        raise ValueError(f"unknown commitment encoding {version!r}")
    commitments = table.column("identity_commitment").to_pylist()
    if version <= 3:
        digests = record_digests(table, version)
        return [
            None if c is None else leaf(d, c) for d, c in zip(digests, commitments, strict=True)
        ]
    columns = [fixed_values(table, name) for name in FIELDS[version]]
    return [
        hashlib.sha256(leaf_input_v4(list(row), c)).hexdigest()
        if c is not None and COMMITMENT.fullmatch(c)
        else None
        for row, c in zip(zip(*columns, strict=True), commitments, strict=True)
    ]


def node(left: str, right: str) -> str:
    return hashlib.sha256(f"N{left}{right}".encode()).hexdigest()


def merkle_root(leaves: list[str]) -> str:
    """Pairs left to right; an odd last node is promoted; no leaves: SHA-256("E")."""
    if not leaves:
        return hashlib.sha256(b"E").hexdigest()
    level = leaves
    while len(level) > 1:
        pairs = len(level) - len(level) % 2
        level = [node(level[i], level[i + 1]) for i in range(0, pairs, 2)] + level[pairs:]
    return level[0]


def root_from_path(leaf_hex: str, path: list[list[str]]) -> str:
    current = leaf_hex
    for side, sibling in path:
        current = node(sibling, current) if side == "L" else node(current, sibling)
    return current


def as_committed(table: pa.Table) -> pa.Table:
    """Silver rows as they were committed: an end user's token counts as null (like gold)."""
    for side in ("origin", "destination"):
        kinds = table.column(f"{side}_kind").to_pylist()
        values = table.column(side).to_pylist()
        kept = [None if k in PERSONAL_KINDS else v for k, v in zip(kinds, values, strict=True)]
        table = table.set_column(
            table.schema.get_field_index(side), side, pa.array(kept, pa.string())
        )
    return table


# --- Ed25519 signature check (RFC 8032, section 6), for the seal and parse entries ----------

_P = 2**255 - 19
_D = -121665 * pow(121666, _P - 2, _P) % _P
_Q = 2**252 + 27742317777372353535851937790883648493
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)
_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")


def _add(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    x = (a[1] - a[0]) * (b[1] - b[0]) % _P
    y = (a[1] + a[0]) * (b[1] + b[0]) % _P
    c, d = 2 * a[3] * b[3] * _D % _P, 2 * a[2] * b[2] % _P
    e, f, g, h = y - x, d - c, d + c, y + x
    return (e * f, g * h, f * g, e * h)


def _mul(s: int, point: tuple[int, ...]) -> tuple[int, ...]:
    out = (0, 1, 1, 0)
    while s > 0:
        if s & 1:
            out = _add(out, point)
        point, s = _add(point, point), s >> 1
    return out


def _x(y: int, sign: int) -> int | None:
    if y >= _P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P)
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P:
        return None
    return _P - x if (x & 1) != sign else x


def _point(raw: bytes) -> tuple[int, ...] | None:
    y = int.from_bytes(raw, "little")
    sign, y = y >> 255, y & ((1 << 255) - 1)
    x = _x(y, sign)
    return None if x is None else (x, y, 1, x * y % _P)


_GY = 4 * pow(5, _P - 2, _P) % _P
_GX = _x(_GY, 0) or 0
_G = (_GX, _GY, 1, _GX * _GY % _P)


def ed25519_verify(public: bytes, message: bytes, signature: bytes) -> bool:
    if len(public) != 32 or len(signature) != 64:
        return False
    a, r = _point(public), _point(signature[:32])
    s = int.from_bytes(signature[32:], "little")
    if a is None or r is None or s >= _Q:
        return False
    h = int.from_bytes(hashlib.sha512(signature[:32] + public + message).digest(), "little") % _Q
    left, right = _mul(s, _G), _add(r, _mul(h, a))
    return (left[0] * right[2] - right[0] * left[2]) % _P == 0 and (
        left[1] * right[2] - right[1] * left[2]
    ) % _P == 0


def public_key_from_pem(text: str) -> bytes:
    der = base64.b64decode("".join(line for line in text.splitlines() if "-----" not in line))
    if len(der) != 44 or not der.startswith(_SPKI_PREFIX):
        raise ValueError("not an Ed25519 public key in PEM (SubjectPublicKeyInfo)")
    return der[len(_SPKI_PREFIX) :]


def canonical_json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def entry_signed(entry: dict[str, Any], public: bytes) -> bool:
    try:
        signature = base64.b64decode(entry["signature"])
    except (KeyError, ValueError):
        return False
    return ed25519_verify(public, canonical_json(entry["body"]), signature)


def pair_problem(
    seal: dict[str, Any], parse: dict[str, Any], sha: str, public: bytes
) -> str | None:
    """Why a file's seal and parse entries do not verify together, or None."""
    if not entry_signed(seal, public) or not entry_signed(parse, public):
        return "a seal or parse entry's signature does not verify"
    digest = hashlib.sha256(canonical_json(seal)).hexdigest()
    if parse["body"].get("seal_digest") != digest or seal["body"].get("sha256") != sha:
        return "the parse entry does not name this file's seal"
    return None


# --- a store ----------------------------------------------------------------------------------


def _read(path: Path) -> pa.Table:
    return pq.read_table(path)


def verify_store(root: Path, public: bytes | None) -> tuple[int, list[str], list[str]]:
    """(files checked, report lines, problems) for a store folder."""
    lines: list[str] = []
    problems: list[str] = []
    files = 0
    for parse_path in sorted((root / "seals").glob("*.parse.json")):
        sha = parse_path.name[: -len(".parse.json")]
        files += 1
        try:
            parse = json.loads(parse_path.read_bytes())
            body = parse["body"]
            if public is not None:
                seal = json.loads((root / "seals" / f"{sha}.seal.json").read_bytes())
                if problem := pair_problem(seal, parse, sha, public):
                    raise ValueError(problem)
            if body.get("status") != "ingested":
                lines.append(f"ok    {sha[:12]}  no records ({body.get('status')})")
                continue
            checked = _verify_file(root, sha, body)
            version = body.get("commitment_encoding", 1)
            lines.append(f"ok    {sha[:12]}  {checked:,} records, encoding {version}, root ok")
        except Exception as exc:  # every failure is named and the next file is still checked
            problems.append(f"{sha[:12]}: {exc}")
            lines.append(f"FAIL  {sha[:12]}  {exc}")
    return files, lines, problems


def _verify_file(root: Path, sha: str, body: dict[str, Any]) -> int:
    leaves = [v.hex() for v in _read(root / "proofs" / f"{sha}.parquet").column("leaf").to_pylist()]
    sizes = body["batch_leaves"]
    if len(leaves) != sum(sizes) or len(leaves) != body["gold"]:
        raise ValueError(f"{len(leaves)} leaves stored, {body['gold']} records sealed")
    roots, start = [], 0
    for n in sizes:
        roots.append(merkle_root(leaves[start : start + n]))
        start += n
    if roots != body["batch_roots"] or merkle_root(roots) != body["merkle_root"]:
        raise ValueError("the stored leaves do not reach the sealed Merkle root")
    version = body.get("commitment_encoding", 1)
    checked = 0
    for tier in ("gold", "silver"):
        for month, count in sorted(body["by_month"].get(tier, {}).items()):
            y, m = month.split("-")
            path = root / f"{tier}/cdr/year={y}/month={m}/part-{sha}.parquet"
            if not path.exists():
                if tier == "silver" and (root / f"retention/purged/{month}.json").exists():
                    continue  # identifiers purged: gold still holds the record
                raise ValueError(f"{tier} {month}: {path.name} is missing")
            table = _read(path)
            if tier == "silver":
                table = as_committed(table)
            _check_rows(table, leaves, version, f"{tier} {month}")
            if table.num_rows != count:
                raise ValueError(f"{tier} {month}: {table.num_rows} records, {count} sealed")
            checked += table.num_rows
    return checked


def _check_rows(table: pa.Table, leaves: list[str], version: int, label: str) -> None:
    ids = table.column("record_id").to_pylist()
    indices = table.column("leaf_index").to_pylist()
    if len(set(indices)) != len(indices):
        raise ValueError(f"{label}: a leaf index appears more than once")
    computed = record_leaves(table, version)
    for rid, index, leaf_hex in zip(ids, indices, computed, strict=True):
        if index is None or not 0 <= index < len(leaves):
            raise ValueError(f"{label}: record {rid} is not in the sealed tree")
        if leaf_hex != leaves[index]:
            raise ValueError(f"{label}: record {rid} (leaf {index}) differs from its seal")


# --- an extracted export package ----------------------------------------------------------------


def verify_package(folder: Path, public: bytes | None) -> tuple[int, list[str], list[str]]:
    manifest_bytes = (folder / "manifest.json").read_bytes()
    manifest = json.loads(manifest_bytes)
    problems: list[str] = []
    if public is not None:
        signature = base64.b64decode((folder / "manifest.json.sig").read_bytes())
        if not ed25519_verify(public, manifest_bytes, signature):
            problems.append("manifest.json: its signature does not verify with the seal key")
    for name, expected in manifest["files"].items():
        data = (folder / name).read_bytes()
        if hashlib.sha256(data).hexdigest() != expected["sha256"] or len(data) != expected["size"]:
            problems.append(f"{name} does not match its digest in the manifest")
    parses = {}
    for sha, entries in manifest["sources"].items():
        if public is not None and (problem := pair_problem(entries["seal"], entries["parse"], sha, public)):  # fmt: skip
            problems.append(f"source {sha[:12]}: {problem}")
        parses[sha] = entries["parse"]["body"]
    records = _read(folder / "records.parquet")
    proofs = {(p["source_sha256"], p["leaf_index"]): p for p in manifest["proofs"]}
    shas = records.column("source_sha256").to_pylist()
    ids = records.column("record_id").to_pylist()
    indices = records.column("leaf_index").to_pylist()
    by_version = {
        v: record_leaves(records, v)
        for v in {parses.get(s, {}).get("commitment_encoding", 1) for s in shas}
    }
    for row, (sha, rid, index) in enumerate(zip(shas, ids, indices, strict=True)):
        parse, proof = parses.get(sha), proofs.pop((sha, index), None)
        leaf_hex = None if parse is None else by_version[parse.get("commitment_encoding", 1)][row]
        if parse is None or proof is None:
            problems.append(f"record {rid}: no proof against a sealed file")
            continue
        if leaf_hex is None:
            problems.append(f"record {rid}: it has no identity commitment")
            continue
        batch_root = root_from_path(leaf_hex, proof["batch_path"])
        if batch_root != parse["batch_roots"][proof["batch"]]:
            problems.append(f"record {rid}: its fields do not reach the sealed root")
        elif root_from_path(batch_root, proof["file_path"]) != parse["merkle_root"]:
            problems.append(f"record {rid}: its batch does not reach the file root")
    if proofs:
        problems.append(f"{len(proofs)} proofs have no record (records dropped)")
    lines = [f"{records.num_rows:,} records against {len(parses)} sealed files"]
    return records.num_rows, lines, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["store", "package"])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--public-key", type=Path, help="the operator's seal public key (PEM)")
    args = parser.parse_args(argv)
    try:
        public = public_key_from_pem(args.public_key.read_text()) if args.public_key else None
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    check = verify_store if args.what == "store" else verify_package
    try:
        count, lines, problems = check(args.folder, public)
    except (OSError, KeyError, ValueError) as exc:
        print(f"error: {args.folder} cannot be read as a {args.what}: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    if not count:
        print(f"error: nothing to verify in {args.folder}", file=sys.stderr)
        return 2
    if problems:
        print("MISMATCHES:\n" + "\n".join(f"  - {p}" for p in problems))
        return 1
    print(f"VERIFIED: every commitment recomputes ({args.what} {args.folder})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

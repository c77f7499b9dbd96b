"""Per-record commitments under the seal: a retained record can be shown to match its original,
even after its identifiers are deleted.

For every kept record, at ingestion:
- `identity commitment` = HMAC-SHA256 under the file's data key of the record's leaf index and
  its end users' normalised identifiers; it binds them to the record and, once the key is
  destroyed at the 12-month purge, reveals nothing about them. The leaf index makes every
  record's commitment different, so equal parties cannot be linked across gold records by it;
- `leaf` = SHA-256 of the record's retained (gold) fields in a canonical encoding and its
  identity commitment, hex text.

Leaves are numbered in file order (`leaf_index`, kept in silver and gold with the identity
commitment). Each ingest batch's leaves are cut into blocks of `COMMIT_BLOCK` (256)
consecutive leaves, the last one shorter; each block's leaves form a Merkle subtree, and the
file's root is the Merkle root of the block roots. The parse entry states every block's size and
root (`batch_leaves`, `batch_roots`) and the file root; entries written before blocks state one
subtree per ingest batch (up to 100,000 leaves), and verifiers take the sizes from the entry, so
both verify alike. Small blocks keep a record's proof cheap: its path is recomputed from its
block's leaves alone (a small row group of the proofs object), not from its whole batch. An internal node is
SHA-256("N" + left + right) over hex text; a level with an odd count promotes its last node.
The leaves themselves are stored at `proofs/<sha256>.parquet`: a verifier recomputes a record's
leaf from the record, finds it at its index, and recomputes the roots, with nothing but SHA-256.

Canonical encodings (docs/commitments.md spells them out with worked examples; a verifier
needs nothing but SHA-256) are versioned; the parse entry states the one its file was committed
with (`commitment_encoding`; absent means 1), and verifiers support every version:
- 4 (current): leaf = SHA-256 of `L`, one byte per field (1 present, 0 null), one signed
  64-bit big-endian integer per field (a text's length in UTF-8 bytes, an integer, a
  timestamp's microseconds since the Unix epoch, a float's IEEE-754 binary64 bits; 0 for null),
  the present texts' UTF-8 bytes one after another, and the identity commitment (hex). Fixed
  width where the others format text, so it is computed in a few vector passes and one hash.
  The fields are those of version 3.
- 1 to 3: `record digest` = SHA-256 of the fields of `retained_fields(version)`, in order, each
  written as `<byte length>:<text>` or `-` for null, joined with `|`; text is UTF-8, integers
  in decimal, timestamps as integer microseconds since the Unix epoch (UTC);
  leaf = SHA-256("L" + record digest + identity commitment), hex text. By version:
  - 3: as 2, and it covers `origin_domain` and `destination_domain` (after
    `destination_country`), the routing value gold keeps for an e-mail or SIP party, so a
    domain can be shown to be the sealed one after the identifiers (and the key of the identity
    commitment) are gone.
  - 2: floats as the decimal signed 64-bit integer whose bits are the value's IEEE-754
    binary64 form (`struct.unpack(">q", struct.pack(">d", x))[0]`); `source` and
    `source_file` are not covered, so a record's leaf does not depend on the name or folder the
    bytes arrived under (both stay in the signed seal entry, and `source_sha256` ties the
    record to the bytes); it covers `channel_detail` (a channel outside the known set, as the
    source wrote it).
  - 1: every canonical field, floats as polars writes them as text (`1e-7`, `3600.0`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import numpy as np
import polars as pl
import polars_hash  # noqa: F401  (registers the .chash namespace)
import pyarrow as pa

from pipeline.records.schema import CANONICAL, DERIVED_DOMAINS, RETAINED

#: the encoding new files are committed with
ENCODING = 4
ENCODINGS = (1, 2, 3, 4)
#: fields set by the name and folder a file arrived under: in the seal, not in the leaf (v2)
NAME_FIELDS = ("source", "source_file")
#: leaves per committed block: a record's proof reads and hashes one block, not its batch
COMMIT_BLOCK = 256


def retained_fields(version: int = ENCODING) -> list[str]:
    """The fields a record's digest covers, in order, under an encoding version."""
    if version not in ENCODINGS:
        raise ValueError(f"unknown commitment encoding {version!r}")
    if version == 1:  # before `channel_detail` and the domains existed
        return [f for f in RETAINED if f not in ("channel_detail", *DERIVED_DOMAINS)]
    if version == 2:  # before the domains existed
        return [f for f in RETAINED if f not in (*NAME_FIELDS, *DERIVED_DOMAINS)]
    return [f for f in RETAINED if f not in NAME_FIELDS]  # 3 and 4


def encoding_of(parse_body: dict[str, Any]) -> int:
    """The encoding a file's parse entry says its leaves use (entries before v2 state none)."""
    return int(parse_body.get("commitment_encoding", 1))


def _float_bits(values: pl.Series) -> pl.Series:
    """The signed 64-bit integers whose bits are the floats' IEEE-754 binary64 form."""
    bits = values.fill_null(0.0).to_numpy().astype(np.float64, copy=False).view(np.int64)
    return pl.Series(values.name, bits, dtype=pl.Int64)


def _field(name: str, dtype: pl.DataType, version: int) -> pl.Expr:
    col = pl.col(name)
    if dtype == pl.Float64 and version >= 2:
        text = col.map_batches(_float_bits, return_dtype=pl.Int64).cast(pl.String)
    elif dtype == pl.Float64:
        text = col.cast(pl.String)
    elif isinstance(dtype, pl.Datetime):
        text = col.dt.epoch("us").cast(pl.String)
    else:
        text = col.cast(pl.String)
    return (
        pl.when(col.is_null())
        .then(pl.lit("-"))
        .otherwise(pl.format("{}:{}", text.str.len_bytes(), text))
    )


def record_digest(version: int) -> pl.Expr:
    """SHA-256 (hex) of the canonical encoding of a row's retained fields (versions 1 to 3)."""
    if version > 3:
        raise ValueError(f"encoding {version} has no record digest: its leaf hashes the fields")
    parts = [_field(name, CANONICAL[name], version) for name in retained_fields(version)]
    return pl.concat_str(parts, separator="|").chash.sha2_256()  # type: ignore[attr-defined]


def identity_commitment(
    leaf_index: pl.Expr, origin: pl.Expr, destination: pl.Expr, file_key: bytes
) -> pl.Expr:
    """HMAC-SHA256 (hex) under the file key of the record's leaf index and its end users'
    normalised identifiers (`kind:value`, `-` where the party is not an end user)."""
    text = pl.concat_str(
        [leaf_index.cast(pl.String), origin.fill_null("-"), destination.fill_null("-")],
        separator="\x1f",
    )
    return text.chash.hmac_sha256(key=file_key.hex())  # type: ignore[attr-defined]


def leaf(digest: pl.Expr, commitment: pl.Expr) -> pl.Expr:
    """A leaf of encodings 1 to 3: its record digest bound to its identity commitment."""
    return (pl.lit("L") + digest + commitment).chash.sha2_256()  # type: ignore[attr-defined]


def leaves_of(
    rows: pl.DataFrame, version: int = ENCODING, commitment: str = "identity_commitment"
) -> pl.Series:
    """Each row's Merkle leaf (hex) from its retained fields, as gold holds them, and its
    identity commitment (the `commitment` column), under one encoding version. A row without
    an identity commitment gets no leaf (null), so it never matches a sealed one."""
    if version <= 3:
        return rows.select(leaf(record_digest(version), pl.col(commitment))).to_series()
    head = pl.Series(_fixed_part(rows, retained_fields(version)))
    texts = [pl.col(n).cast(pl.String) for n in retained_fields(version) if _is_text(CANONICAL[n])]
    tail = rows.select(
        pl.concat_str([*texts, pl.col(commitment)], ignore_nulls=True)
        .cast(pl.Binary)
        .alias("tail"),
        # Fixed width: a commitment of another length could take bytes from the texts.
        (pl.col(commitment).str.len_bytes() != 64).fill_null(True).alias("none"),
    )
    return (
        tail.with_columns(head.alias("head"))
        .select(
            pl.when(pl.col("none"))
            .then(None)
            .otherwise((pl.col("head") + pl.col("tail")).chash.sha2_256())  # type: ignore[attr-defined]
        )
        .to_series()
    )


def _is_text(dtype: pl.DataType) -> bool:
    return not (dtype.is_numeric() or isinstance(dtype, pl.Datetime))


def _fixed_part(rows: pl.DataFrame, fields: list[str]) -> pa.FixedSizeBinaryArray:
    """Encoding 4's fixed-width start of every row: `L`, a presence byte per field, then a
    big-endian signed 64-bit value per field (text length, integer, microseconds, float bits;
    0 for null). Built as one byte matrix, with no text formatted."""
    n, width = len(rows), len(fields)
    values = rows.select(_fixed_value(name, CANONICAL[name]) for name in fields)
    present = rows.select(pl.col(name).is_not_null() for name in fields).to_numpy()
    big = np.empty((width, n), dtype=">i8")  # a field a row: each column copied in one pass
    for i, name in enumerate(fields):
        column = values.get_column(name).to_numpy()
        big[i] = column.view(np.int64) if column.dtype == np.float64 else column
    head = np.empty((n, 1 + 9 * width), dtype=np.uint8)
    head[:, 0] = ord("L")
    head[:, 1 : 1 + width] = present
    head[:, 1 + width :] = np.ascontiguousarray(big.T).view(np.uint8).reshape(n, 8 * width)
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(head.shape[1]), n, [None, pa.py_buffer(head)]
    )


def _fixed_value(name: str, dtype: pl.DataType) -> pl.Expr:
    """Every field read as its canonical kind: a column stored as another type is cast to it
    (or refused), never hashed as the kind it happens to have."""
    col = pl.col(name)
    if dtype == pl.Float64:
        value = col.cast(pl.Float64).fill_null(0.0)  # its bits are taken by numpy
    elif isinstance(dtype, pl.Datetime):  # the cast: an all-null column read back untyped, too
        value = col.cast(dtype).dt.epoch("us").fill_null(0)
    elif _is_text(dtype):
        value = col.cast(pl.String).str.len_bytes().cast(pl.Int64).fill_null(0)
    else:
        value = col.cast(pl.Int64).fill_null(0)
    return value.alias(name)


def record_leaves(records: pl.DataFrame, encodings: dict[str, int] | None = None) -> pl.Series:
    """Each record's Merkle leaf, recomputed from its retained fields and identity commitment,
    under the encoding its source file was committed with (`encodings`: SHA-256 → version;
    the current one where not given)."""
    encodings = encodings or {}
    version = records.select(
        pl.col("source_sha256").replace_strict(encodings, default=ENCODING, return_dtype=pl.Int64)
    ).to_series()
    used = version.unique().to_list()
    if len(used) <= 1:
        return leaves_of(records, used[0] if used else ENCODING).alias("leaf")
    # Only each version's rows: records of older files may lack fields a later one covers.
    out = pl.Series("leaf", [None] * len(records), dtype=pl.String)
    for v in used:
        at = (version == v).arg_true()
        out = out.scatter(at, leaves_of(records[at], v))
    return out


def merkle_root(leaves: pl.Series) -> str:
    """Root (hex) over hex leaves, one polars pass a level; odd last nodes are promoted."""
    level = leaves
    if not len(level):
        return hashlib.sha256(b"E").hexdigest()
    while len(level) > 1:
        level = _parents(level)
    return str(level[0])


def _parents(level: pl.Series) -> pl.Series:
    """The next level up of a Merkle tree (hex nodes), its odd last node promoted. A small
    level is hashed by `hashlib` (a polars pass costs more than a few hundred hashes)."""
    if len(level) <= SMALL_LEVEL:
        nodes = level.to_list()
        up = [
            hashlib.sha256(f"N{nodes[i]}{nodes[i + 1]}".encode()).hexdigest()
            for i in range(0, len(nodes) - 1, 2)
        ]
        return pl.Series(up + nodes[-1:] if len(nodes) % 2 else up, dtype=pl.String)
    n = len(level) - len(level) % 2
    pairs = pl.DataFrame({"l": level.gather_every(2).head(n // 2), "r": level[1:n].gather_every(2)})
    parents = pairs.select(
        (pl.lit("N") + pl.col("l") + pl.col("r")).chash.sha2_256()  # type: ignore[attr-defined]
    ).to_series()
    if len(level) % 2:
        parents = parents.append(level.tail(1))
    return parents


#: a tree level of at most this many nodes is hashed in Python, not by a polars pass
SMALL_LEVEL = 512


def block_roots(leaves: pl.Series) -> list[tuple[int, str]]:
    """(size, root) of each block of `COMMIT_BLOCK` consecutive leaves, the last one shorter.

    As COMMIT_BLOCK is a power of two, the blocks' roots are the nodes of the leaves' own tree
    after log2(COMMIT_BLOCK) levels (a short last block's nodes are the odd ones promoted), so
    every block is computed in the same few polars passes.
    """
    sizes = [min(COMMIT_BLOCK, len(leaves) - i) for i in range(0, len(leaves), COMMIT_BLOCK)]
    level = leaves
    for _ in range(COMMIT_BLOCK.bit_length() - 1):
        if len(level) <= len(sizes):
            break
        level = _parents(level)
    return list(zip(sizes, level.to_list(), strict=True))


def subtree_roots(leaves: pl.Series, sizes: list[int]) -> list[str]:
    """The roots of consecutive subtrees of `sizes` leaves, as a parse entry states them.

    A run of full blocks and the shorter one ending it (one ingest batch) is computed together
    by `block_roots`; a subtree bigger than a block (an entry written before blocks) alone.
    """
    roots: list[str] = []
    start = i = 0
    while i < len(sizes):
        j = i
        while j < len(sizes) and sizes[j] == COMMIT_BLOCK:
            j += 1
        if j < len(sizes) and 0 < sizes[j] < COMMIT_BLOCK:
            j += 1  # a shorter block ends the batch
        if j == i:  # bigger than a block, or empty
            roots.append(merkle_root(leaves.slice(start, sizes[i])))
            start, i = start + sizes[i], i + 1
            continue
        run = sum(sizes[i:j])
        roots += [root for _, root in block_roots(leaves.slice(start, run))]
        start, i = start + run, j
    return roots


def file_root(batch_roots: Iterable[str]) -> str:
    return merkle_root(pl.Series(list(batch_roots), dtype=pl.String))


def _node(left: str, right: str) -> str:
    return hashlib.sha256(f"N{left}{right}".encode()).hexdigest()


def inclusion_paths(
    leaves: list[str] | pl.Series, indices: list[int]
) -> dict[int, list[list[str]]]:
    """Merkle paths from the leaves at `indices` to the root of `leaves`.

    A path is a list of [side, sibling] pairs, bottom up; side "L" means the sibling is on the
    left. A level where the node was promoted (the odd last node) adds nothing, as in
    `merkle_root`, whose levels these are (one polars pass a level).
    """
    paths: dict[int, list[list[str]]] = {i: [] for i in indices}
    positions = {i: i for i in indices}
    level: list[str] | pl.Series = leaves
    while len(level) > 1:
        for start, pos in positions.items():
            sibling = pos ^ 1
            if sibling < len(level):
                paths[start].append(["L" if sibling < pos else "R", str(level[sibling])])
            positions[start] = pos // 2
        level = _next_level(level)
    return paths


#: Below this many nodes a level is hashed by `hashlib` in a loop, cheaper than a polars pass.
SMALL_LEVEL = 4096


def _next_level(level: list[str] | pl.Series) -> list[str] | pl.Series:
    """`_parents` of a level, as a list once it is small."""
    if len(level) > SMALL_LEVEL:
        return _parents(
            level if isinstance(level, pl.Series) else pl.Series(level, dtype=pl.String)
        )
    nodes = level if isinstance(level, list) else level.to_list()
    pairs = len(nodes) - len(nodes) % 2
    return [_node(nodes[k], nodes[k + 1]) for k in range(0, pairs, 2)] + nodes[pairs:]


def root_from_path(leaf_hex: str, path: list[list[str]]) -> str:
    """The root a leaf reaches along its path (`inclusion_paths`)."""
    node = leaf_hex
    for side, sibling in path:
        node = _node(sibling, node) if side == "L" else _node(node, sibling)
    return node


def gold_form(rows: pl.DataFrame) -> pl.DataFrame:
    """Silver (or held) rows as they were committed: end users' tokens as nulls, like gold."""
    from pipeline.records.normalise import PERSONAL_KINDS

    return rows.with_columns(
        pl.when(pl.col(f"{side}_kind").is_in(PERSONAL_KINDS))
        .then(None)
        .otherwise(pl.col(side))
        .alias(side)
        for side in ("origin", "destination")
    )

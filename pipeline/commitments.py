"""Per-record commitments under the seal: a retained record can be shown to match its original,
even after its identifiers are deleted.

For every kept record, at ingestion:
- `record digest` = SHA-256 of the canonical encoding of its retained (gold) fields;
- `identity commitment` = HMAC-SHA256 under the file's data key of the record's leaf index and
  its end users' normalised identifiers; it binds them to the record and, once the key is
  destroyed at the 12-month purge, reveals nothing about them. The leaf index makes every
  record's commitment different, so equal parties cannot be linked across gold records by it;
- `leaf` = SHA-256("L" + record digest + identity commitment), hex text.

Leaves are numbered in file order (`leaf_index`, kept in silver and gold with the identity
commitment). Each batch's leaves form a Merkle subtree; the file's root is the Merkle root of the
batch roots, and it goes into the file's signed parse entry. An internal node is
SHA-256("N" + left + right) over hex text; a level with an odd count promotes its last node.
The leaves themselves are stored at `proofs/<sha256>.parquet`: a verifier recomputes a record's
leaf from the record, finds it at its index, and recomputes the roots, with nothing but SHA-256.

Canonical encoding of a record (so anyone can recompute it): the fields of `RETAINED`, in order,
each written as `<byte length>:<text>` or `-` for null, joined with `|`; text is UTF-8, integers in
decimal, timestamps as integer microseconds since the Unix epoch (UTC), floats as the decimal
integer of their IEEE-754 bits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import polars as pl
import polars_hash  # noqa: F401  (registers the .chash namespace)

from pipeline.schema import CANONICAL, RETAINED


def _field(name: str, dtype: pl.DataType) -> pl.Expr:
    col = pl.col(name)
    if dtype == pl.Float64:
        text = col.reinterpret(signed=True).cast(pl.String)
    elif isinstance(dtype, pl.Datetime):
        text = col.dt.epoch("us").cast(pl.String)
    else:
        text = col.cast(pl.String)
    return (
        pl.when(col.is_null())
        .then(pl.lit("-"))
        .otherwise(pl.format("{}:{}", text.str.len_bytes(), text))
    )


def record_digest() -> pl.Expr:
    """SHA-256 (hex) of the canonical encoding of a row's retained fields."""
    parts = [_field(name, CANONICAL[name]) for name in RETAINED]
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
    return (pl.lit("L") + digest + commitment).chash.sha2_256()  # type: ignore[attr-defined]


def record_leaves(records: pl.DataFrame) -> pl.Series:
    """Each record's Merkle leaf, recomputed from its retained fields and identity commitment."""
    return records.select(leaf(record_digest(), pl.col("identity_commitment"))).to_series()


def merkle_root(leaves: pl.Series) -> str:
    """Root (hex) over hex leaves, one polars pass a level; odd last nodes are promoted."""
    level = leaves
    if not len(level):
        return hashlib.sha256(b"E").hexdigest()
    while len(level) > 1:
        n = len(level) - len(level) % 2
        pairs = pl.DataFrame(
            {"l": level.gather_every(2).head(n // 2), "r": level[1:n].gather_every(2)}
        )
        parents = pairs.select(
            (pl.lit("N") + pl.col("l") + pl.col("r")).chash.sha2_256()  # type: ignore[attr-defined]
        ).to_series()
        if len(level) % 2:
            parents = parents.append(level.tail(1))
        level = parents
    return str(level[0])


def file_root(batch_roots: Iterable[str]) -> str:
    return merkle_root(pl.Series(list(batch_roots), dtype=pl.String))


def _node(left: str, right: str) -> str:
    return hashlib.sha256(f"N{left}{right}".encode()).hexdigest()


def inclusion_paths(leaves: list[str], indices: list[int]) -> dict[int, list[list[str]]]:
    """Merkle paths from the leaves at `indices` to the root of `leaves`.

    A path is a list of [side, sibling] pairs, bottom up; side "L" means the sibling is on the
    left. A level where the node was promoted (the odd last node) adds nothing, as in
    `merkle_root`.
    """
    paths: dict[int, list[list[str]]] = {i: [] for i in indices}
    positions = {i: i for i in indices}
    level = leaves
    while len(level) > 1:
        for start, pos in positions.items():
            sibling = pos ^ 1
            if sibling < len(level):
                paths[start].append(["L" if sibling < pos else "R", level[sibling]])
            positions[start] = pos // 2
        pairs = len(level) - len(level) % 2
        parents = [_node(level[k], level[k + 1]) for k in range(0, pairs, 2)]
        level = parents + level[pairs:]
    return paths


def root_from_path(leaf_hex: str, path: list[list[str]]) -> str:
    """The root a leaf reaches along its path (`inclusion_paths`)."""
    node = leaf_hex
    for side, sibling in path:
        node = _node(sibling, node) if side == "L" else _node(node, sibling)
    return node


def gold_form(rows: pl.DataFrame) -> pl.DataFrame:
    """Silver (or held) rows as they were committed: end users' tokens as nulls, like gold."""
    from pipeline.normalise import PERSONAL_KINDS

    return rows.with_columns(
        pl.when(pl.col(f"{side}_kind").is_in(PERSONAL_KINDS))
        .then(None)
        .otherwise(pl.col(side))
        .alias(side)
        for side in ("origin", "destination")
    )

"""Export benchmark: a law-enforcement search for 10 and 100 end users over 1, 3 and 12 months,
on a store of 10 M and 50 M rows spread over 12 months.

    make bench                              # ingest bench, then this one
    BENCH_EXPORT_SIZES=200000 python bench/export.py   # a quick run

Silver and vault parts are written as the ingest writes them for search, by the same functions:
batch by batch, silver clustered by end user and the vault in token order
(`pipeline.records.clustering`), silver in row groups of `token_index.ROW_GROUP` rows, with each
part's token index (`pipeline.records.token_index.write`). The storage and write time of the index are reported,
and the 12-month search for 10 people is repeated with the indexes moved away (the full scan a
store written without them gets).

The store is generated straight into partitions (what months of ingestion would leave: silver
parts, vault parts, signed seal and parse entries, proofs), because ingesting 50 M rows first
would measure the ingest again. Records are real: identity commitments under each file's key,
leaves from `pipeline.proof.commitments`, Merkle roots in signed parse entries, so the export's proofs
and `verify-export` run exactly as on ingested data. Each export runs in a fresh process, three
times (the median time is reported); its peak memory is that process's maximum RSS. Results go to the export section of bench/results.md.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from measure import measure, write_section  # noqa: E402

from pipeline.core import layout  # noqa: E402
from pipeline.core.config import Settings  # noqa: E402
from pipeline.core.keys import TOKEN_KEY_VERSION  # noqa: E402
from pipeline.core.layout import proof_key  # noqa: E402
from pipeline.core.resources import Resources  # noqa: E402
from pipeline.proof.commitments import (  # noqa: E402
    COMMIT_BLOCK,
    ENCODING,
    block_roots,
    file_root,
    gold_form,
    identity_commitment,
    leaves_of,
)
from pipeline.proof.crypto import encrypt_values  # noqa: E402
from pipeline.proof.integrity import record_parse, seal_original  # noqa: E402
from pipeline.records import token_index  # noqa: E402
from pipeline.records.clustering import BY_PARTY, BY_TOKEN, Clusterer, Order  # noqa: E402
from pipeline.records.schema import SILVER, VAULT, conform  # noqa: E402
from pipeline.records.synth import population  # noqa: E402
from pipeline.records.tiers import PROOF_GROUP, VAULT_GROUP, part_writer  # noqa: E402
from pipeline.records.tokenise import token_expr  # noqa: E402

SIZES = [int(s) for s in os.environ.get("BENCH_EXPORT_SIZES", "10000000,50000000").split(",")]
WORK = ROOT / "data" / "export"
MONTHS = [(2025, m) for m in range(1, 13)]
PART_ROWS = 1_000_000  # one "ingested file" per part: several per month at these sizes
BATCH = 100_000  # records per ingest batch, cut into committed blocks as the ingest cuts them
PEOPLE = 200_000
SEARCHED = (10, 100)
REPEATS = int(os.environ.get("BENCH_EXPORT_REPEATS", "3"))


def _settings(root: Path) -> Settings:
    return Settings.from_env(
        {"CDR_STORE": str(root / "store"), "CDR_KEYRING": str(root / "keys"),
         "CDR_DATA_DOCS": str(root / "docs"), "CDR_DEFAULT_REGION": "PK"}
    )  # fmt: skip


def _part(
    res: Resources, people: pl.DataFrame, y: int, m: int, n: int, seq: int
) -> tuple[pl.DataFrame, str]:
    """One file's worth of silver rows for a month, committed like the ingest commits them."""
    rng = np.random.default_rng(seq)
    sha = hashlib.sha256(f"bench-{y}-{m}-{seq}".encode()).hexdigest()
    start = dt.datetime(y, m, 1, tzinfo=dt.UTC)
    end = dt.datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=dt.UTC)
    secs = rng.integers(0, int((end - start).total_seconds()), size=n)
    who = people.select(pl.all().gather(rng.integers(0, len(people), size=n)))
    inbound = rng.random(n) < 0.2
    file_key = res.keyring.data_key(f"file-{sha}")
    user = pl.col("token")
    rows = who.with_columns(
        pl.format("b{}-{}", pl.lit(seq), pl.int_range(n, dtype=pl.Int64)).alias("record_id"),
        pl.lit("bench").alias("source"),
        pl.lit(f"bench-{y}-{m:02d}-{seq}.csv").alias("source_file"),
        pl.lit(sha).alias("source_sha256"),
        (pl.int_range(n, dtype=pl.Int64) + 2).alias("source_line"),
        (pl.lit(start) + pl.duration(seconds=pl.Series(secs))).alias("event_time"),
        pl.lit(None, pl.Datetime("us", "UTC")).alias("end_time"),
        pl.Series("channel", rng.choice(["sms", "sms", "voice", "whatsapp"], size=n)),
        pl.Series("inbound", inbound),
        pl.lit("cust-001").alias("customer_id"),
        pl.lit(None, pl.String).alias("origin_network"),
        pl.lit(None, pl.String).alias("destination_network"),
        pl.lit("r1").alias("route_id"),
        pl.Series("duration_s", rng.integers(1, 600, size=n).astype(float)),
        pl.lit(1, pl.Int64).alias("units"),
        pl.lit("DELIVERED").alias("status"),
        pl.lit(None, pl.String).alias("error_code"),
        pl.lit(0.01).alias("price"),
        pl.lit("USD").alias("currency"),
    ).with_columns(
        pl.when("inbound").then(pl.lit("inbound")).otherwise(pl.lit("outbound")).alias("direction"),
        pl.when("inbound").then(user).otherwise(pl.lit("InfoSMS")).alias("origin"),
        pl.when("inbound").then(pl.lit("msisdn")).otherwise(pl.lit("alphanumeric")).alias("origin_kind"),
        pl.when("inbound").then(pl.col("country")).alias("origin_country"),
        pl.when("inbound").then(pl.lit("InfoSMS")).otherwise(user).alias("destination"),
        pl.when("inbound").then(pl.lit("alphanumeric")).otherwise(pl.lit("msisdn")).alias("destination_kind"),
        pl.when("inbound").then(None).otherwise(pl.col("country")).alias("destination_country"),
        identity_commitment(
            pl.int_range(n, dtype=pl.Int64),
            pl.when("inbound").then(pl.lit("msisdn:") + pl.col("e164")),
            pl.when(~pl.col("inbound")).then(pl.lit("msisdn:") + pl.col("e164")),
            file_key,
        ).alias("identity_commitment"),
        pl.int_range(n, dtype=pl.Int64).alias("leaf_index"),
    )  # fmt: skip
    return conform(rows, SILVER), sha


def _commit(res: Resources, silver: pl.DataFrame, sha: str, y: int, m: int) -> None:
    """Proofs, seal and parse entries for one part, as an ingest of it would have left them."""
    leaves = leaves_of(gold_form(silver))
    path = res.store.root / proof_key(sha)  # type: ignore[attr-defined]
    path.parent.mkdir(parents=True, exist_ok=True)
    table = leaves.str.decode("hex").alias("leaf").to_frame().to_arrow()
    blocks: list[tuple[int, str]] = []
    with pq.ParquetWriter(path, table.schema) as proofs:
        for start in range(0, len(leaves), BATCH):  # each batch cut into blocks, as ingested
            blocks += block_roots(leaves.slice(start, BATCH))
            proofs.write_table(table.slice(start, BATCH), row_group_size=PROOF_GROUP)
    sizes, roots = [n for n, _ in blocks], [r for _, r in blocks]
    now = dt.datetime.now(dt.UTC)
    signer = res.keyring.signing_key()
    seal = seal_original(
        res.store, signer, sha, len(silver) * 100, "bench", f"{sha[:8]}.csv", now, now
    )
    name = f"{y:04d}-{m:02d}"
    record_parse(res.store, signer, seal, {
        "status": "ingested", "records": len(silver), "silver": len(silver), "gold": len(silver),
        "quarantined": 0, "months": [name], "by_month": {"gold": {name: len(silver)}, "silver": {name: len(silver)}},
        "merkle_root": file_root(roots), "batch_leaves": sizes, "batch_roots": roots,
        "commitment_encoding": ENCODING,
    })  # fmt: skip


def _write_ordered(table: pa.Table, key: str, target: Path, order: Order, rows: int) -> None:
    """A part as the ingest writes it: batch by batch, in its tier's order (silver clustered by
    end user, the vault in token order), with the tiers' encoding."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work, part_writer(target, table.schema) as writer:
        clusterer = Clusterer(Path(work), order)
        for start in range(0, table.num_rows, BATCH):
            clusterer.add(key, table.slice(start, BATCH))
        clusterer.write(key, writer, rows)


def build(rows: int, root: Path) -> tuple[list[str], dict[str, float]]:
    """The store: `rows` over 12 months; returns the searched people's numbers and what the
    token index cost (bytes and write seconds, against silver's)."""
    shutil.rmtree(root, ignore_errors=True)
    res = Resources.from_settings(_settings(root))
    key = res.keyring.token_key(TOKEN_KEY_VERSION)
    people = (
        population(PEOPLE, seed=3)
        .select("e164", "country")
        .with_columns(
            token_expr(pl.lit("msisdn"), pl.col("e164"), key, TOKEN_KEY_VERSION).alias("token")
        )
    )
    per_month = rows // len(MONTHS)
    seq = 0
    cost = {"silver_bytes": 0.0, "index_bytes": 0.0, "silver_s": 0.0, "index_s": 0.0}
    for y, m in MONTHS:
        gcm = AESGCM(res.keyring.data_key(f"month-{y:04d}-{m:02d}"))
        for start in range(0, per_month, PART_ROWS):
            n = min(PART_ROWS, per_month - start)
            silver, sha = _part(res, people, y, m, n, seq)
            seq += 1
            key = layout.partition("silver", (y, m), sha)
            target = res.store.root / key  # type: ignore[attr-defined]
            started = time.perf_counter()
            _write_ordered(silver.to_arrow(), key, target, BY_PARTY, token_index.ROW_GROUP)
            index = res.store.root / layout.token_index_key(key)  # type: ignore[attr-defined]
            index.parent.mkdir(parents=True, exist_ok=True)
            written = time.perf_counter()
            token_index.write(target, index)
            cost["silver_s"] += written - started
            cost["index_s"] += time.perf_counter() - written
            cost["silver_bytes"] += target.stat().st_size
            cost["index_bytes"] += index.stat().st_size
            _commit(res, silver, sha, y, m)
            used = (
                silver.select(pl.col("origin").alias("token"))
                .vstack(silver.select(pl.col("destination").alias("token")))
                .filter(pl.col("token").str.starts_with("msisdn."))
                .unique()
            )
            vault = used.join(people, on="token").select("token", "e164")
            encrypted = encrypt_values(
                gcm, [v.encode() for v in vault.get_column("e164")],
                [t.encode() for t in vault.get_column("token")],
            )  # fmt: skip
            entries = vault.select("token", pl.lit("msisdn").alias("kind")).with_columns(
                pl.Series("identifier_encrypted", encrypted, dtype=pl.Binary)
            )
            vkey = layout.partition("vault", (y, m), sha)
            vault_table = entries.to_arrow().cast(pl.DataFrame(schema=VAULT).to_arrow().schema)
            vpath = res.store.root / vkey  # type: ignore[attr-defined]
            _write_ordered(vault_table, vkey, vpath, BY_TOKEN, VAULT_GROUP)
        print(f"  {y}-{m:02d}: {per_month:,} rows", flush=True)
    return people.head(max(SEARCHED)).get_column("e164").to_list(), cost


def export_median(root: Path, numbers: list[str], months: int) -> dict[str, float]:
    """`REPEATS` exports, each in a fresh process: the median time (this shared machine's
    timings vary by a quarter from run to run), the highest peak memory."""
    runs = [export_once(root, numbers, months) for _ in range(REPEATS)]
    seconds = sorted(r["seconds"] for r in runs)[len(runs) // 2]
    return {**runs[0], "seconds": seconds, "peak_mib": max(r["peak_mib"] for r in runs)}


def export_once(root: Path, numbers: list[str], months: int) -> dict[str, float]:
    """One export over the first `months` months, in a fresh process."""
    key = (
        X25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    end = dt.date(2025 + months // 12, months % 12 + 1, 1) - dt.timedelta(days=1)
    request = {
        "case": f"BENCH-{months}m-{time.time_ns()}", "authority": "bench", "legal_basis": "bench",
        "requested_by": "a", "approved_by": "b", "identifiers": numbers,
        "date_from": "2025-01-01", "date_to": end.isoformat(), "recipient_key": key.decode(),
    }  # fmt: skip
    (root / "request.json").write_text(json.dumps(request))
    env = {**os.environ, "CDR_STORE": str(root / "store"), "CDR_KEYRING": str(root / "keys"),
           "CDR_DATA_DOCS": str(root / "docs")}  # fmt: skip
    cmd = [sys.executable, "-m", "pipeline", "export", "--request", str(root / "request.json")]
    seconds, peak, out = measure(cmd, env, root)
    found = int(out.split("records:")[1].split()[0].replace(",", ""))
    return {"seconds": seconds, "peak_mib": peak / 2**20, "records": found}


def main() -> int:
    # What an installed package has (pip compiles on install): no recompiling in every export.
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(ROOT.parent / "pipeline")], check=True
    )
    results: list[tuple[int, int, int, str, dict[str, float]]] = []
    costs: dict[int, dict[str, float]] = {}
    for rows in SIZES:
        root = WORK / str(rows)
        print(f"building a store of {rows:,} rows over 12 months ...", flush=True)
        started = time.perf_counter()
        numbers, costs[rows] = build(rows, root)
        print(f"  built in {time.perf_counter() - started:.0f} s", flush=True)
        runs = [(m, p, "index") for p in SEARCHED for m in (1, 3, 12)]
        for months, people, mode in [*runs, (12, SEARCHED[0], "full scan")]:
            if mode == "full scan":  # the indexes moved away: a store written without them
                (root / "store" / layout.TOKEN_INDEX).rename(root / "moved-index")
            r = export_median(root, numbers[:people], months)
            print(f"  {rows:>12,} rows  {months:>2} months  {people:>3} people  {mode:9s} "
                  f"{r['seconds']:6.1f} s  {r['records']:>6,} records  "
                  f"peak {r['peak_mib']:,.0f} MiB", flush=True)  # fmt: skip
            results.append((rows, months, people, mode, r))
        shutil.rmtree(root, ignore_errors=True)
    write(results, costs)
    return 0


def write(
    results: list[tuple[int, int, int, str, dict[str, float]]],
    costs: dict[int, dict[str, float]],
) -> None:
    lines = [
        "## Export benchmark",
        "",
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores, "
        f"{platform.machine()}, Python {platform.python_version()} (`python bench/export.py`).",
        "A law-enforcement export for 10 or 100 end users (numbers), over the first 1, 3 or 12 "
        "months of a store holding 12 months of records, generated straight into partitions "
        f"as the ingest writes them (silver clustered by end user in row groups of "
        f"{token_index.ROW_GROUP:,} rows with each part's token index, the vault in token order, "
        f"proofs in blocks of {COMMIT_BLOCK} leaves, signed entries; parts of {PART_ROWS:,} rows, "
        f"{PEOPLE:,} people). Modules are byte-compiled first, as an installed package's are. "
        f"Each export runs in a fresh process (`python -m pipeline export --request`), "
        f"{REPEATS} times; the table gives the median time and the highest peak memory. It "
        "searches, re-identifies, checks identities, builds the proofs, signs and encrypts the "
        "package. Peak memory is the export process's maximum RSS. `full scan`: the same search "
        "with the token indexes moved away (a store written without them).",
        "",
        "| store rows | months searched | people | rows in those months | search | seconds | records found | peak RSS MiB |",
        "|---:|---:|---:|---:|---|---:|---:|---:|",
    ]  # fmt: skip
    for rows, months, people, mode, r in results:
        lines.append(
            f"| {rows:,} | {months} | {people} | {rows // 12 * months:,} | {mode} | "
            f"{r['seconds']:.1f} | {r['records']:,} | {r['peak_mib']:,.0f} |"
        )
    lines += ["", "Token index cost (what the ingest pays per silver part, measured here on the "
              "generated parts: writing silver, then its index):", "",
              "| store rows | silver MiB | index MiB | index / silver | silver write s | index write s |",
              "|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for rows, c in costs.items():
        lines.append(
            f"| {rows:,} | {c['silver_bytes'] / 2**20:,.0f} | {c['index_bytes'] / 2**20:,.1f} | "
            f"{c['index_bytes'] / max(c['silver_bytes'], 1):.1%} | {c['silver_s']:.1f} | "
            f"{c['index_s']:.1f} |"
        )
    write_section("export", "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())

"""Shared test helpers: read tiers back, and search every output for identifiers in clear."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from pipeline.core.store import ObjectStore
from pipeline.proof.package import decrypt_with, encrypt_for, load_private_key, load_recipient_key


def read_tier(store: ObjectStore, prefix: str) -> pl.DataFrame:
    """Every Parquet part under `prefix`, concatenated (empty frame if none)."""
    frames = []
    for obj in store.list(prefix):
        if obj.key.endswith(".parquet"):
            table = pq.read_table(io.BytesIO(store.get_bytes(obj.key)))
            frame = pl.from_arrow(table)
            assert isinstance(frame, pl.DataFrame)
            frames.append(frame)
    return pl.concat(frames, how="vertical") if frames else pl.DataFrame()


def as_text(key: str, data: bytes) -> str:
    """An object's bytes as searchable text: Parquet as its values, anything else decoded."""
    if key.endswith(".parquet"):
        table = pl.from_arrow(pq.read_table(io.BytesIO(data)))
        assert isinstance(table, pl.DataFrame)
        readable = [c for c, t in table.schema.items() if t != pl.Binary]
        text = table.select(pl.col(readable).cast(pl.String)).write_csv()
        return text + "\n" + data.decode("latin-1")
    return data.decode("latin-1")


def all_text_outputs(store: ObjectStore) -> Iterator[tuple[str, str]]:
    """(key, text) for every current object."""
    for obj in store.list(""):
        yield obj.key, as_text(obj.key, store.get_bytes(obj.key))


def all_versions_text(client: Any, bucket: str) -> Iterator[tuple[str, str]]:
    """(key@version, text) for every version of every object in a bucket, current or not."""
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for v in page.get("Versions", []):
            data = client.get_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
            yield f"{v['Key']}@{v['VersionId']}", as_text(v["Key"], data["Body"].read())


def find_identifiers(texts: Iterable[tuple[str, str]], needles: Iterable[str]) -> list[str]:
    """Where any needle occurs: 'key: needle' for each hit."""
    needles = [n for n in needles if n]
    hits = []
    for key, text in texts:
        low = text.lower()
        hits += [f"{key}: {n}" for n in needles if n.lower() in low]
    return hits


def assert_no_identifiers(texts: Iterable[tuple[str, str]], needles: Iterable[str]) -> None:
    hits = find_identifiers(texts, needles)
    assert not hits, f"identifiers in clear: {hits[:10]}"


def needles_for(numbers: Iterable[str], emails: Iterable[str]) -> list[str]:
    """What must never appear: E.164 numbers, their national digits, e-mail addresses."""
    out: set[str] = set()
    for n in numbers:
        out.add(n)
        out.add(n[-9:])  # subscriber digits, whatever the written form
    for e in emails:
        out.add(e)
        out.add(e.split("@")[0])
    return sorted(out)


def load_dag(dag_id: str):  # type: ignore[no-untyped-def]
    """A DAG from the project's dags/ folder, through a DagBag that must load without errors."""
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import ROOT

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    return bag.dags[dag_id]


Files = dict[str, bytes]


def repacked(blob: bytes, secret: bytes, public: str, change: Callable[[Files], None]) -> bytes:
    """A package decrypted, its files changed, and encrypted again for the same recipient (as
    anyone holding the recipient's key could)."""
    _, payload = decrypt_with(load_private_key(secret), blob)
    with tarfile.open(fileobj=io.BytesIO(payload)) as archive:
        files = {m.name: archive.extractfile(m).read() for m in archive.getmembers()}  # type: ignore[union-attr]
    change(files)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return encrypt_for(load_recipient_key(public), out.getvalue())


def resigned(
    change: Callable[[Files], None],
    signer: Any,
    manifest_change: Callable[[dict[str, Any]], None] | None = None,
) -> Callable[[Files], None]:
    """A change of a package's files made by a forger holding `signer` (an Ed25519 private
    key): every listed file's digest redone, the manifest changed, then signed again."""

    def forge(files: Files) -> None:
        change(files)
        manifest = json.loads(files["manifest.json"])
        for name in manifest["files"]:
            data = files[name]
            manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}  # fmt: skip
        if manifest_change:
            manifest_change(manifest)
        files["manifest.json"] = json.dumps(manifest).encode()
        files["manifest.json.sig"] = base64.b64encode(signer.sign(files["manifest.json"]))

    return forge


#: what `verify --deep` says when a kept record is not its original read again
DEEP_MISMATCH = ("is not what the original holds", "records in the original where")


def deep_differences(root: Path) -> list[str]:
    """Every difference `verify --deep` finds between an ingested file and its sealed original,
    for every local store under `root` (a folder holding `seals/`) with whichever local keyring
    under `root` holds the file's key. A file that cannot be read back (purged, another
    keyring, bronze elsewhere) is not compared: only a reading that disagrees is a finding."""
    from pipeline.core import layout
    from pipeline.core.config import Settings
    from pipeline.core.resources import Resources
    from pipeline.flows.verify import FileCheck, check_original

    found = []
    keyrings = [k.parent for k in root.rglob("kek.bin")]
    for seals in (p for p in root.rglob("seals") if p.is_dir()):
        for keyring in keyrings:
            env = {"CDR_STORE": str(seals.parent), "CDR_KEYRING": str(keyring)}
            res = Resources.from_settings(Settings.from_env(env))
            try:
                entries = layout.ingested_files(res.store)
            except ValueError:  # a test damaged an entry on purpose: verify's own finding
                continue
            for sha, entry in entries:
                body = entry.get("body") or {}
                if body.get("status") != "ingested":
                    continue
                check = FileCheck(sha, body.get("file") or "?")
                try:
                    check_original(res, check, body)
                except Exception:  # not readable here: another store's bronze, another key
                    continue
                found += [p for p in check.problems if any(m in p for m in DEEP_MISMATCH)]
    return found


def local_settings(tmp: Path) -> dict[str, str]:
    """CDR settings of a local store, keyring and Data Docs under `tmp`, as a deployment sets
    them (generated times without an offset are UTC; landing files taken at once)."""
    return {
        "CDR_STORE": str(tmp / "store"),
        "CDR_KEYRING": str(tmp / "k"),
        "CDR_DATA_DOCS": str(tmp / "d"),
        "CDR_DEFAULT_REGION": "PK",
        "CDR_SOURCE_TIMEZONE": "UTC",
        "CDR_LANDING_SETTLE_SECONDS": "0",
    }


def statsd_on(port: int) -> dict[str, str]:
    """Airflow's settings that send its metrics to a StatsD listener on 127.0.0.1."""
    return {
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(port),
    }


def airflow_dags_test(
    tmp: Path, settings: dict[str, str], airflow: dict[str, str], *dag_ids: str
) -> list[str]:
    """`airflow dags test` of each DAG, in order, in processes of their own with an Airflow
    home under `tmp` (not the tests' own), the CDR `settings` and the `airflow` settings given;
    each run's output, once it finished (successful or not)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("CDR_")} | settings | {
        "AIRFLOW_HOME": str(tmp / "airflow"), "AIRFLOW__CORE__UNIT_TEST_MODE": "False", **airflow,
    }  # fmt: skip
    exe = str(Path(sys.executable).with_name("airflow"))
    subprocess.run([exe, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    outputs = []
    for dag_id in dag_ids:
        done = subprocess.run([exe, "dags", "test", dag_id], env=env,
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        said = done.stdout + done.stderr
        assert "DagRun Finished" in said, said[-3000:]
        outputs.append(said)
    return outputs

"""Both object stores honour one contract; S3 runs against moto's server on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from pipeline.core.store import LocalStore, ObjectStore, S3Store, open_store, s3_client
from pipeline.records.bronze import hold_until


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "local":
        yield LocalStore(tmp_path / "store")
    else:
        endpoint = request.getfixturevalue("moto_endpoint")
        data, _ = request.getfixturevalue("s3_buckets")
        yield open_store(f"s3://{data}/prefix", endpoint)


def test_put_get_list_delete(store: ObjectStore, tmp_path: Path) -> None:
    store.put_bytes("a/b/one.json", b"{}")
    src = tmp_path / "big.bin"
    src.write_bytes(b"x" * (9 << 20))  # large enough for a multipart upload on S3
    store.put_file("a/c/two.bin", src)
    assert store.get_bytes("a/b/one.json") == b"{}"
    assert [o.key for o in store.list("a/")] == ["a/b/one.json", "a/c/two.bin"]
    assert store.info("a/c/two.bin").size == 9 << 20  # type: ignore[union-attr]
    with store.open("a/c/two.bin") as f:
        assert f.read(3) == b"xxx"
    store.put_bytes("a/b/one.json", b"[1]")  # overwrite is whole
    assert store.get_bytes("a/b/one.json") == b"[1]"
    store.delete("a/b/one.json")
    assert not store.exists("a/b/one.json")
    assert store.info("missing") is None
    assert list(store.list("nothing/")) == []


def test_local_writes_leave_no_partial_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put_bytes("k/v.bin", b"1" * 1000)
    assert [p.name for p in (tmp_path / "k").iterdir()] == ["v.bin"]
    with pytest.raises(ValueError):
        store.put_bytes("../escape", b"")


@pytest.mark.s3
def test_object_lock_holds_bronze_until_its_date(moto_endpoint: str, s3_buckets: tuple[str, str], tmp_path: Path) -> None:  # fmt: skip
    _, bronze_bucket = s3_buckets
    bronze = open_store(f"s3://{bronze_bucket}", moto_endpoint)
    assert isinstance(bronze, S3Store) and bronze.supports_lock()
    src = tmp_path / "f"
    src.write_bytes(b"original")
    bronze.put_file("bronze/x.enc", src)
    until = dt.date(2030, 1, 1)
    assert hold_until(bronze, "bronze/x.enc", until)
    assert bronze.lock_until("bronze/x.enc") == dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    client = s3_client(moto_endpoint)
    version = client.head_object(Bucket=bronze_bucket, Key="bronze/x.enc")["VersionId"]
    with pytest.raises(ClientError):
        client.delete_object(Bucket=bronze_bucket, Key="bronze/x.enc", VersionId=version)


def test_plain_bucket_and_folder_report_no_lock(moto_endpoint: str, s3_buckets: tuple[str, str], tmp_path: Path) -> None:  # fmt: skip
    data, _ = s3_buckets
    assert not open_store(f"s3://{data}", moto_endpoint).supports_lock()
    local = LocalStore(tmp_path)
    local.put_bytes("x", b"1")
    assert hold_until(local, "x", dt.date(2030, 1, 1)) is False


@pytest.mark.s3
def test_purge_on_a_versioned_bucket_removes_every_version_but_a_newer_upload(moto_endpoint: str, s3_buckets: tuple[str, str]) -> None:  # fmt: skip
    data, _ = s3_buckets
    s3_client(moto_endpoint).put_bucket_versioning(
        Bucket=data, VersioningConfiguration={"Status": "Enabled"}
    )
    store = open_store(f"s3://{data}/p", moto_endpoint)
    store.put_bytes("landing/a.csv", b"one")
    store.put_bytes("landing/a.csv", b"two")
    store.delete("landing/a.csv")  # a plain delete only adds a marker
    assert len(list(store.versions("landing/a.csv"))) == 3
    assert store.purge("landing/a.csv") == []
    assert list(store.versions("landing/")) == []

    store.put_bytes("landing/b.csv", b"ingested")
    ingested = store.info("landing/b.csv").version  # type: ignore[union-attr]
    store.put_bytes("landing/b.csv", b"uploaded again meanwhile")
    store.purge("landing/b.csv", through=ingested)
    assert [v.latest for v in store.versions("landing/")] == [True]
    assert store.get_bytes("landing/b.csv") == b"uploaded again meanwhile"


def test_a_prefix_ending_inside_a_name_lists_as_on_s3(store: ObjectStore) -> None:
    for key in ("h/records/silver~m=03~a.enc", "h/records/silver~m=04~b.enc", "h/vault/x.enc"):
        store.put_bytes(key, b"1")
    assert [o.key for o in store.list("h/records/silver~m=03~")] == ["h/records/silver~m=03~a.enc"]
    assert [o.key for o in store.list("h/rec")] == [
        "h/records/silver~m=03~a.enc",
        "h/records/silver~m=04~b.enc",
    ]
    assert list(store.list("h/nothing-here")) == []


def test_store_and_keyring_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    import datetime as dt
    import os
    import stat

    from pipeline.core.config import Settings
    from pipeline.core.resources import Resources
    from pipeline.flows.ingest import ingest_file

    old = os.umask(0)  # the worst case: everything created would be world-writable
    try:
        settings = Settings.from_env(
            {"CDR_STORE": str(tmp_path / "store"), "CDR_KEYRING": str(tmp_path / "keys"),
             "CDR_DATA_DOCS": str(tmp_path / "docs"), "CDR_DEFAULT_REGION": "PK"}
        )  # fmt: skip
        res = Resources.from_settings(settings)
        src = tmp_path / "cdr.csv"
        src.write_text(
            "record_id,event_time,channel,direction,origin,destination\n"
            "r-1,2025-03-02T10:00:00Z,sms,outbound,InfoSMS,+923339876543\n"
        )
        ingest_file(res, src, as_of=dt.date(2025, 6, 1))
        res.store.put_file("landing/ops/x.csv", src)
        res.store.download("landing/ops/x.csv", tmp_path / "copy.csv")
        assert stat.S_IMODE((tmp_path / "copy.csv").stat().st_mode) == 0o600
    finally:
        os.umask(old)
    for root in (tmp_path / "store", tmp_path / "keys"):
        modes = {
            p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode)
            for p in [root, *root.rglob("*")]
        }
        assert len(modes) > 5
        wrong = {k: oct(m) for k, m in modes.items() if m != (0o700 if (tmp_path / k).is_dir() else 0o600)}  # fmt: skip
        assert wrong == {}


@pytest.mark.s3
def test_unfinished_multipart_uploads_older_than_a_day_are_aborted(moto_endpoint: str, s3_buckets: tuple[str, str]) -> None:  # fmt: skip
    data, _ = s3_buckets
    client = s3_client(moto_endpoint)
    store = open_store(f"s3://{data}/p", moto_endpoint)
    client.create_multipart_upload(Bucket=data, Key="p/silver/crashed.parquet")
    # moto dates every upload's `Initiated` at one fixed moment: the cut-off is set around it.
    (upload,) = client.list_multipart_uploads(Bucket=data)["Uploads"]
    begun = upload["Initiated"]
    assert store.abort_stale_uploads(begun - dt.timedelta(seconds=1)) == 0  # younger: kept
    assert client.list_multipart_uploads(Bucket=data).get("Uploads", []) != []
    assert store.abort_stale_uploads(begun + dt.timedelta(days=1)) == 1
    assert client.list_multipart_uploads(Bucket=data).get("Uploads", []) == []


def test_purge_through_a_version_keeps_every_later_upload() -> None:
    """Two uploads after the one a run read (v2, then v3): both stay, and so does a delete
    marker while they do; through the newest, everything goes."""
    from pipeline.core.store import VersionInfo, _through

    v3, v2, v1 = (VersionInfo("k", f"v{i}", i == 3, False) for i in (3, 2, 1))
    marker = VersionInfo("k", "m", False, True)
    listed = [v3, v2, v1, marker]  # S3 lists a key's versions newest first, markers apart
    assert _through(listed, "v1") == [v1]
    assert _through(listed, "v2") == [v2, v1]
    assert _through(listed, "v3") == [v3, v2, v1, marker]
    assert _through(listed, "gone") == [v2, v1, marker]

"""Both object stores honour one contract; S3 runs against moto's server on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from pipeline.bronze import hold_until
from pipeline.store import LocalStore, ObjectStore, S3Store, open_store, s3_client


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


def test_a_prefix_ending_inside_a_name_lists_as_on_s3(store: ObjectStore) -> None:
    for key in ("h/records/silver~m=03~a.enc", "h/records/silver~m=04~b.enc", "h/vault/x.enc"):
        store.put_bytes(key, b"1")
    assert [o.key for o in store.list("h/records/silver~m=03~")] == ["h/records/silver~m=03~a.enc"]
    assert [o.key for o in store.list("h/rec")] == [
        "h/records/silver~m=03~a.enc",
        "h/records/silver~m=04~b.enc",
    ]
    assert list(store.list("h/nothing-here")) == []

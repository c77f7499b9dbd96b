"""Settings: the connection's fields override the CDR_* variables, and unsafe layouts refuse."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.config import CONNECTION_EXTRAS, Settings


def test_a_connection_overrides_variables_field_by_field(tmp_path: Path) -> None:
    env = {"CDR_STORE": str(tmp_path / "s"), "CDR_KEYRING": str(tmp_path / "k"),
           "CDR_S3_ENDPOINT_URL": "http://old:9000"}  # fmt: skip
    conn = {
        "login": "AKIA-from-connection",
        "password": "secret",
        "extra": {"endpoint_url": "http://minio:9000", "store": "s3://cdr-data/cdr",
                  "kms_key": "alias/cdr-kek", "keyring_dir": str(tmp_path / "wrapped"),
                  "region_name": "me-central-1"},
    }  # fmt: skip
    s = Settings.from_env(env, connection=conn)
    assert (s.store, s.s3_endpoint_url, s.keyring) == (
        "s3://cdr-data/cdr", "http://minio:9000", "kms://alias/cdr-kek",
    )  # fmt: skip
    assert s.bronze_store == s.store and s.key_folder == str(tmp_path / "wrapped")
    assert s.aws() == {"aws_access_key_id": "AKIA-from-connection",
                       "aws_secret_access_key": "secret", "region_name": "me-central-1"}  # fmt: skip
    plain = Settings.from_env(env)
    assert plain.s3_endpoint_url == "http://old:9000" and plain.aws() == {}
    assert set(CONNECTION_EXTRAS.values()) <= {f"CDR_{n}" for n in (
        "S3_ENDPOINT_URL", "KMS_ENDPOINT_URL", "STORE", "BRONZE_STORE", "KEYRING_DIR")}  # fmt: skip


def test_a_kms_keyring_folder_inside_the_store_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must not be inside the store"):
        Settings.from_env({"CDR_STORE": str(tmp_path), "CDR_KEYRING": "kms://alias/k",
                           "CDR_KEYRING_DIR": str(tmp_path / "keys")})  # fmt: skip
    with pytest.raises(ValueError, match="needs a key id"):
        Settings.from_env({"CDR_STORE": str(tmp_path / "s"), "CDR_KEYRING": "kms://"})

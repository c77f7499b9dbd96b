"""The KMS keyring against moto's KMS on 127.0.0.1: the same tokens and vault as the local
keyring, rotation without touching data, and crypto-shredding that KMS cannot undo."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import boto3
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pipeline.core.config import Settings
from pipeline.core.keys import KeyDestroyed, KmsKeyring, LocalKeyring
from pipeline.core.resources import Resources
from pipeline.flows.ingest import ingest_file
from pipeline.proof.crypto import DecryptionError, decrypt_value
from pipeline.records.lookup import identifier_tokens
from pipeline.records.synth import generate
from tests.helpers import read_tier


@pytest.fixture
def kms(moto_endpoint: str) -> object:
    return boto3.client("kms", endpoint_url=moto_endpoint, region_name="us-east-1")


def _key(kms: object, alias: str) -> str:
    key_id: str = kms.create_key(Description=alias)["KeyMetadata"]["KeyId"]  # type: ignore[attr-defined]
    kms.create_alias(AliasName=alias, TargetKeyId=key_id)  # type: ignore[attr-defined]
    return key_id


def _vault_identifiers(res: Resources, month: str) -> dict[str, str]:
    y, m = month.split("-")
    gcm = AESGCM(res.keyring.data_key(f"month-{month}", create=False))
    vault = read_tier(res.store, f"vault/year={y}/month={m}/")
    return {
        t: decrypt_value(gcm, blob, t.encode()).decode()
        for t, blob in vault.select("token", "identifier_encrypted").iter_rows()
    }


def test_kms_keyring_from_settings_ingests_and_reidentifies(
    tmp_path: Path, kms: object, moto_endpoint: str
) -> None:
    _key(kms, "alias/cdr-kek")
    env = {
        "CDR_STORE": str(tmp_path / "store"),
        "CDR_KEYRING": "kms://alias/cdr-kek",
        "CDR_KEYRING_DIR": str(tmp_path / "wrapped"),
        "CDR_KMS_ENDPOINT_URL": moto_endpoint,
        "CDR_DATA_DOCS": str(tmp_path / "docs"),
        "CDR_DEFAULT_REGION": "PK",
    }
    res = Resources.from_settings(Settings.from_env(env))
    assert isinstance(res.keyring, KmsKeyring)
    g = generate("canonical_csv", tmp_path / "a.csv", 500, start=dt.date(2025, 3, 1), months=1)
    ingest_file(res, g.path, as_of=dt.date(2025, 6, 1))
    clear = _vault_identifiers(res, "2025-03")
    assert set(clear.values()) >= {n for n in g.numbers if n in set(clear.values())} and clear
    # Nothing in the keyring folder is a usable key without KMS: no kek.bin, secrets sealed.
    files = {p.name for p in (tmp_path / "wrapped").rglob("*") if p.is_file()}
    assert "kek.bin" not in files and "token-v1.key.kms" in files and "token-v1.key" not in files
    number = sorted(clear.values())[0]
    assert identifier_tokens(res.keyring, [number], "PK")[0] in clear


def test_tokens_and_vault_round_trip_under_local_and_kms_keyrings_and_rotation(
    tmp_path: Path, kms: object
) -> None:
    first, second = _key(kms, "alias/kek-2025"), _key(kms, "alias/kek-2026")
    local = LocalKeyring(tmp_path / "local")
    ring = KmsKeyring(first, tmp_path / "kms", kms)
    for keyring in (local, ring):
        month = keyring.data_key("month-2025-03")
        gcm = AESGCM(month)
        blob = gcm.encrypt(b"\x00" * 12, b"+923001234567", b"aad")
        assert keyring.data_key("month-2025-03") == month  # unwrapped again: the same key
        assert gcm.decrypt(b"\x00" * 12, blob, b"aad") == b"+923001234567"
    tokens = identifier_tokens(ring, ["+92 300 1234567", "0300-1234567"], "PK")
    assert len(tokens) == 1 and tokens[0].startswith("msisdn.v1.")

    month_key, signer = ring.data_key("month-2025-03"), ring.public_key_pem()
    assert ring.rotate(second) >= 3  # the data key, the token key and the signing key
    kms.disable_key(KeyId=first)  # type: ignore[attr-defined]
    again = KmsKeyring(second, tmp_path / "kms", kms)
    assert again.data_key("month-2025-03") == month_key  # re-wrapped, not replaced
    assert identifier_tokens(again, ["+923001234567"], "PK") == tokens  # tokens still join
    assert again.public_key_pem() == signer
    # Every wrapped key and secret is now under the new KMS key only.
    blobs = [*(tmp_path / "kms").glob("*.kms"), *(tmp_path / "kms" / "data").glob("*.wrapped")]
    used = {kms.decrypt(CiphertextBlob=p.read_bytes())["KeyId"] for p in blobs}  # type: ignore[attr-defined]
    assert len(blobs) >= 3 and all(k.endswith(second) for k in used), used


def test_a_destroyed_month_key_cannot_be_recovered(tmp_path: Path, kms: object) -> None:
    key_id = _key(kms, "alias/kek-shred")
    ring = KmsKeyring(key_id, tmp_path / "kms", kms)
    old = ring.data_key("month-2025-03")
    blob = AESGCM(old).encrypt(b"\x01" * 12, b"+923001234567", b"t")
    assert ring.destroy_data_key("month-2025-03")
    assert not ring.has_data_key("month-2025-03")
    assert not list((tmp_path / "kms").rglob("month-2025-03*"))
    with pytest.raises(KeyDestroyed):
        KmsKeyring(key_id, tmp_path / "kms", kms).data_key("month-2025-03", create=False)
    # KMS keeps no copy of a data key: asking again makes a different one.
    fresh = KmsKeyring(key_id, tmp_path / "kms", kms).data_key("month-2025-03")
    assert fresh != old
    with pytest.raises(DecryptionError):
        decrypt_value(AESGCM(fresh), b"\x01" * 12 + blob, b"t")


def test_local_rotation_rewraps_data_keys_and_keeps_tokens(tmp_path: Path) -> None:
    ring = LocalKeyring(tmp_path / "keys")
    month, tokens = ring.data_key("month-2025-03"), identifier_tokens(ring, ["+923001234567"], "PK")
    old_kek = (tmp_path / "keys" / "kek.bin").read_bytes()
    before = (tmp_path / "keys" / "data" / "month-2025-03.wrapped").read_bytes()
    assert ring.rotate() == 1
    assert (tmp_path / "keys" / "kek.bin").read_bytes() != old_kek
    assert (tmp_path / "keys" / "data" / "month-2025-03.wrapped").read_bytes() != before
    again = LocalKeyring(tmp_path / "keys")
    assert again.data_key("month-2025-03") == month
    assert identifier_tokens(again, ["0300-1234567"], "PK") == tokens


def test_cli_rotation_is_audited(
    local_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.cli import main as cli
    from pipeline.proof.audit import read_log

    res = Resources.from_settings(Settings.from_env(local_env))
    month = res.keyring.data_key("month-2025-03")
    assert cli(["keys", "rotate"]) == 0
    assert "1 wrapped keys re-wrapped" in capsys.readouterr().out
    assert LocalKeyring(local_env["CDR_KEYRING"]).data_key("month-2025-03") == month
    assert read_log(res.store)[-1]["action"] == "kek_rotated"

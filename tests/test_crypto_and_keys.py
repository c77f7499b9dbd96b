"""Segmented AES-GCM for originals, per-value AES-GCM, and the local keyring."""

from __future__ import annotations

import io
import os
import stat
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pipeline.core.config import Settings
from pipeline.core.keys import KeyDestroyed, LocalKeyring
from pipeline.proof.crypto import (
    SEGMENT,
    DecryptionError,
    decrypt_stream,
    decrypt_value,
    encrypt_segments,
    encrypt_value,
)


def _encrypt(key: bytes, data: bytes, aad: bytes = b"file") -> bytes:
    chunks = iter([data[i : i + SEGMENT] for i in range(0, len(data), SEGMENT)] or [b""])
    return b"".join(encrypt_segments(key, chunks, aad))


def _decrypt(key: bytes, blob: bytes, aad: bytes = b"file") -> bytes:
    return b"".join(decrypt_stream(key, io.BytesIO(blob), aad))


@pytest.mark.parametrize("size", [0, 1, SEGMENT - 1, SEGMENT, 2 * SEGMENT + 17])
def test_segments_round_trip(size: int) -> None:
    key, data = os.urandom(32), os.urandom(size)
    assert _decrypt(key, _encrypt(key, data)) == data


def test_flipped_byte_truncation_reordering_and_wrong_key_fail() -> None:
    key, data = os.urandom(32), os.urandom(2 * SEGMENT + 100)
    blob = _encrypt(key, data)
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 1
    seg = SEGMENT + 16
    header = 16
    segs = [blob[header + i * seg : header + (i + 1) * seg] for i in range(3)]
    cases = {
        "flipped": bytes(flipped),
        "truncated at a segment boundary": blob[: header + 2 * seg],
        "reordered": blob[:header] + segs[1] + segs[0] + segs[2],
        "extended": blob + blob[header : header + seg],
    }
    for name, bad in cases.items():
        with pytest.raises(DecryptionError):
            _decrypt(key, bad)
        assert name
    with pytest.raises(DecryptionError):
        _decrypt(os.urandom(32), blob)
    with pytest.raises(DecryptionError):
        _decrypt(key, blob, aad=b"another file")


def test_value_encryption_binds_associated_data() -> None:
    gcm = AESGCM(os.urandom(32))
    blob = encrypt_value(gcm, b"+923001234567", b"msisdn.v1.token")
    assert decrypt_value(gcm, blob, b"msisdn.v1.token") == b"+923001234567"
    assert encrypt_value(gcm, b"+923001234567", b"t") != encrypt_value(gcm, b"+923001234567", b"t")
    with pytest.raises(DecryptionError):
        decrypt_value(gcm, blob, b"msisdn.v1.other")


def test_keyring_files_are_private(tmp_path: Path) -> None:
    ring = LocalKeyring(tmp_path / "keys")
    ring.data_key("month-2025-03")
    ring.token_key()
    ring.signing_key()
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    for f in (tmp_path / "keys").rglob("*"):
        if f.is_file():
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


def test_keys_persist_and_racing_creators_agree(tmp_path: Path) -> None:
    results: list[bytes] = []

    def make() -> None:
        results.append(LocalKeyring(tmp_path / "keys").data_key("month-2025-03"))

    threads = [threading.Thread(target=make) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1
    assert LocalKeyring(tmp_path / "keys").data_key("month-2025-03") == results[0]
    wrapped = (tmp_path / "keys" / "data" / "month-2025-03.wrapped").read_bytes()
    assert results[0] not in wrapped  # stored wrapped by the KEK, never in clear


def test_destroyed_key_cannot_be_recovered(tmp_path: Path) -> None:
    ring = LocalKeyring(tmp_path / "keys")
    ring.data_key("file-abc")
    assert ring.destroy_data_key("file-abc") is True
    with pytest.raises(KeyDestroyed):
        LocalKeyring(tmp_path / "keys").data_key("file-abc", create=False)
    assert ring.destroy_data_key("file-abc") is False


def test_keyring_inside_the_store_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must not be inside the store"):
        Settings.from_env({"CDR_STORE": str(tmp_path), "CDR_KEYRING": str(tmp_path / "k")})

"""Authenticated encryption of values and of whole files, with `cryptography`'s AES-GCM.

Files are encrypted in fixed-size segments so a multi-gigabyte original never sits in memory:
each segment is its own AES-GCM message whose nonce carries the segment number and a final-segment
flag, and whose associated data carries the header. Reordering, dropping, truncating or extending
segments therefore fails authentication (the STREAM construction of Hoang, Reyhanitabar, Rogaway
and Vizár), and nothing here invents a primitive of its own.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import IO

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pipeline.core.errors import PipelineError

MAGIC = b"CDRE\x01"
SEGMENT = 4 << 20
_HEADER = struct.Struct(">5s7sI")  # magic, nonce prefix, segment size
TAG = 16


class DecryptionError(PipelineError):
    """Ciphertext that does not authenticate: wrong key, or altered bytes."""


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + struct.pack(">IB", index, 1 if last else 0)


def _read_full(src: IO[bytes], n: int) -> bytes:
    """Read exactly n bytes unless the stream ends first (network streams return short reads)."""
    parts = []
    while n > 0:
        chunk = src.read(n)
        if not chunk:
            break
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def encrypt_segments(key: bytes, chunks: Iterator[bytes], aad: bytes) -> Iterator[bytes]:
    """Encrypt a stream given as chunks of exactly SEGMENT bytes (the last may be shorter)."""
    gcm = AESGCM(key)
    prefix = os.urandom(7)
    header = _HEADER.pack(MAGIC, prefix, SEGMENT)
    yield header
    index = 0
    pending = next(chunks, b"")
    while True:
        following = next(chunks, None)
        last = following is None
        yield gcm.encrypt(_nonce(prefix, index, last), pending, header + aad)
        if last:
            return
        pending = following
        index += 1


def encrypt_bytes(key: bytes, data: bytes, aad: bytes) -> bytes:
    """`encrypt_segments` of data held in memory."""
    chunks = iter([data[i : i + SEGMENT] for i in range(0, len(data), SEGMENT)] or [b""])
    return b"".join(encrypt_segments(key, chunks, aad))


def decrypt_stream(key: bytes, src: IO[bytes], aad: bytes) -> Iterator[bytes]:
    """Yield the plaintext of `encrypt_segments` output, segment by segment, authenticated."""
    gcm = AESGCM(key)
    header = _read_full(src, _HEADER.size)
    if len(header) != _HEADER.size:
        raise DecryptionError("encrypted object too short for its header")
    magic, prefix, segment = _HEADER.unpack(header)
    if magic != MAGIC:
        raise DecryptionError("not an encrypted object of this pipeline")
    index = 0
    block = _read_full(src, segment + TAG)
    while True:
        following = _read_full(src, segment + TAG)
        last = not following
        try:
            yield gcm.decrypt(_nonce(prefix, index, last), block, header + aad)
        except Exception as exc:  # InvalidTag carries no message of its own
            raise DecryptionError(f"segment {index} does not authenticate") from exc
        if last:
            return
        block = following
        index += 1


def encrypt_value(gcm: AESGCM, plaintext: bytes, aad: bytes) -> bytes:
    """One value under AES-GCM with a fresh random nonce: nonce || ciphertext || tag."""
    nonce = os.urandom(12)
    return nonce + gcm.encrypt(nonce, plaintext, aad)


def encrypt_values(gcm: AESGCM, plaintexts: list[bytes], aads: list[bytes]) -> list[bytes]:
    """Many values at once (the same format as `encrypt_value`), each with a fresh nonce."""
    nonces = os.urandom(12 * len(plaintexts))
    return [
        nonces[i : i + 12] + gcm.encrypt(nonces[i : i + 12], p, a)
        for i, p, a in zip(range(0, len(nonces), 12), plaintexts, aads, strict=True)
    ]


def decrypt_value(gcm: AESGCM, blob: bytes, aad: bytes) -> bytes:
    try:
        return gcm.decrypt(blob[:12], blob[12:], aad)
    except Exception as exc:
        raise DecryptionError("value does not authenticate") from exc

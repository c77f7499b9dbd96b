"""A disclosure package encrypted for one recipient's public key, and opened with its private key.

Hybrid encryption from `cryptography`: a random AES-256 content key encrypts the payload in
authenticated segments (`pipeline.proof.crypto`); the content key is wrapped for the recipient, either
by X25519 key agreement (ephemeral key, HKDF-SHA256, AES key wrap) or by RSA-OAEP (SHA-256).

Layout: `CDRX1\\n`, a 4-byte big-endian header length, the header (JSON: algorithm, wrapped key,
ephemeral public key, recipient key fingerprint), then the segments. The header is the segments'
associated data, so changing any byte of it or of the payload fails authentication.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from pipeline.core.errors import USAGE, PipelineError
from pipeline.proof.crypto import SEGMENT, DecryptionError, decrypt_stream, encrypt_bytes

MAGIC = b"CDRX1\n"
X25519_ALG = "X25519-HKDF-SHA256-A256KW"
RSA_ALG = "RSA-OAEP-SHA256"
MIN_RSA_BITS = 2048
_OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


class PackageError(PipelineError, ValueError):
    """A package that cannot be opened: not for this key, modified, or not a package."""


class RecipientKeyError(PipelineError, ValueError):
    """A recipient key that is not an X25519 or RSA (2048 bits or more) public key in PEM."""

    exit_status = USAGE


def load_recipient_key(pem: str | bytes) -> X25519PublicKey | RSAPublicKey:
    """The recipient's public key, refused unless it is X25519 or RSA of at least 2048 bits."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise RecipientKeyError("the recipient key is not a PEM public key") from None
    if isinstance(key, RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise RecipientKeyError(f"the recipient's RSA key has {key.key_size} bits; at least 2048")
    if not isinstance(key, X25519PublicKey | RSAPublicKey):
        raise RecipientKeyError(
            f"the recipient key is {type(key).__name__.removeprefix('_')}: X25519 or RSA only"
        )
    return key


def fingerprint(key: X25519PublicKey | RSAPublicKey) -> str:
    """SHA-256 of the key's SubjectPublicKeyInfo (DER), hex: names the recipient key."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def _kek(shared: bytes, epk: bytes, recipient: bytes) -> bytes:
    info = b"cdr-export v1" + epk + recipient
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


def _raw(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def encrypt_for(recipient: X25519PublicKey | RSAPublicKey, payload: bytes) -> bytes:
    """The payload encrypted for the recipient (see the module's layout)."""
    content_key = AESGCM.generate_key(bit_length=256)
    header: dict[str, Any] = {"recipient": fingerprint(recipient), "segment": SEGMENT}
    if isinstance(recipient, X25519PublicKey):
        ephemeral = X25519PrivateKey.generate()
        epk = _raw(ephemeral.public_key())
        kek = _kek(ephemeral.exchange(recipient), epk, _raw(recipient))
        header |= {"alg": X25519_ALG, "epk": base64.b64encode(epk).decode()}
        wrapped = aes_key_wrap(kek, content_key)
    else:
        header |= {"alg": RSA_ALG}
        wrapped = recipient.encrypt(content_key, _OAEP)
    header["wrapped_key"] = base64.b64encode(wrapped).decode()
    return frame(MAGIC, header, content_key, payload)


def frame(magic: bytes, header: dict[str, Any], key: bytes, payload: bytes) -> bytes:
    """`magic`, the header's length and JSON, then the payload encrypted under `key` with the
    header as associated data: the one layout of both package kinds (key and passphrase)."""
    head = json.dumps(header, sort_keys=True).encode()
    return magic + len(head).to_bytes(4, "big") + head + encrypt_bytes(key, payload, head)


def unframe(magic: bytes, blob: bytes, not_one: str) -> tuple[Any, bytes, bytes]:
    """(header, its bytes, the encrypted body) of a package framed by `frame`; PackageError
    `not_one` if the blob is not framed with `magic`, or if the header is not JSON."""
    if not blob.startswith(magic) or len(blob) < len(magic) + 4:
        raise PackageError(not_one)
    size = int.from_bytes(blob[len(magic) : len(magic) + 4], "big")
    head = blob[len(magic) + 4 : len(magic) + 4 + size]
    try:
        header = json.loads(head)
    except ValueError:
        raise PackageError("the package header is damaged") from None
    return header, head, blob[len(magic) + 4 + size :]


def key_is_protected(pem: bytes) -> bool:
    """Whether a PEM private key is encrypted under a passphrase (PKCS#8 or the older form)."""
    return b"ENCRYPTED" in pem[:200]


def load_private_key(
    pem: bytes, passphrase: bytes | None = None
) -> X25519PrivateKey | RSAPrivateKey:
    """A recipient's private key, decrypted with its passphrase when it has one."""
    if key_is_protected(pem) and not passphrase:
        raise PackageError("the private key is protected by a passphrase and none was given")
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase or None)
    except (ValueError, TypeError):
        if passphrase:
            raise PackageError("the private key cannot be opened: wrong passphrase?") from None
        raise PackageError("the private key is not a PEM private key") from None
    if not isinstance(key, X25519PrivateKey | RSAPrivateKey):
        raise PackageError("the private key is neither X25519 nor RSA")
    return key


def new_recipient_key(passphrase: bytes | None) -> tuple[bytes, bytes]:
    """A recipient's new X25519 key pair, as PEM: (private, PKCS#8, encrypted under the
    passphrase when one is given; public, SubjectPublicKeyInfo). The authority makes it on its
    own machine and gives the operator only the public half."""
    private = X25519PrivateKey.generate()
    protection = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    secret = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, protection
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return secret, public


def decrypt_with(
    private: X25519PrivateKey | RSAPrivateKey, blob: bytes
) -> tuple[dict[str, Any], bytes]:
    """(header, payload); PackageError says whether the key is wrong or the package changed."""
    header, head, body = unframe(MAGIC, blob, "not a disclosure package (no CDRX1 header)")
    try:
        wrapped = base64.b64decode(header["wrapped_key"])
        alg = header["alg"]
    except (ValueError, KeyError, TypeError):
        raise PackageError("the package header is damaged") from None
    if header.get("recipient") != fingerprint(private.public_key()):
        raise PackageError(
            "the package is not encrypted for this private key "
            f"(it names recipient key {str(header.get('recipient'))[:16]}…)"
        )
    try:
        if alg == X25519_ALG and isinstance(private, X25519PrivateKey):
            epk = base64.b64decode(header["epk"])
            shared = private.exchange(X25519PublicKey.from_public_bytes(epk))
            content_key = aes_key_unwrap(_kek(shared, epk, _raw(private.public_key())), wrapped)
        elif alg == RSA_ALG and isinstance(private, RSAPrivateKey):
            content_key = private.decrypt(wrapped, _OAEP)
        else:
            raise PackageError(f"the package uses {alg}, which this private key cannot open")
    except (InvalidUnwrap, ValueError, KeyError):
        raise PackageError(
            "the package's key does not unwrap: modified, or not for this key"
        ) from None
    try:
        payload = b"".join(decrypt_stream(content_key, io.BytesIO(body), head))
    except (DecryptionError, InvalidTag) as exc:
        raise PackageError(f"the package was modified: {exc}") from None
    return header, payload

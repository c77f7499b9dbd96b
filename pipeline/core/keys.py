"""The keyring: envelope encryption, token keys and the seal signing key.

A key-encryption key (KEK) wraps every data key. Data keys are named: `month-YYYY-MM` protects a
month's vault, `file-<sha256>` a bronze original and its quarantined rows. Destroying a data
key's wrapped file is the crypto-shred: the ciphertext left anywhere is then unreadable. Keys are
created on first use, with 0600 files in a 0700 folder; creation is create-if-absent, so two
workers racing for the same month key end up with one key.

Where the KEK lives is the only difference between the two keyrings:
- `LocalKeyring`: `kek.bin` in the folder, RFC 3394 AES key wrap;
- `KmsKeyring` (`CDR_KEYRING=kms://<key id, ARN or alias>`): the KEK never leaves AWS KMS. Data
  keys come from `GenerateDataKey` and are kept as KMS ciphertext in the folder; the token keys
  and the signing key are kept KMS-encrypted too. `rotate` re-encrypts every wrapped key under a
  new KMS key (`ReEncrypt`) without touching any data; token keys keep their version, so tokens
  made before a rotation still join.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap

from pipeline.core.errors import PipelineError

TOKEN_KEY_VERSION = "v1"
_NAME = re.compile(r"^[a-z]+-[A-Za-z0-9-]+$")


def _written_beside(path: Path, data: bytes) -> Path:
    """`data` in a new 0600 temporary file next to `path`, synced: ready to link or rename."""
    tmp = path.with_name(f".tmp-{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return tmp


class KeyDestroyed(PipelineError):
    """A data key that was destroyed (crypto-shredded) or never existed."""


class LocalKeyring:
    """Keys in a local folder that is never inside the store; the KEK is a file beside them."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)
        (self.root / "data").mkdir(exist_ok=True, mode=0o700)
        os.chmod(self.root / "data", 0o700)
        self._cache: dict[str, bytes] = {}
        self._kek = self._load_kek()

    def _load_kek(self) -> bytes:
        return self._create_once("kek.bin", lambda: os.urandom(32))

    # What differs between keyrings: how a data key is made and unwrapped, and how secrets
    # (token keys, the signing key) are kept at rest.
    def _new_wrapped_key(self) -> bytes:
        return aes_key_wrap(self._kek, os.urandom(32))

    def _unwrap(self, wrapped: bytes) -> bytes:
        return aes_key_unwrap(self._kek, wrapped)

    def _secret(self, name: str, make: object) -> bytes:
        return self._create_once(name, make)

    def _create_once(self, name: str, make: object) -> bytes:
        """Read a key file, creating it atomically (and only once) if it is absent."""
        path = self.root / name
        if not path.exists():
            tmp = _written_beside(path, make())  # type: ignore[operator]
            try:
                os.link(tmp, path)  # fails if another process created it first
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        return path.read_bytes()

    # --- data keys (envelope encryption) -------------------------------------------------
    def _data_path(self, name: str) -> Path:
        if not _NAME.match(name):
            raise ValueError(f"bad data key name {name!r}")
        return self.root / "data" / f"{name}.wrapped"

    def data_key(self, name: str, create: bool = True) -> bytes:
        """The data key `name`, unwrapped; created if absent and `create` is set."""
        if name in self._cache:
            return self._cache[name]
        path = self._data_path(name)
        if not path.exists() and not create:
            raise KeyDestroyed(f"data key {name} does not exist (destroyed or never created)")
        wrapped = self._create_once(f"data/{path.name}", self._new_wrapped_key)
        key = self._unwrap(wrapped)
        self._cache[name] = key
        return key

    def data_key_names(self, prefix: str = "") -> list[str]:
        """Names of the data keys that exist, optionally only those starting with `prefix`."""
        return sorted(
            p.name[: -len(".wrapped")] for p in (self.root / "data").glob(f"{prefix}*.wrapped")
        )

    def has_data_key(self, name: str) -> bool:
        return self._data_path(name).exists()

    def destroy_data_key(self, name: str) -> bool:
        """Crypto-shred: overwrite and remove the wrapped key. True if it existed."""
        path = self._data_path(name)
        self._cache.pop(name, None)
        if not path.exists():
            return False
        with open(path, "r+b") as f:
            f.write(os.urandom(path.stat().st_size))
            f.flush()
            os.fsync(f.fileno())
        path.unlink()
        return True

    def _replace(self, path: Path, data: bytes) -> None:
        os.replace(_written_beside(path, data), path)

    def rotate(self, new_key_id: str | None = None) -> int:
        """A new KEK re-wraps every data key (the data keys, data and tokens are unchanged);
        the number re-wrapped. The old KEK is overwritten, then replaced."""
        new_kek = os.urandom(32)
        wrapped = sorted((self.root / "data").glob("*.wrapped"))
        for path in wrapped:
            self._replace(path, aes_key_wrap(new_kek, aes_key_unwrap(self._kek, path.read_bytes())))
        self._replace(self.root / "kek.bin", new_kek)
        self._kek = new_kek
        return len(wrapped)

    # --- token keys --------------------------------------------------------------------
    def token_key(self, version: str = TOKEN_KEY_VERSION) -> str:
        """The HMAC key of a token version, as ASCII text (what polars-hash takes)."""
        if not re.fullmatch(r"v\d+", version):
            raise ValueError(f"bad token key version {version!r}")
        raw = self._secret(
            f"token-{version}.key", lambda: secrets.token_urlsafe(32).encode("ascii")
        )
        return raw.decode("ascii")

    # --- seal signing key ----------------------------------------------------------------
    def signing_key(self) -> Ed25519PrivateKey:
        pem = self._secret(
            "seal-ed25519.pem",
            lambda: Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        key = serialization.load_pem_private_key(pem, password=None)
        assert isinstance(key, Ed25519PrivateKey)
        return key

    def public_key(self) -> Ed25519PublicKey:
        return self.signing_key().public_key()

    def public_key_pem(self) -> str:
        return (
            self.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode("ascii")
        )


class KmsKeyring(LocalKeyring):
    """The KEK in AWS KMS (`GenerateDataKey`, `Decrypt`, `Encrypt`, `ReEncrypt`); the wrapped
    keys in the local folder. `client` is a boto3 KMS client (an endpoint URL for tests)."""

    def __init__(self, key_id: str, root: str | Path, client: object) -> None:
        self.key_id = key_id
        self._kms: Any = client
        super().__init__(root)

    def _load_kek(self) -> bytes:
        return b""  # no local KEK: KMS holds it

    def _new_wrapped_key(self) -> bytes:
        blob: bytes = self._kms.generate_data_key(KeyId=self.key_id, KeySpec="AES_256")[
            "CiphertextBlob"
        ]
        return blob

    def _unwrap(self, wrapped: bytes) -> bytes:
        key: bytes = self._kms.decrypt(CiphertextBlob=wrapped)["Plaintext"]
        return key

    def _secret(self, name: str, make: object) -> bytes:
        def sealed() -> bytes:
            plain = make()  # type: ignore[operator]
            blob: bytes = self._kms.encrypt(KeyId=self.key_id, Plaintext=plain)["CiphertextBlob"]
            return blob

        wrapped = self._create_once(f"{name}.kms", sealed)
        plain: bytes = self._kms.decrypt(CiphertextBlob=wrapped)["Plaintext"]
        return plain

    def rotate(self, new_key_id: str | None = None) -> int:
        """Re-encrypt every wrapped key and secret under `new_key_id`; the number re-wrapped.

        Each file is replaced atomically; the data keys themselves (and so all data and tokens)
        are unchanged.
        """
        count = 0
        for path in sorted([*self.root.glob("*.kms"), *(self.root / "data").glob("*.wrapped")]):
            blob = self._kms.re_encrypt(
                CiphertextBlob=path.read_bytes(), DestinationKeyId=new_key_id or self.key_id
            )["CiphertextBlob"]
            self._replace(path, blob)
            count += 1
        self.key_id = new_key_id or self.key_id
        return count


def open_keyring(
    location: str,
    folder: str,
    endpoint_url: str | None = None,
    credentials: dict[str, str] | None = None,
    client: Any = None,
) -> LocalKeyring:
    """`kms://<key>` → a KmsKeyring keeping its wrapped keys in `folder` (through `client`, or
    one made from the endpoint and credentials); else a local one."""
    if location.startswith("kms://"):
        from pipeline.core.store import aws_client

        client = client or aws_client("kms", endpoint_url, **(credentials or {}))
        return KmsKeyring(location.removeprefix("kms://"), folder, client)
    return LocalKeyring(location)

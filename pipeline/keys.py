"""The local keyring: envelope encryption, token keys and the seal signing key.

A key-encryption key (KEK) wraps every data key (RFC 3394 AES key wrap). Data keys are named:
`month-YYYY-MM` protects a month's vault, `file-<sha256>` a bronze original and its quarantined
rows. Destroying a data key's wrapped file is the crypto-shred: the ciphertext left anywhere is
then unreadable. Keys are created on first use, with 0600 files in a 0700 folder; creation is
create-if-absent, so two workers racing for the same month key end up with one key.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap

TOKEN_KEY_VERSION = "v1"
_NAME = re.compile(r"^[a-z]+-[A-Za-z0-9-]+$")


class KeyDestroyed(Exception):
    """A data key that was destroyed (crypto-shredded) or never existed."""


class LocalKeyring:
    """Keys in a local folder that is never inside the store."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)
        (self.root / "data").mkdir(exist_ok=True, mode=0o700)
        self._kek = self._create_once("kek.bin", lambda: os.urandom(32))
        self._cache: dict[str, bytes] = {}

    def _create_once(self, name: str, make: object) -> bytes:
        """Read a key file, creating it atomically (and only once) if it is absent."""
        path = self.root / name
        if not path.exists():
            tmp = path.with_name(f".tmp-{secrets.token_hex(8)}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(make())  # type: ignore[operator]
                f.flush()
                os.fsync(f.fileno())
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
        wrapped = self._create_once(
            f"data/{path.name}", lambda: aes_key_wrap(self._kek, os.urandom(32))
        )
        key = aes_key_unwrap(self._kek, wrapped)
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

    # --- token keys --------------------------------------------------------------------
    def token_key(self, version: str = TOKEN_KEY_VERSION) -> str:
        """The HMAC key of a token version, as ASCII text (what polars-hash takes)."""
        if not re.fullmatch(r"v\d+", version):
            raise ValueError(f"bad token key version {version!r}")
        raw = self._create_once(
            f"token-{version}.key", lambda: secrets.token_urlsafe(32).encode("ascii")
        )
        return raw.decode("ascii")

    # --- seal signing key ----------------------------------------------------------------
    def signing_key(self) -> Ed25519PrivateKey:
        pem = self._create_once(
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

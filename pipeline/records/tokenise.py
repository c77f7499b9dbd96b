"""Deterministic tokens for end users' identifiers: `kind.version.base64url(HMAC)`.

Token = HMAC-SHA256(token key of `version`, "kind:normalised value"), first 128 bits, URL-safe
base64 without padding, e.g. `msisdn.v1.3Vq0...`. The kind is inside the MAC input and visible
in the token, so an e-mail and a number can never share a token; the key version is visible, so
keys can rotate while old tokens stay recognisable. No salt: the same person gets the same token
in every file and month, so joins and counts work without the vault. Computed by the polars-hash
plugin over whole columns (its output equals Python's `hmac`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import polars as pl
import polars_hash  # noqa: F401  (registers the .chash namespace)

TOKEN_PATTERN = r"^(msisdn|email|sip)\.v\d+\.[A-Za-z0-9_-]{22}$"


def token_expr(kind: pl.Expr, value: pl.Expr, key: str, version: str) -> pl.Expr:
    """Token of (kind, value) as a polars expression; null where the value is null."""
    mac = (kind + pl.lit(":") + value).chash.hmac_sha256(key=key)  # type: ignore[attr-defined]
    b64 = (
        mac.str.slice(0, 32)
        .str.decode("hex")
        .bin.encode("base64")
        .str.replace_all("+", "-", literal=True)
        .str.replace_all("/", "_", literal=True)
        .str.strip_chars_end("=")
    )
    return kind + pl.lit(f".{version}.") + b64


def token(kind: str, value: str, key: str, version: str) -> str:
    """The same token computed for one value in plain Python (for look-ups and tests)."""
    mac = hmac.new(key.encode("ascii"), f"{kind}:{value}".encode(), hashlib.sha256).digest()
    return f"{kind}.{version}." + base64.urlsafe_b64encode(mac[:16]).decode().rstrip("=")

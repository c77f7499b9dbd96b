"""A request stored by its case reference, sealed: everything that names a person (identifiers,
a customer, a delivery key or passphrase) encrypted under the request's own data key in
`requests/<case>/request.enc`, so that forms, run parameters, XCom and logs carry the case alone.

Data subject requests, law-enforcement export requests and legal-hold requests share it; one
case reference names one request (creating a second is refused), and destroying the request's
key (`layout.request_key_name`) makes it unreadable.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pipeline.core import layout
from pipeline.proof.crypto import decrypt_stream, encrypt_bytes

if TYPE_CHECKING:
    from pipeline.core.resources import Resources


def _key(case: str) -> str:
    return layout.request_object_key(case, "request.enc")


def seal_request(res: Resources, case: str, body: dict[str, Any]) -> bool:
    """Store `body` encrypted for `case`; False (nothing written) when the case exists already."""
    data_key = res.keyring.data_key(layout.request_key_name(case))
    blob = encrypt_bytes(data_key, json.dumps(body).encode(), _key(case).encode())
    return res.store.put_new(_key(case), blob)


def request_exists(res: Resources, case: str) -> bool:
    return res.store.exists(_key(case))


def open_request(res: Resources, case: str) -> dict[str, Any]:
    """The stored request of `case`, decrypted (FileNotFoundError-like errors from the store
    when there is none: check `request_exists` first)."""
    data_key = res.keyring.data_key(layout.request_key_name(case), create=False)
    with res.store.open(_key(case)) as src:
        body: dict[str, Any] = json.loads(
            b"".join(decrypt_stream(data_key, src, _key(case).encode()))
        )
    return body

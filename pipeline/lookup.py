"""From identifiers as a person types them to the tokens the tiers hold.

Used where a person names end users (legal holds, law-enforcement requests): each identifier is
normalised exactly as ingestion does, then tokenised with the current token key. Errors say which
identifier (by position) could not be read, never its value.
"""

from __future__ import annotations

import polars as pl

from pipeline.errors import USAGE, PipelineError
from pipeline.keys import TOKEN_KEY_VERSION, LocalKeyring
from pipeline.normalise import PERSONAL_KINDS, normalise_addresses
from pipeline.tokenise import token


class IdentifierError(PipelineError, ValueError):
    """An identifier that is not a phone number, e-mail address or SIP user."""

    exit_status = USAGE


def normalised_identifiers(
    identifiers: list[str], default_region: str | None
) -> list[tuple[str, str]]:
    """(kind, normalised value) for each identifier, in order."""
    if not identifiers:
        return []
    df = normalise_addresses(
        pl.DataFrame({"raw": identifiers}, schema={"raw": pl.String}),
        {"raw": "a"},
        default_region,
        international=False,
    )
    out = []
    for i, (kind, value, bad) in enumerate(df.select("a_kind", "a_value", "a_bad").iter_rows(), 1):
        if bad or kind not in PERSONAL_KINDS:
            raise IdentifierError(
                f"identifier #{i} is not a phone number or e-mail address an end user could have"
                + ("" if default_region else " (national numbers need a default region)")
            )
        out.append((kind, value))
    return out


def identifier_tokens(
    keyring: LocalKeyring, identifiers: list[str], default_region: str | None
) -> list[str]:
    """The tokens of the identifiers under the current token key version."""
    key = keyring.token_key(TOKEN_KEY_VERSION)
    return sorted(
        {
            token(k, v, key, TOKEN_KEY_VERSION)
            for k, v in normalised_identifiers(identifiers, default_region)
        }
    )

"""From identifiers as a person types them to the tokens the tiers hold.

Used where a person names end users (legal holds, law-enforcement requests): each identifier is
normalised exactly as ingestion does, then tokenised with the current token key. Errors say which
identifier (by position) could not be read, never its value.
"""

from __future__ import annotations

import polars as pl

from pipeline.core.errors import USAGE, PipelineError
from pipeline.core.keys import TOKEN_KEY_VERSION, LocalKeyring
from pipeline.records.normalise import (
    PERSONAL_KINDS,
    fold_lookalikes,
    normalise_addresses,
    region,
)
from pipeline.records.tokenise import token


class IdentifierError(PipelineError, ValueError):
    """An identifier that is not a phone number, e-mail address or SIP user."""

    exit_status = USAGE


#: How a person gives the region of national-format numbers, wherever they type them.
HOW_TO_GIVE_REGION = (
    "a national-format number needs its country: give --default-region (the form's "
    "default_region) or set CDR_DEFAULT_REGION"
)


def default_region(given: str | None, configured: str | None) -> str | None:
    """The region national-format numbers are read in: the one given with the request, else the
    deployment's (`CDR_DEFAULT_REGION`); never a guessed country. Checked: an unknown code is
    refused."""
    code = (given or configured or "").strip()
    if not code:
        return None
    try:
        return region(code).code
    except ValueError as exc:
        raise IdentifierError(str(exc)) from None


def normalised_identifiers(
    identifiers: list[str], default_region: str | None
) -> list[tuple[str, str]]:
    """(kind, normalised value) for each identifier, in order; then, for one typed with
    look-alike characters (`fold_lookalikes`), also the value ingestion gave that form before it
    folded them, so records ingested then are found (and erased) too."""
    if not identifiers:
        return []
    raw = pl.DataFrame({"raw": identifiers}, schema={"raw": pl.String})
    df = normalise_addresses(raw, {"raw": "a"}, default_region, international=False)
    out = []
    for i, (kind, value, bad) in enumerate(df.select("a_kind", "a_value", "a_bad").iter_rows(), 1):
        if bad or kind not in PERSONAL_KINDS:
            raise IdentifierError(
                f"identifier #{i} is not a phone number or e-mail address an end user could have"
                + ("" if default_region else f" ({HOW_TO_GIVE_REGION})")
            )
        out.append((kind, value))
    if fold_lookalikes(raw.get_column("raw")).equals(raw.get_column("raw")):
        return out  # nothing typed in look-alike characters: no earlier form to look up
    as_before = normalise_addresses(raw, {"raw": "a"}, default_region, False, fold=False)
    for kind, value, bad in as_before.select("a_kind", "a_value", "a_bad").iter_rows():
        if not bad and kind in PERSONAL_KINDS and (kind, value) not in out:
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

"""The one identifier detector: can this text identify someone?

Every clear-text column the tiers keep passes it: at ingest (`freetext.scrub` masks a hit), in
the suites (no stored value may match it) and in `verify`. The rule, applied to a text read as a
person reads it (`normalise.fold_lookalikes`: other scripts' and full-width digits as digits,
every dash as `-`, invisible characters dropped):

1. **A digit run of 7 or more digits** is a possible phone number. A run is digits joined only
   by the marks people write inside numbers: spaces, `-`, `.`, `/`, brackets. So
   `0300 999 8802`, `92-300-9998803`, `(0300) 9998804` and `acct:3009998811` are runs of 11, 12,
   11 and 10 digits. Seven is the shortest number a numbering plan lets be dialled within a
   region (Pakistan's local numbers have 5 to 7 digits, its national ones 8 to 12); longer runs
   are numbers too (a number glued to other digits, an IMSI). Letters and other marks end a run.
2. **After `+`, 6 digits are enough**: the shortest international number any plan allows (a
   calling code and its shortest national number, computed from `phonenumbers`' metadata).
3. **An address**: an `@` between two characters that are not spaces (an e-mail or SIP
   address, however short its host), or a `sip:`, `sips:`, `tel:` or `mailto:` URI.

It errs toward masking: it does not ask whether a plan has allocated the run (a plan changes;
a foreign number written nationally cannot be told apart), so IDs made of long digit runs (an
Asterisk `uniqueid`, a UUID's last group) are masked too. Short codes (up to 6 digits) and
business sender IDs without a 7-digit run never match. The same pattern runs in polars (Rust's
regex) and in Great Expectations (Python's `re`): it uses only syntax both read alike, and
`\\d` and `\\s` in both take every script's digits and spaces.
"""

from __future__ import annotations

from functools import cache

import phonenumbers
import polars as pl
from phonenumbers import PhoneMetadata

from pipeline.records.expectations_engine import python_regex

#: digits a bare run needs to be a possible number (also the shortest digit run that makes a
#: sender ID ambiguous and a file name identifier-shaped)
RUN_DIGITS = 7
#: the marks a written number is split by (dashes are folded to `-` before the check)
SEPARATORS = r"[\s\-./()\[\]]"


@cache
def shortest_international() -> int:
    """Digits of the shortest number any numbering plan allows with its calling code."""
    shortest = 15
    for cc, regions in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.items():
        for code in regions:
            meta = (
                PhoneMetadata.metadata_for_nongeo_region(cc)
                if code == "001"
                else PhoneMetadata.metadata_for_region(code)
            )
            desc = meta.general_desc if meta is not None else None
            lengths = [n for n in getattr(desc, "possible_length", ()) if n > 0]
            if lengths:
                shortest = min(shortest, len(str(cc)) + min(lengths))
    return shortest


@cache
def pattern() -> str:
    """The detector as one regular expression (Rust's regex and Python's `re` alike)."""
    s = SEPARATORS
    plus = rf"\+{s}*\d(?:{s}*\d){{{shortest_international() - 1},}}"
    run = rf"\d(?:{s}*\d){{{RUN_DIGITS - 1},}}"
    address = r"[^\s@]@[^\s@]|(?i:\b(?:sips?|tel|mailto):[^\s])"
    return f"{plus}|{run}|{address}"


@cache
def _engine_pattern() -> str:
    return python_regex(pattern())


def identifying(col: pl.Expr) -> pl.Expr:
    """Whether each (folded) text could identify someone; false for null. The pattern as the
    suites' evaluator runs it (`python_regex`), so ingest and the suites see the same hits."""
    return col.str.contains(_engine_pattern()).fill_null(False)

"""The one identifier detector: can this text identify someone?

Every clear-text column the tiers keep passes it: at ingest (`freetext.scrub` masks a hit), in
the suites (no stored value may match it) and in `verify`. The rule, applied to a text read as a
person reads it (`normalise.fold_lookalikes`: other scripts' and full-width digits as ASCII
digits, every dash as `-`, invisible characters dropped; free text is stored so folded):

1. **A phone number, however it is split.** A *digit run* is digits joined only by the marks
   people write inside numbers (spaces, `-`, `.`, `/`, `~`, brackets). Any stretch of a run,
   from one digit group to another, is a hit when a numbering plan could read it as a number:
   - with the deployment's region (`CDR_DEFAULT_REGION`), its trunk prefix optional
     (`0300 999 8802`, `(0300) 9998804`, `3009998801`), or
   - with any calling code, after `+`, `00` or nothing (`92-300-9998803`, `+44 20 7946 0000`),
     a trunk `(0)` after the code allowed,

   where "could read" is the plan's general description of its numbers (the pattern and lengths
   `phonenumbers` ships for every region: every range of every number type, allocated or not
   yet). Prefixes and brackets around a run (`acct:`, `msisdn=`, `[...]`) do not hide it.
2. **An address**: an `@` between two characters that are not spaces (an e-mail or SIP
   address, whatever its host), or a `sip:`, `sips:`, `tel:` or `mailto:` URI.

It errs toward masking: a stretch that merely fits a plan's patterns is masked, whether or not
the number exists. It keeps what no plan can read as a number: short codes, business sender IDs,
error codes, sequence numbers with leading zeros (`r0000000044`), epoch-based IDs
(`1733580000.1234`), UUIDs. A number glued to other digits without a separator is one longer
run, which no plan reads as a number. The same pattern runs in polars (Rust's regex) and in
Great Expectations (Python's `re`): it uses only syntax both read alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache

import phonenumbers
import polars as pl
from phonenumbers import PhoneMetadata

from pipeline.records.expectations_engine import python_regex

#: ASCII white space: folding (NFKC) has made every other space one of these. Written out, not
#: `\s`: Python's and Rust's `\s` differ, and Rust's Unicode classes make the match 2x dearer.
SPACE = r" \t\n\r\x0b\x0c"
#: the marks a written number is split by (dashes are folded to `-` before the check)
SEPARATORS = rf"[{SPACE}\-./~()\[\]]"
_S = f"{SEPARATORS}*"
#: an address: an `@` between non-spaces, or a URI of a person's address
ADDRESS = rf"[^{SPACE}@]@[^{SPACE}@]|(?:^|[^A-Za-z0-9_])(?i:sips?|tel|mailto):[^{SPACE}]"


def _split_anywhere(pattern: str) -> str:
    """A numbering plan's pattern (digits, `\\d`, classes, groups, quantifiers) in which every
    digit may be followed by separators."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("\\d", i):
            atom, i = "[0-9]", i + 2
        elif ch == "[":
            end = pattern.index("]", i)
            atom, i = pattern[i : end + 1], end + 1
        elif ch == "{":  # a quantifier: its digits count, they are not digits of the number
            end = pattern.index("}", i)
            out.append(pattern[i : end + 1])
            i = end + 1
            continue
        elif ch.isdigit():
            atom, i = ch, i + 1
        else:
            out.append(ch)
            i += 1
            continue
        out.append(f"(?:{atom}{_S})")
    return "".join(out)


def _plans() -> Iterator[tuple[str, PhoneMetadata]]:
    """(calling code, metadata) of every region and non-geographic entity with a pattern."""
    for cc, regions in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.items():
        for code in regions:
            meta = (
                PhoneMetadata.metadata_for_nongeo_region(cc)
                if code == "001"
                else PhoneMetadata.metadata_for_region(code)
            )
            desc = meta.general_desc if meta is not None else None
            if desc is not None and desc.national_number_pattern:
                yield str(cc), meta


def _digits_trie(codes: dict[str, list[str]]) -> str:
    """Calling codes as a trie (`9(?:2...|3...)`): a backtracking engine tries only the
    branches whose digits match, not every code in turn."""
    branches = []
    for first in sorted({c[0] for c in codes}):
        rest = {c[1:]: v for c, v in codes.items() if c[0] == first}
        here = [f"(?:{'|'.join(rest.pop(''))})"] if "" in rest else []
        if rest:
            here.append(_digits_trie(rest))
        body = here[0] if len(here) == 1 else f"(?:{'|'.join(here)})"
        branches.append(f"{first}{_S}{body}")
    return f"(?:{'|'.join(branches)})"


@cache
def pattern(region: str | None = None) -> str:
    """The detector as one regular expression (Rust's regex and Python's `re` alike), for
    national numbers of `region` (none: international forms only) and every calling code."""
    by_code: dict[str, list[str]] = {}
    for cc, meta in _plans():
        by_code.setdefault(cc, []).append(
            _split_anywhere(meta.general_desc.national_number_pattern)
        )
    trunk_0 = rf"(?:\(0\){_S})?"
    international = rf"(?:\+{_S}|0{_S}0{_S})?" + _digits_trie(
        {cc: [trunk_0 + f"(?:{'|'.join(sorted(set(p)))})"] for cc, p in by_code.items()}
    )
    numbers = [international]
    meta = PhoneMetadata.metadata_for_region(region.upper()) if region else None
    if meta is not None and meta.general_desc is not None:
        trunk = meta.national_prefix or ""
        optional = f"(?:{''.join(f'{d}{_S}' for d in trunk)})?" if trunk else ""
        numbers.append(
            f"{optional}(?:{_split_anywhere(meta.general_desc.national_number_pattern)})"
        )
    number = f"(?:^|[^0-9])(?:{'|'.join(numbers)})(?:[^0-9]|$)"
    return f"{number}|{ADDRESS}"


@cache
def _engine_pattern(region: str | None) -> str:
    return python_regex(pattern(region))


def identifying(col: pl.Expr, region: str | None) -> pl.Expr:
    """Whether each (folded) text could identify someone; false for null. The pattern as the
    suites' evaluator runs it (`python_regex`), so ingest and the suites see the same hits."""
    return col.str.contains(_engine_pattern(region)).fill_null(False)

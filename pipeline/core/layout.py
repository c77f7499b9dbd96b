"""The store's layout: every prefix, object key and data-key name, each built in one place.

Why one module: a name spelled in two places will one day be spelled two ways, and for a data
key that means a key crypto-shredding misses, or two cases sharing one key. Every function here
builds its name from validated values (a digest, a month, a case reference, a source slug), so
two different inputs never give the same name and no name escapes its prefix.

Tiers (see docs/design.md for what each holds and how long):
```
landing/<source>/<file>                       files as sources drop them
seals/<sha256>.seal.json | .parse.json        signed seal and parse entries
bronze/<source>/<sha256>.enc                  the original, encrypted under file-<sha256>
silver/cdr/year=YYYY/month=MM/part-<sha256>.parquet
vault/year=YYYY/month=MM/part-<sha256>.parquet   encrypted under month-YYYY-MM
index/tokens/year=YYYY/month=MM/part-<sha256>.parquet   the silver part's token index
gold/cdr/year=YYYY/month=MM/part-<sha256>.parquet
quarantine/rows/part-<sha256>.parquet, quarantine/files/<sha256>.json
proofs/<sha256>.parquet                       the file's Merkle leaves
holds/<case>/hold.json, records/, vault/, copied/   encrypted under hold-<digest of case>
exports/<case>/package-<stamp>.cdrx
requests/<case>/request.enc, summary.json   a request by reference (subject, export, hold)
requests/<case>/status.json, response.json, response.txt, package-<stamp>.cdrs
requests/_suppressed/<case>.json, requests/_restricted/<case>.json   tokens, never identifiers
audit/<seq>.json                              the hash-chained audit log
audit-events/<sha256 of event>.json           where to look for an event's entry
leases/<sha256>.json                          the run ingesting a file: owner and expiry
retention/purged/<YYYY-MM>.json, retention/last_success.json
retention/attempts/<key name>.json            a purge begun and not yet recorded
```
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import unicodedata
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from pipeline.core.errors import PipelineError

if TYPE_CHECKING:
    from pipeline.core.store import ObjectStore

Month = tuple[int, int]

LANDING = "landing/"
SEALS = "seals/"
BRONZE = "bronze/"
SILVER = "silver/cdr/"
VAULT = "vault/"
GOLD = "gold/cdr/"
QUARANTINE = "quarantine/"
QUARANTINE_ROWS = "quarantine/rows/"
QUARANTINE_FILES = "quarantine/files/"
PROOFS = "proofs/"
HOLDS = "holds/"
EXPORTS = "exports/"
AUDIT = "audit/"
REQUESTS = "requests/"
#: Tokens whose identifiers were erased (never re-identified or re-created) and tokens whose
#: processing is restricted; one object per case. '_' cannot start a case, so no case collides.
SUPPRESSED = "requests/_suppressed/"
RESTRICTED = "requests/_restricted/"
AUDIT_EVENTS = "audit-events/"
LEASES = "leases/"
PURGED = "retention/purged/"
PURGE_ATTEMPTS = "retention/attempts/"
RETENTION_SUCCESS = "retention/last_success.json"
#: gold risk reports, on the Data Docs site (not the store): `risk/<YYYY-MM>.json` and `.html`
RISK_REPORTS = "risk/"
RECORD_IDS = "index/record_ids/"
#: One marker per source and hour in which it delivered: when each source was last heard from.
DELIVERIES = "index/deliveries/"
#: Each silver part's token index (token -> row group), beside its month; silver-tier data.
TOKEN_INDEX = "index/tokens/"

#: The tiers partitioned by month of the communication, and their roots.
MONTH_TIERS = {"silver": SILVER, "vault": VAULT, "gold": GOLD, "tokens": TOKEN_INDEX}
#: The month-partitioned prefixes that hold tokens or identifiers: purged with their month.
IDENTIFYING_MONTH_TIERS = ("silver", "vault", "tokens")
#: What a store summary lists, tier by tier.
TIERS = {
    "landing": LANDING,
    "bronze": BRONZE,
    "silver": SILVER,
    "vault": VAULT,
    "gold": GOLD,
    "quarantine": QUARANTINE,
    "seals": SEALS,
}
#: Prefixes whose objects are deleted with a file's original (once its months are purged).
FILE_OUTPUT_PREFIXES = (BRONZE, QUARANTINE)

MONTH_KEY_PREFIX = "month-"
#: the key that labels rare values in gold risk reports (HMAC): stable labels, no values
RISK_LABEL_KEY = "risk-labels"
FILE_KEY_PREFIX = "file-"
HOLD_KEY_PREFIX = "hold-"
REQUEST_KEY_PREFIX = "request-"

#: Case references: one pattern for the CLI, the DAG forms (JSON Schema) and the library, which
#: matches it against the whole value (a trailing newline is refused too).
CASE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_CASE = re.compile(CASE_PATTERN)
#: Source systems: a slug, the name of their landing folder and of their bronze folder.
SOURCE_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
_SOURCE = re.compile(SOURCE_PATTERN)
#: What makes a name possibly personal: 7 or more digits however they are separated (by anything
#: but letters: spaces, dots, brackets, every dash, colons), or an e-mail's `@`.
_IDENTIFIER_SHAPE = re.compile(r"\d(?:[\W_]*\d){6,}|@")
#: A file name is shown only without a run of this many digits: the shortest number the
#: identifier detector reads (a calling code and its shortest plan, `+43 1000`), so the suites'
#: check of `source_file` never refuses a file for its own name.
_LABEL_SHAPE = re.compile(r"\d(?:[\W_]*\d){5,}|@")
#: Characters a shown name never carries: control, format (invisible), private use, separators.
_HIDDEN = {"Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp"}
FILE_LABEL_PREFIX = "file-"
#: hex digests written in letters (`0-9` as `g-p`) where a digest must never read as a number
HEX_DIGITS, DIGIT_LETTERS = "0123456789", "ghijklmnop"
DIGITS_AS_LETTERS = str.maketrans(HEX_DIGITS, DIGIT_LETTERS)
_SHA = re.compile(r"^[0-9a-f]{64}$")
_PART = re.compile(r"year=(\d{4})/month=(\d{2})/")
_GOLD_YEAR = re.compile(r"^" + re.escape(GOLD) + r"year=(\d{4})/")
_MONTH_NAME = re.compile(r"^(\d{4})-(\d{2})$")


class LayoutError(PipelineError, ValueError):
    """A value that cannot name an object or a key: refused before anything is written."""


# --- validated values ------------------------------------------------------------------------
def sha(value: str) -> str:
    """A file digest: 64 lower-case hex characters."""
    if not isinstance(value, str) or not _SHA.fullmatch(value):
        raise LayoutError("not a SHA-256 digest (64 lower-case hex characters)")
    return value


def case(value: str) -> str:
    """A case reference: letters, digits, '.', '_' or '-', 64 at most, starting alphanumeric."""
    if not isinstance(value, str) or not _CASE.fullmatch(value):
        raise LayoutError(
            "case must be letters, digits, '.', '_' or '-' (64 at most, starting with a letter "
            "or digit)"
        )
    return value


def identifier_shaped(value: str, shape: re.Pattern[str] = _IDENTIFIER_SHAPE) -> bool:
    """Whether a name could hold a phone number or an e-mail address, read as a person reads
    it (`_as_read`): in any digits, separated by any marks, an em dash or a middle dot as much
    as a hyphen."""
    return bool(shape.search(_as_read(value)))


#: Letters that show as nothing (Hangul fillers): between digits they hide a separator.
_FILLERS = frozenset("\u115f\u1160\u3164\uffa0")


def _as_read(value: str) -> str:
    """NFKC (full-width and superscript digits, `＠`), then every character with a digit value
    (circled, dingbat and other scripts' digits) as that digit, and fillers and modifier
    letters (a lengthening mark, a tatweel) as a separator."""
    return "".join(
        str(d)
        if (d := unicodedata.digit(ch, None)) is not None
        else "-"
        if ch in _FILLERS or unicodedata.category(ch) == "Lm"
        else ch
        for ch in unicodedata.normalize("NFKC", value)
    )


def source(value: str) -> str:
    """A source system's name: a slug (`[a-z0-9][a-z0-9_-]{0,63}`) that holds no number.

    Checked before a file is sealed: the name is written in seals, audit entries, bronze keys
    and every record's `source` column, and kept as long as they are.
    """
    if not isinstance(value, str) or not _SOURCE.fullmatch(value):
        raise LayoutError(
            "source must be a slug: lower-case letters, digits, '_' or '-' (64 at most, "
            "starting with a letter or digit)"
        )
    if identifier_shaped(value):
        raise LayoutError("source must not hold 7 or more digits (they could be a phone number)")
    return value


def file_label(name: str) -> str:
    """How a file is named everywhere outside its encrypted original: its own name, or
    `file-<sha256 of the name, 16 hex written in letters>` when the name could hold an identifier (6 or more
    digits, an e-mail address) or holds hidden characters or a path separator."""
    hidden = any(unicodedata.category(ch) in _HIDDEN or ch in _FILLERS for ch in name)
    shaped = identifier_shaped(name, _LABEL_SHAPE)
    if name and not hidden and not shaped and not {"/", "\\"} & set(name):
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return FILE_LABEL_PREFIX + digest.translate(DIGITS_AS_LETTERS)


def derived_record_id(sha256: str, line: int) -> str:
    """The ID of a record its source gave none (some PBX formats): its file (the digest's first
    16 hex, written in letters) and line (digits grouped by `_`: `12_345_678`), so that no part
    of it reads as a phone number to the identifier detector."""
    return f"{sha256[:16].translate(DIGITS_AS_LETTERS)}-{line:_}"


def month(y: int, m: int) -> Month:
    if not (1 <= m <= 12 and 1 <= y <= 9999):
        raise LayoutError(f"not a month: {y}-{m}")
    return (y, m)


def month_name(m: Month) -> str:
    """`YYYY-MM`, the name a month has in markers, reports and key names."""
    y, mo = month(*m)
    return f"{y:04d}-{mo:02d}"


def is_month_name(name: str) -> bool:
    """Whether `name` is a `YYYY-MM` month that `parse_month` takes."""
    try:
        parse_month(name)
    except LayoutError:
        return False
    return True


def parse_month(name: str) -> Month:
    """The month a `YYYY-MM` name stands for (strict: `2026-1` is refused)."""
    found = _MONTH_NAME.fullmatch(name or "")
    if not found:
        raise LayoutError(f"not a month (YYYY-MM): {name!r}")
    return month(int(found.group(1)), int(found.group(2)))


def path_segment(value: str) -> str:
    """One `/`-free path segment that cannot climb out of its prefix."""
    if not value or "/" in value or "\\" in value or value in {".", ".."} or "\x00" in value:
        raise LayoutError("not a single path segment")
    return value


# --- landing and seals ---------------------------------------------------------------------
def landing_key(source_name: str, name: str) -> str:
    return f"{LANDING}{source(source_name)}/{path_segment(name)}"


def landing_ref(key: str) -> str:
    """How a landing object is named in task parameters, XCom and Airflow's UI: its key, with
    each folder or file name that could hold an identifier replaced by `file_label`'s digest."""
    parts = PurePosixPath(key).parts[1:] if key.startswith(LANDING) else PurePosixPath(key).parts
    return LANDING + "/".join(file_label(part) for part in parts)


def source_of_landing_key(key: str) -> str | None:
    """`landing/<source>/...` names the source system; a file directly in landing/ has none."""
    parts = PurePosixPath(key).parts
    return parts[1] if len(parts) > 2 else None


def _per_file(prefix: str, suffix: str) -> Callable[[str], str]:
    """A key builder for the one object of each file (named by its digest) under `prefix`."""

    def key(digest: str) -> str:
        return f"{prefix}{sha(digest)}{suffix}"

    return key


#: The objects each sealed file has one of, named by its digest: the seal and parse entries,
#: its quarantined rows and the note of a file quarantined whole, its Merkle leaves, and the
#: lease a run holds while it ingests the file.
seal_key = _per_file(SEALS, ".seal.json")
parse_key = _per_file(SEALS, ".parse.json")
quarantine_rows_key = _per_file(f"{QUARANTINE_ROWS}part-", ".parquet")
quarantine_file_key = _per_file(QUARANTINE_FILES, ".json")
proof_key = _per_file(PROOFS, ".parquet")
lease_key = _per_file(LEASES, ".json")


def sha_of_parse_key(key: str) -> str | None:
    """The digest a parse entry's key names, or None for any other key."""
    if not (key.startswith(SEALS) and key.endswith(".parse.json")):
        return None
    digest = key[len(SEALS) : -len(".parse.json")]
    return digest if _SHA.fullmatch(digest) else None


def ingested_files(store: ObjectStore) -> list[tuple[str, dict[str, Any]]]:
    """Every file's digest (from the entry's key) and signed parse entry (`body` and signature).

    The one scan of what was ingested: reports, verification and retention all start here.
    """
    entries = []
    for obj in store.list(SEALS):
        digest = sha_of_parse_key(obj.key)
        if digest is not None:
            entries.append((digest, json.loads(store.get_bytes(obj.key))))
    return entries


def unparsed_seals(store: ObjectStore) -> list[str]:
    """Digests of files sealed but never parsed (an ingest interrupted), from key names alone."""
    parsed, sealed = set(), set()
    for obj in store.list(SEALS):
        name = obj.key[len(SEALS) :]
        for suffix, found in ((".parse.json", parsed), (".seal.json", sealed)):
            digest = name.removesuffix(suffix)
            if name.endswith(suffix) and _SHA.match(digest):
                found.add(digest)
    return sorted(sealed - parsed)


def unparsed_file(store: ObjectStore, digest: str) -> dict[str, Any]:
    """What is known of a file sealed but never parsed, shaped like a parse entry's body:
    status `sealed`, no months, its bronze original as its one output."""
    seal = json.loads(store.get_bytes(seal_key(digest)))["body"]
    source = seal.get("source") or "unknown"
    return {
        "sha256": digest,
        "status": "sealed",
        "file": seal.get("file"),
        "source": source,
        "arrived_at": seal.get("arrived_at"),
        "months": [],
        "outputs": [bronze_key(source, digest)],
    }


def sealed_files(store: ObjectStore) -> list[dict[str, Any]]:
    """Every sealed file's parse entry body; a file sealed but never parsed appears with status
    `sealed` (`unparsed_file`), so that summaries list it and retention purges it on time."""
    files = [entry["body"] for _, entry in ingested_files(store)]
    return files + [unparsed_file(store, digest) for digest in unparsed_seals(store)]


# --- bronze, tiers, quarantine, proofs -------------------------------------------------------
def bronze_key(source_name: str, digest: str) -> str:
    return f"{BRONZE}{source(source_name)}/{sha(digest)}.enc"


def month_prefix(tier: str, m: Month) -> str:
    """`silver/cdr/year=YYYY/month=MM/` (or vault, gold): one month's partition."""
    y, mo = month(*m)
    return f"{MONTH_TIERS[tier]}year={y:04d}/month={mo:02d}/"


def gold_year_prefix(year: int) -> str:
    return f"{GOLD}year={month(year, 1)[0]:04d}/"


def partition(tier: str, m: Month, digest: str) -> str:
    """One file's part of one month of a tier."""
    return f"{month_prefix(tier, m)}part-{sha(digest)}.parquet"


def token_index_key(silver_key: str) -> str:
    """The token index of a silver part (`pipeline.records.token_index`)."""
    m, name = month_of(silver_key), PurePosixPath(silver_key).name
    if not silver_key.startswith(SILVER) or m is None or not name.startswith("part-"):
        raise LayoutError("not a silver part")
    return partition("tokens", m, name.removeprefix("part-").removesuffix(".parquet"))


def month_of(key: str) -> Month | None:
    """The month a partitioned object belongs to, from its key."""
    found = _PART.search(key)
    return (int(found.group(1)), int(found.group(2))) if found else None


def gold_year_of(key: str) -> int | None:
    found = _GOLD_YEAR.match(key)
    return int(found.group(1)) if found else None


def record_id_index_prefix(source: str, m: Month) -> str:
    """The record-ID index of one source's month (pipeline.records.redelivery)."""
    return f"{RECORD_IDS}{path_segment(source)}/{month_name(m)}/"


def record_id_index_key(source: str, m: Month, digest: str) -> str:
    return f"{record_id_index_prefix(source, m)}{sha(digest)}.parquet"


def sha_of_record_id_index(key: str) -> str | None:
    digest = PurePosixPath(key).name.removesuffix(".parquet")
    return digest if key.startswith(RECORD_IDS) and _SHA.match(digest) else None


def record_id_index_year(key: str) -> int | None:
    """The year of the month a record-ID index part covers."""
    parts = PurePosixPath(key).parts
    return int(parts[3][:4]) if key.startswith(RECORD_IDS) and len(parts) == 5 else None


def is_file_output(key: str) -> bool:
    """An output that goes with the file's original (bronze, quarantine), not with a month."""
    return key.startswith(FILE_OUTPUT_PREFIXES)


def is_bronze(key: str) -> bool:
    return key.startswith(BRONZE)


# --- holds, exports, audit, retention markers ----------------------------------------------
def hold_prefix(case_ref: str) -> str:
    return f"{HOLDS}{case(case_ref)}/"


def hold_record_key(case_ref: str) -> str:
    return f"{hold_prefix(case_ref)}hold.json"


def is_hold_record(key: str) -> bool:
    return key.startswith(HOLDS) and key.endswith("/hold.json")


def hold_data_prefix(case_ref: str, kind: str) -> str:
    """Where a hold keeps its copied `records` or `vault` entries."""
    if kind not in {"records", "vault"}:
        raise LayoutError(f"a hold holds records or vault entries, not {kind!r}")
    return f"{hold_prefix(case_ref)}{kind}/"


def hold_copy_key(case_ref: str, kind: str, tier_key: str) -> str:
    """The encrypted copy, in a hold, of the held rows of one tier object."""
    return f"{hold_data_prefix(case_ref, kind)}{tier_key.replace('/', '~')}.enc"


def hold_copies_of(case_ref: str, kind: str, tier_prefix: str) -> str:
    """The prefix of a hold's copies made from the objects under `tier_prefix` (a month's)."""
    return f"{hold_data_prefix(case_ref, kind)}{tier_prefix.replace('/', '~')}"


def hold_vault_copy(records_copy_key: str) -> str:
    """The vault entries a hold copied beside one of its record copies."""
    head, sep, tail = records_copy_key.partition("/records/")
    if not sep or not head.startswith(HOLDS):
        raise LayoutError("not a hold's record copy")
    return f"{head}/vault/{tail}"


def hold_copied_marker(case_ref: str, what: str) -> str:
    """Marks that a hold's copy of a month (`YYYY-MM`) or a gold year (`gold-YYYY`) is done."""
    return f"{hold_prefix(case_ref)}copied/{path_segment(what)}.json"


def export_key(case_ref: str, stamp: str) -> str:
    return f"{EXPORTS}{case(case_ref)}/package-{path_segment(stamp)}.cdrx"


# --- data subject requests -----------------------------------------------------------------
def request_prefix(case_ref: str) -> str:
    return f"{REQUESTS}{case(case_ref)}/"


#: What a request's folder holds beside its packages: the request itself (identifiers
#: included, encrypted under the request's own key), the description of an export or hold
#: request (`summary.json`: fields and counts, never an identifier), a subject request's status
#: (type, dates, counts, state; never an identifier) and its answer (`response.json`, and a
#: printable `response.txt`).
REQUEST_OBJECTS = frozenset(
    {"request.enc", "summary.json", "status.json", "response.json", "response.txt"}
)


def request_object_key(case_ref: str, name: str) -> str:
    """One of a request's `REQUEST_OBJECTS`."""
    if name not in REQUEST_OBJECTS:
        raise LayoutError(f"a request holds {sorted(REQUEST_OBJECTS)}, not {name!r}")
    return f"{request_prefix(case_ref)}{name}"


def request_package_key(case_ref: str, stamp: str) -> str:
    return f"{request_prefix(case_ref)}package-{path_segment(stamp)}.cdrs"


def request_staging_prefix(case_ref: str) -> str:
    return f"{request_prefix(case_ref)}staging/"


def request_staging_key(case_ref: str, tier_key: str) -> str:
    """Where erasure keeps a rewritten vault part until it has replaced the original."""
    return f"{request_staging_prefix(case_ref)}{tier_key.replace('/', '~')}"


def staged_tier_key(staging_key: str) -> str:
    """The tier object a staged rewrite replaces."""
    return staging_key.rsplit("/", 1)[-1].replace("~", "/")


def is_request_status(key: str) -> bool:
    return key.startswith(REQUESTS) and key.endswith("/status.json")


def is_request_summary(key: str) -> bool:
    return key.startswith(REQUESTS) and key.endswith("/summary.json")


def token_list_key(kind: str, case_ref: str) -> str:
    """A case's `suppressed` or `restricted` tokens."""
    roots = {"suppressed": SUPPRESSED, "restricted": RESTRICTED}
    if kind not in roots:
        raise LayoutError(f"a token list is suppressed or restricted, not {kind!r}")
    return f"{roots[kind]}{case(case_ref)}.json"


def listed_tokens(store: ObjectStore, kind: str) -> set[str]:
    """Every case's `suppressed` (identifiers erased) or `restricted` tokens, together."""
    root = {"suppressed": SUPPRESSED, "restricted": RESTRICTED}[kind]
    out: set[str] = set()
    for obj in store.list(root):
        if obj.key.endswith(".json"):
            out.update(json.loads(store.get_bytes(obj.key))["tokens"])
    return out


def holds_request_identifiers(key: str) -> bool:
    """A request's objects that hold the person's identifiers (encrypted): the request record,
    its packages and erasure's staging; not its status or response."""
    name = key.rsplit("/", 1)[-1]
    return name == "request.enc" or name.startswith("package-") or "/staging/" in key


def request_key_name(case_ref: str) -> str:
    """The data key of a request (subject, export or hold), named by a digest of the case (see
    `hold_key_name`)."""
    digest = hashlib.sha256(case(case_ref).encode()).hexdigest()[:40]
    return f"{REQUEST_KEY_PREFIX}{digest}"


def delivery_key(source_name: str, arrived_at: dt.datetime) -> str:
    """The marker of a source's deliveries in one UTC hour (`YYYY-MM-DDTHH`, sorting by time)."""
    hour = arrived_at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H")
    return f"{DELIVERIES}{source(source_name)}/{hour}.json"


def deliveries_prefix(source_name: str) -> str:
    return f"{DELIVERIES}{source(source_name)}/"


def delivery_hour(key: str) -> dt.datetime:
    """The UTC hour a delivery marker stands for."""
    stamp = PurePosixPath(key).stem
    return dt.datetime.strptime(stamp, "%Y-%m-%dT%H").replace(tzinfo=dt.UTC)


def audit_key(seq: int) -> str:
    return f"{AUDIT}{seq:012d}.json"


def audit_seq(key: str) -> int | None:
    """The sequence number an audit entry's key names, or None for any other key."""
    name = key[len(AUDIT) :] if key.startswith(AUDIT) else ""
    return int(name[:-5]) if name.endswith(".json") and name[:-5].isdigit() else None


def audit_event_key(event: str) -> str:
    """The claim of one audit event (any text: hashed, so it names no value)."""
    return f"{AUDIT_EVENTS}{hashlib.sha256(event.encode()).hexdigest()}.json"


def purge_attempt_key(key_name: str) -> str:
    """What a purge's first attempt found, kept until the purge is recorded."""
    return f"{PURGE_ATTEMPTS}{path_segment(key_name)}.json"


def open_purge_attempts(store: ObjectStore) -> set[str]:
    """Key names of purges begun and not yet recorded."""
    return {
        o.key[len(PURGE_ATTEMPTS) : -len(".json")]
        for o in store.list(PURGE_ATTEMPTS)
        if o.key.endswith(".json")
    }


def purge_marker(m: Month) -> str:
    return f"{PURGED}{month_name(m)}.json"


def purged_months(store: ObjectStore) -> set[str]:
    """Months whose identifiers were purged (`YYYY-MM`): their records go to gold only."""
    return {
        o.key[len(PURGED) : -len(".json")] for o in store.list(PURGED) if o.key.endswith(".json")
    }


# --- data-key names --------------------------------------------------------------------------
def month_key_name(m: Month) -> str:
    """The data key of a month's vault (and of nothing else)."""
    return f"{MONTH_KEY_PREFIX}{month_name(m)}"


def month_of_key_name(name: str) -> Month | None:
    if not name.startswith(MONTH_KEY_PREFIX):
        return None
    try:
        return parse_month(name[len(MONTH_KEY_PREFIX) :])
    except LayoutError:
        return None


def file_key_name(digest: str) -> str:
    """The data key of one file's original and its quarantined raw rows."""
    return f"{FILE_KEY_PREFIX}{sha(digest)}"


def hold_key_name(case_ref: str) -> str:
    """The data key of a hold: named by a digest of the case, so two cases never share one.

    (Case references may differ only in '.', '_' or letter case, which key names and
    case-insensitive file systems would fold together.)
    """
    digest = hashlib.sha256(case(case_ref).encode()).hexdigest()[:40]
    return f"{HOLD_KEY_PREFIX}{digest}"

"""Replay a file's quarantined rows after a fix: a missing default region, given later, or a
newer numbering plan that allows numbers the plan at ingest did not (`invalid_number`).

A file ingested without a region for its national-format numbers ("0300 1234567") keeps those
records in quarantine (`unparseable_number:<side>`), encrypted, with its sealed original in
bronze. A replay parses the original again with the region, so they reach the tiers. The steps:

1. pick the files: those whose signed parse entry counts quarantined rows of the reason, and
   that no replay with the same reason and region has run on yet (a second replay finds
   nothing: it is idempotent);
2. re-parse each from bronze under its ingest lease (`ingest.reparse_original`): every record of
   the original goes through the same transform again, so each input record ends in exactly one
   place (kept or quarantined) and the file's outputs, Merkle leaves, root and counts are made
   anew together; another file's record ID still makes a row a duplicate, the file's own do not;
3. the new parse entry completes the same seal and lists the replay; the audit log records the
   counts before and after (never a value). A file whose original was purged is refused.

A run killed mid-way leaves the old parse entry standing: the next replay redoes the file whole.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from pipeline.core import layout
from pipeline.core.errors import PipelineError, UsageError
from pipeline.core.resources import Resources
from pipeline.flows.ingest import IngestError, reparse_original
from pipeline.proof import audit
from pipeline.records import normalise
from pipeline.records.lookup import default_region as resolve_region

log = logging.getLogger("pipeline.flows.replay")

NO_OFFSET = "bad_timestamp:no_offset"
#: the reasons a replay can fix, and what fixes them
REASONS = {
    "unparseable_number": "a default region for national-format numbers",
    "invalid_number": "a newer numbering plan (phonenumbers' metadata) that allows the numbers",
    NO_OFFSET: "the source's time zone (CDR_SOURCE_TIMEZONES or CDR_SOURCE_TIMEZONE)",
}
COUNTS = ("records", "silver", "gold", "quarantined")


class ReplayError(PipelineError):
    """A replay that could not be done (the original purged, another run on the file)."""


@dataclass(frozen=True)
class ReplayRequest:
    """Which quarantined rows to replay (`reason`), with what fix (`default_region`), for one
    file (digest prefix, file name or object key) or every file that has such rows."""

    reason: str
    default_region: str | None
    as_of: dt.date
    file: str | None = None

    def validate(self) -> None:
        if self.reason not in REASONS:
            raise UsageError(f"--reason must be one of {', '.join(REASONS)}, not {self.reason!r}")
        if not self.default_region and self.reason == "unparseable_number":
            raise UsageError(
                f"replaying {self.reason} needs {REASONS[self.reason]} (--default-region)"
            )


@dataclass
class ReplayReport:
    """Per file: the counts before and after, and how many rows moved out of quarantine."""

    files: list[dict[str, Any]] = field(default_factory=list)

    @property
    def moved(self) -> int:
        return sum(int(f["moved"]) for f in self.files)


def run_replay(res: Resources, request: ReplayRequest) -> ReplayReport:
    """Replay the request's quarantined rows (see the module docstring)."""
    request.validate()
    region = resolve_region(request.default_region, res.settings.default_region)
    plan = normalise.numbering_plan()
    report = ReplayReport()
    for sha, source in _candidates(res, request):
        zone = res.zone_for(source) if request.reason == NO_OFFSET else None
        note = {"reason": request.reason, "default_region": region, "numbering_plan": plan, "as_of": request.as_of.isoformat()}  # fmt: skip
        if request.reason == NO_OFFSET:
            if zone is None:
                log.warning("%s…: no time zone is set for source %s: nothing to replay with", sha[:12], source)  # fmt: skip
                continue
            note["source_timezone"] = zone
        try:
            before, after = reparse_original(
                res,
                sha,
                lambda b, zone=zone: _wanted(b, request.reason, region, plan, zone),
                default_region=region,
                as_of=request.as_of,
                note=note,
                zone=zone,
            )
        except IngestError as exc:
            raise ReplayError(str(exc)) from None
        if after is None:  # replayed already: its audit entry, if a crash lost it, now
            done = [
                r for r in before.get("replays", []) if _same(r, request.reason, region, plan, zone)
            ]
            if done:
                _audit(res, sha, before, done[-1])
            continue
        entry = _audit(res, sha, after.to_dict(), {**note, "before": _counts(before)})
        report.files.append(entry)
        log.info("%s replayed: %d rows moved out of quarantine", after.file, entry["moved"])
    return report


def _candidates(res: Resources, request: ReplayRequest) -> list[tuple[str, str]]:
    """The ingested files the request names that hold quarantined rows of its reason: their
    digests and sources."""
    found = []
    for sha, entry in layout.ingested_files(res.store):
        body = entry["body"]
        if request.file and not (
            sha.startswith(request.file)
            or body.get("file") == request.file
            or request.file in body.get("outputs", [])
        ):
            continue
        if body.get("status") == "ingested" and _quarantined(body, request.reason):
            found.append((sha, str(body.get("source") or "")))
    if request.file and not found:
        raise UsageError(
            f"no ingested file matches {request.file!r} with rows quarantined {request.reason}"
        )
    return found


def _quarantined(body: dict[str, Any], reason: str) -> int:
    """How many of a file's rows are quarantined for `reason` (any side: `reason:<field>`)."""
    reasons = body.get("reasons") or {}
    return sum(int(n) for r, n in reasons.items() if r == reason or r.startswith(f"{reason}:"))


def _same(
    replay: dict[str, Any], reason: str, region: str | None, plan: str, zone: str | None
) -> bool:
    """The same fix: the same reason and region and, for an invalid number, the same plan,
    for a time without an offset, the same zone."""
    same_plan = reason != "invalid_number" or replay.get("numbering_plan") == plan
    same_zone = reason != NO_OFFSET or replay.get("source_timezone") == zone
    same = replay.get("reason") == reason and replay.get("default_region") == region
    return same and same_plan and same_zone


def _wanted(
    body: dict[str, Any], reason: str, region: str | None, plan: str, zone: str | None
) -> bool:
    """Still to replay: rows of the reason, and no replay with this fix yet (for an invalid
    number: the file was last read under another plan)."""
    done = any(_same(r, reason, region, plan, zone) for r in body.get("replays", []))
    done = done or (reason == "invalid_number" and body.get("numbering_plan") == plan)
    done = done or (reason == NO_OFFSET and body.get("source_timezone") == zone)
    return body.get("status") == "ingested" and bool(_quarantined(body, reason)) and not done


def _counts(body: dict[str, Any]) -> dict[str, int]:
    return {k: int(body.get(k) or 0) for k in COUNTS}


def _audit(
    res: Resources, sha: str, after: dict[str, Any], replay: dict[str, Any]
) -> dict[str, Any]:
    """The replay's audit entry, once per file, reason and region: counts, never values."""
    what: dict[str, Any] = {
        "sha256": sha,
        "file": after.get("file"),
        "reason": replay["reason"],
        "default_region": replay["default_region"],
        "before": replay["before"],
        "after": _counts(after),
        "months": after.get("months", []),
    }
    what["moved"] = what["before"]["quarantined"] - what["after"]["quarantined"]
    audit.append(
        res.store,
        res.keyring.signing_key(),
        "replay",
        what=what,
        why=f"quarantined {replay['reason']} rows re-read from the sealed original with "
        f"{REASONS[replay['reason']]}",
        event=f"replay:{sha}:{replay['reason']}:{replay['default_region']}"
        + (f":{replay['source_timezone']}" if replay.get("source_timezone") else ""),
    )
    return what

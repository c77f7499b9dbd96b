"""`python -m pipeline`: the same functions the DAGs call, driven from a shell.

Commands: ingest, generate, demo, docs, summary, retention, hold, audit, verify, replay, export,
verify-export, request, subject-request, verify-access, keys. Exit status 0 on success, 1 on a
failed run, 2 on arguments or settings that cannot be used (docs/operations.md, "Exit statuses"); messages
name files and reason codes, never record values.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import sys
import tempfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from pipeline.core.config import Settings
from pipeline.core.dates import add_months, parse_date
from pipeline.core.errors import RefusedError, failures

if TYPE_CHECKING:
    from pipeline.core.resources import Resources
    from pipeline.core.store import ObjectStore
    from pipeline.proof.verify_export import ExportVerdict

log = logging.getLogger("pipeline")
JSON_HELP = "print one JSON document (counts and states, no identifiers) instead of text"
REGION_HELP = "ISO country of national-format numbers (default: CDR_DEFAULT_REGION)"
FUTURE_HELP = "act for an --as-of after today (UTC), refused otherwise; recorded in the audit log"


def _date(text: str) -> dt.date:
    try:
        return parse_date(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _region(text: str) -> str:
    from pipeline.records.normalise import region

    try:
        return region(text).code
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _source(text: str) -> str:
    from pipeline.core.layout import LayoutError, source

    try:
        return source(text)
    except LayoutError as exc:  # the message says what a source is, never echoes the value
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(text: str) -> int:
    """A whole number of at least 1 (rows, records, months)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _share(text: str) -> float:
    """A share between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {value}")
    return value


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def _as_of_allowed(args: argparse.Namespace, settings: Settings, command: str) -> bool:
    """Whether the command may act for `--as-of`: never a day after today unless
    `--allow-future-as-of` says so, and that use is recorded in the audit log."""
    from pipeline.core.dates import FutureAsOf, refuse_future, today_utc
    from pipeline.proof import audit

    try:
        refuse_future(args.as_of)
    except FutureAsOf as exc:
        if not args.allow_future_as_of:
            print(f"error: {exc}", file=sys.stderr)
            return False
        res = _resources(settings)
        what = {"command": command, "as_of": args.as_of.isoformat(), "today": today_utc().isoformat()}  # fmt: skip
        audit.append(res.store, res.keyring.signing_key(), "future_as_of", what=what,
                     why="--allow-future-as-of")  # fmt: skip
        print(f"warning: acting for {args.as_of}, after today (recorded in the audit log)", file=sys.stderr)  # fmt: skip
    return True


def _resources(settings: Settings, policy: str | None = None) -> Resources:
    """The run's resources, the one way every command opens the store and the keyring."""
    from pipeline.core.policy import load_policy
    from pipeline.core.resources import Resources

    return Resources.from_settings(settings, load_policy(policy) if policy else None)


def _store(settings: Settings) -> ObjectStore:
    """Only the data store, for commands that need no keys."""
    from pipeline.core.resources import open_data_store

    return open_data_store(settings)


def _expand(paths: list[str], keyring: str) -> list[Path]:
    """The files to ingest: each file given, and the files of each folder given, less hidden
    files and folders and the keyring (a key file is never read as data)."""
    from pipeline.core.errors import UsageError

    keys = Path(keyring).resolve()
    out: list[Path] = []
    for p in map(Path, paths):
        if _inside(p.resolve(), keys):
            raise UsageError(f"{_shown(p)} is in the keyring folder: keys are never ingested")
        if p.is_dir():
            out.extend(
                f
                for f in sorted(p.rglob("*"))
                if f.is_file()
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
                and not _inside(f.resolve(), keys)
            )
        elif p.is_file():
            out.append(p)
        else:
            raise UsageError(f"no such file or folder: {_shown(p)}")
    return out


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.core.errors import PipelineError, UsageError, one_line
    from pipeline.core.layout import file_label
    from pipeline.core.store import open_store, split_s3, store_errors
    from pipeline.flows.ingest import (
        IngestRequest,
        ingest_file,
        list_landing,
        run_ingest,
        sweep_leftovers,
    )
    from pipeline.flows.ingest_batches import freeze_startup
    from pipeline.report import run_summary

    if not _as_of_allowed(args, settings, "ingest"):
        return 2
    if not args.paths and not args.landing:
        raise UsageError("ingest needs a file, a folder, an s3:// URI or --landing")
    targets: list[tuple[str, object]] = []
    for item in args.paths:  # checked before the store is opened: a wrong path changes nothing
        if item.startswith("s3://"):
            targets.append(("uri", item))
        else:
            targets += [("path", p) for p in _expand([item], settings.key_folder)]
    if args.report_json and Path(args.report_json).is_dir():
        raise UsageError(f"--report-json names a folder, not a file: {_shown(args.report_json)}")
    res = _resources(settings)
    sweep_leftovers(res)
    freeze_startup()
    reports = []
    failed = 0
    if args.landing:
        targets = [("landing", k) for k in list_landing(res.store)] + targets
    if not targets:
        print("nothing to ingest", file=sys.stderr)
        return 0
    request = IngestRequest(args.as_of, args.format, args.default_region, args.source)
    for kind, target in targets:
        name = file_label(str(target).rsplit("/", 1)[-1])
        try:
            if kind == "uri":
                bucket, key = split_s3(str(target))
                src = open_store(
                    f"s3://{bucket}", settings.s3_endpoint_url, credentials=settings.aws()
                )
                with tempfile.TemporaryDirectory() as tmp:
                    local = Path(tmp) / name
                    src.download(key, local)
                    info = src.info(key)
                    report = ingest_file(
                        res,
                        local,
                        source=request.source,
                        arrived_at=info.modified if info else None,
                        fmt=request.fmt,
                        default_region=request.default_region,
                        as_of=request.as_of,
                    )
            else:  # a landing key, or a local path
                report = run_ingest(res, request, str(target) if kind == "landing" else Path(str(target)))  # fmt: skip
            reports.append(report.to_dict())
        except (PipelineError, ValueError, *store_errors()) as exc:
            # One file's failure is that file's: say so in one line and go on with the others.
            failed += 1
            log.error("FAILED %s: %s", name, one_line(exc))
    if reports:
        print(run_summary(reports))
    if args.data_docs:
        _render_docs(settings)
    if args.report_json:
        Path(args.report_json).write_text(json.dumps(reports, indent=1))
    if failed:
        print(f"\n{failed} file(s) FAILED; see the messages above", file=sys.stderr)
        return 1
    return 0


def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.records.synth import generate

    info = generate(
        args.format,
        Path(args.out),
        args.rows,
        seed=args.seed,
        bad_share=args.bad_share,
        start=args.start,
        months=args.months,
    )
    print(f"wrote {info.rows:,} records ({info.bad_rows:,} deliberately bad) to {info.path}")
    return 0


def demo_landing(records: int, today: dt.date, settings: Settings) -> list[str]:
    """Drop generated files of every format into landing/, as source systems would."""
    from pipeline.core.policy import load_policy
    from pipeline.flows.ingest import copy_into_landing
    from pipeline.records.synth import generate

    store = _store(settings)
    y, m = add_months(today.year, today.month, -2)
    recent = dt.date(y, m, 1)
    late = load_policy(settings.retention_policy or None).identifier_months + 3
    late_y, late_m = add_months(today.year, today.month, -late)
    plan = [
        ("canonical_csv", "operator-a", "cdr-export.csv", records // 2, recent, 3),
        ("messaging_jsonl", "messaging", "message-logs.jsonl", records // 4, recent, 3),
        ("messaging_json", "messaging", "delivery-reports.json", max(records // 20, 50), recent, 3),
        ("asterisk", "pbx-karachi", "Master.csv", records // 10, recent, 3),
        ("freeswitch", "pbx-lahore", "cdr.csv", records // 10, recent, 3),
        # A late arrival: its month is already past the policy's purge date, so gold only.
        ("canonical_csv", "operator-a", "late-2025.csv", max(records // 20, 50), dt.date(late_y, late_m, 1), 1),
    ]  # fmt: skip
    # Records end before the run's day: none is judged `future_timestamp`, whatever the day.
    until = dt.datetime(today.year, today.month, today.day, tzinfo=dt.UTC)
    keys = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (fmt, source, name, rows, start, months) in enumerate(plan):
            path = Path(tmp) / name
            # Each file its own record IDs (`r…`, `s…`): none is taken for a redelivered record.
            generate(fmt, path, rows, seed=11 + i, start=start, months=months, until=until, id_prefix="rstuvwxyz"[i])  # fmt: skip
            keys.append(copy_into_landing(store, path, source))
        bad = Path(tmp) / "truncated-upload.bin"
        bad.write_bytes(b"\x00\x01 partial upload, not a CDR format\n")
        keys.append(copy_into_landing(store, bad, "operator-b"))
    return keys


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.records import synth
    from pipeline.report import store_summary

    args.allow_future_as_of = False
    if not _as_of_allowed(args, settings, "demo"):
        return 2
    keys = demo_landing(args.records, args.as_of, settings)
    print(f"dropped {len(keys)} files into landing/ of {settings.store}")
    if args.landing_only:
        return 0
    if settings.source_timezone is None:  # the generator writes its times without offset in UTC
        settings = dataclasses.replace(settings, source_timezone="UTC")
    if settings.default_region is None:  # and its national-format numbers are Pakistan's
        settings = dataclasses.replace(settings, default_region=synth.REGION)
    args.landing, args.paths, args.format, args.source = True, [], None, None
    args.data_docs = True
    code = cmd_ingest(args, settings)
    print()
    print(store_summary(_store(settings), _docs(settings)))
    return code


def cmd_docs(args: argparse.Namespace, settings: Settings) -> int:
    _render_docs(settings)
    return 0


def _render_docs(settings: Settings) -> None:
    """Render the results stored since the last rendering into Data Docs (GX, once a run)."""
    from pipeline.records.quality import Quality

    quality = Quality(settings.data_docs, settings.s3_endpoint_url, settings.aws())
    rendered = quality.render_docs()
    print(f"Data Docs: {rendered} new result(s) rendered; {quality.docs_index()}")


def _docs(settings: Settings) -> str | None:
    """The Data Docs index, if validations have built it."""
    from pipeline.records.quality import Quality

    quality = Quality(settings.data_docs, settings.s3_endpoint_url, settings.aws())
    return quality.docs_index() if quality.has_docs() else None


def _plural(n: int, noun: str) -> str:
    """`1 identifier`, `2 identifiers`."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _print_json(data: object) -> None:
    """Machine-readable output (`--json`): one JSON document on stdout, nothing else there."""
    print(json.dumps(data, indent=1, sort_keys=True, default=str))


def cmd_summary(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.report import store_data, store_summary

    if args.json:
        _print_json(store_data(_store(settings), _docs(settings)))
    else:
        print(store_summary(_store(settings), _docs(settings)))
    return 0


def cmd_retention(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.core.policy import PolicyError
    from pipeline.flows.retention import RetentionError, RetentionRequest, run_retention
    from pipeline.report import retention_summary

    try:
        res = _resources(settings, args.policy)
    except PolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not _as_of_allowed(args, settings, "retention"):
        return 2
    dry_run = args.dry_run or (not args.confirm and _more_than_a_month(res, args.as_of))
    try:
        report = run_retention(res, RetentionRequest(args.as_of, dry_run))
    except RetentionError as exc:
        print(f"RETENTION FAILED: {exc}", file=sys.stderr)
        return 1
    if args.json:
        _print_json(report.to_dict())
    else:
        print(retention_summary(report.to_dict()))
    if dry_run and not args.dry_run:
        print(
            f"\nNOTHING WAS DESTROYED: more than one month (or year of gold) would go at once "
            f"as of {args.as_of}; above is what would. Check the date, then rerun with --confirm.",
            file=sys.stderr,
        )
        return 1
    return 0


def _more_than_a_month(res: Resources, as_of: dt.date) -> bool:
    """Whether a retention run would destroy more than one month's identifiers, or more than
    one year of gold, at once: what a mistyped date does, never a daily run's normal course."""
    from pipeline.flows.retention import RetentionRequest, run_retention

    plan = run_retention(res, RetentionRequest(as_of, dry_run=True))
    return len(plan.months) > 1 or len(plan.gold_years) > 1


def cmd_hold(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.flows import holds
    from pipeline.records.lookup import IdentifierError
    from pipeline.report import holds_data, holds_table

    res = _resources(settings)
    if args.action == "list":
        listed = holds.list_holds(res.store)
        if args.json:
            _print_json(holds_data(listed, args.as_of))
        else:
            print(holds_table(listed, args.as_of))
        return 0
    if not args.case:
        print(f"error: hold {args.action} needs --case", file=sys.stderr)
        return 2
    fields = {
        "action": args.action,
        "case": args.case,
        "reason": args.reason,
        "identifiers": args.identifier or [],
        "default_region": args.default_region,
        "customer": args.customer,
        "date_from": args.date_from,
        "date_to": args.date_to,
        "until": args.until,
    }
    try:
        hold = holds.run_hold(res, holds.HoldRequest.from_mapping(fields))
    except (holds.HoldError, IdentifierError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.action == "place":
        print(f"hold placed: case {hold['case']} ({_plural(hold['tokens'], 'identifier')})")
    else:
        print(
            f"hold released: case {hold['case']}; its copies are purged at the next retention run"
        )
    return 0


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.proof.audit import verify_log

    res = _resources(settings)
    verdict = verify_log(res.store, res.keyring.public_key())
    if verdict.ok:
        print(f"audit log OK: {verdict.entries} entries, signatures and chain verified")
        return 0
    print(f"AUDIT LOG BROKEN at entry {verdict.entries} ({verdict.first_bad}): {verdict.problem}")
    return 1


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.flows.verify import (
        NothingToVerify,
        VerifyRequest,
        run_verify,
        verify_data,
        verify_summary,
    )

    request = VerifyRequest(month=args.month, file=args.file, deep=args.deep)
    try:
        report = run_verify(_resources(settings), request)
    except NothingToVerify as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_status
    if args.json:
        _print_json(verify_data(report))
    else:
        print(verify_summary(report))
    return 0 if report.ok else 1


def cmd_risk_report(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.core.layout import LayoutError, parse_month
    from pipeline.flows.risk import risk_summary, run_risk_report

    try:
        month = parse_month(args.month)
    except LayoutError as exc:
        print(f"error: --month: {exc}", file=sys.stderr)
        return 2
    res = _resources(settings)
    report = run_risk_report(res, month)
    res.quality.render_docs()  # the thresholds' result beside the suites' in Data Docs
    if args.json:
        _print_json(report)
    else:
        print(risk_summary(report))
    return 0 if report["verdict"]["passed"] else 1


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.flows.replay import ReplayRequest, run_replay

    request = ReplayRequest(args.reason, args.default_region, args.as_of, args.file)
    request.validate()  # before the store is opened
    if not _as_of_allowed(args, settings, "replay"):
        return 2
    report = run_replay(_resources(settings), request)
    if args.json:
        _print_json({"files": report.files, "moved": report.moved})
        return 0
    for f in report.files:
        b, a = f["before"], f["after"]
        print(f"{f['file']} (sha256 {f['sha256'][:12]}…): {f['moved']:,} rows moved out of "
              f"quarantine; kept {b['gold']:,} → {a['gold']:,}, quarantined "
              f"{b['quarantined']:,} → {a['quarantined']:,} of {a['records']:,} records")  # fmt: skip
    if not report.files:
        print(f"Nothing new was replayed: no file holds {args.reason} rows not replayed "
              f"with this fix already.")  # fmt: skip
    return 0


def cmd_keys(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.proof import audit

    res = _resources(settings)
    if args.what == "public":
        print(res.keyring.public_key_pem(), end="")
        return 0
    count = res.keyring.rotate(args.to)
    audit.append(
        res.store,
        res.keyring.signing_key(),
        "kek_rotated",
        what={"rewrapped": count, "keyring": settings.keyring, "to": args.to},
        why="key-encryption key rotated; data keys re-wrapped, data untouched",
    )
    print(f"key-encryption key rotated: {count} wrapped keys re-wrapped, no data touched")
    return 0


def _export_request(args: argparse.Namespace) -> tuple[dict[str, object], list[str]]:
    """The request's fields from --request (JSON) and the flags (flags win where given), and
    what could not be read (a request or key file): problems the refusal records."""
    fields: dict[str, object] = {}
    problems: list[str] = []
    base = Path.cwd()
    if args.request:
        path = Path(args.request)
        base = path.parent
        try:
            loaded = json.loads(path.read_text())
            if not isinstance(loaded, dict):
                raise ValueError("not a JSON object")
            fields = loaded
        except (OSError, ValueError) as exc:
            problems.append(f"the request file cannot be read ({type(exc).__name__})")
    flags = {
        "case": args.case,
        "authority": args.authority,
        "legal_basis": args.legal_basis,
        "requested_by": args.requested_by,
        "approved_by": getattr(args, "approved_by", None),
        "identifiers": args.identifier,
        "date_from": args.date_from,
        "date_to": args.date_to,
        "channels": args.channel,
        "recipient_key": args.recipient_key,
        "default_region": args.default_region,
        **{k: getattr(args, k, None) for k in ("reason", "customer", "until")},
    }
    fields |= {k: v for k, v in flags.items() if v}
    key = str(fields.get("recipient_key") or "")
    if key and not key.lstrip().startswith("-----BEGIN"):
        key_path = Path(key) if Path(key).is_absolute() else base / key
        try:
            fields["recipient_key"] = key_path.read_text()
        except (OSError, ValueError) as exc:
            fields["recipient_key"] = ""
            problems.append(f"recipient_key: the key file cannot be read ({type(exc).__name__})")
    return fields, problems


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.flows.export import ExportError, refuse, run_export
    from pipeline.flows.export_request import ExportRequest, RequestError

    fields, unreadable = _export_request(args)
    res = _resources(settings)
    try:
        request = ExportRequest.from_mapping(fields)
        if unreadable:
            refuse(res, request, unreadable)
        result = run_export(res, request)
    except RequestError as exc:
        return _refused(exc)
    except ExportError as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    print(f"package: {res.store.uri(result.package)}")
    if args.out:
        copy = Path(args.out) / PurePosixPath(result.package).name
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(res.store.get_bytes(result.package))
        print(f"copy:    {copy}")
    print(f"sha256:  {result.package_sha256}")
    print(f"records: {result.records:,}")
    for month, info in result.months.items():
        if info["identifiers"] == "live":
            print(f"  {month}  {info['records']:>8,} records")
        else:
            print(
                f"  {month}  {info['records']:>8,} records from legal holds; {info['note']}; "
                f"{info['unattributable_gold_records']:,} gold records cannot be attributed"
            )
    return 0


def cmd_recipient_key(args: argparse.Namespace, settings: Settings) -> int:
    """Make an authority's X25519 key pair: the private half stays with the authority (0600,
    under a passphrase unless --no-passphrase), the public half goes to the operator."""
    import getpass
    import os

    from pipeline.core.errors import UsageError
    from pipeline.proof.package import new_recipient_key

    folder = Path(args.out)
    private_path, public_path = folder / "recipient.key", folder / "recipient.pub"
    for path in (private_path, public_path):
        if path.exists():
            raise UsageError(f"{_shown(path)} exists already: not overwritten")
    if args.no_passphrase:
        passphrase = None
    elif args.passphrase_file:
        passphrase = Path(args.passphrase_file).read_bytes().rstrip(b"\r\n")
    else:
        passphrase = getpass.getpass("passphrase for the private key: ").encode()
        if passphrase != getpass.getpass("again: ").encode():
            raise UsageError("the passphrases differ")
    if passphrase is not None and len(passphrase) < 8:
        raise UsageError("the passphrase is shorter than 8 characters")
    secret, public = new_recipient_key(passphrase)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secret)
    public_path.write_bytes(public)
    print(f"private key: {private_path} (keep it; never send it)")
    print(f"public key:  {public_path} (give it to the operator: request create --recipient-key)")
    return 0


def cmd_verify_export(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.proof.verify_export import case_of, verify_package

    try:
        blob = _package_file(Path(args.package)).read_bytes()
        private = Path(args.private_key).read_bytes()
        public = Path(args.seal_public_key).read_bytes()
    except OSError as exc:
        print(f"error: {exc.strerror or exc}: {_shown(exc.filename)}", file=sys.stderr)
        return 2
    verdict = verify_package(blob, private, public, _key_passphrase(private, args.passphrase_file))
    if not _report_verdict(verdict):
        return 1
    print(f"VERDICT: VERIFIED (case {case_of(verdict.manifest)})")
    _extract(verdict, args.extract)
    return 0


def _package_file(given: Path) -> Path:
    """The package a path names: the file, or the one `.cdrx` in the folder `export --out` wrote."""
    from pipeline.core.errors import UsageError

    if not given.is_dir():
        return given
    found = sorted(given.glob("*.cdrx"))
    if len(found) != 1:
        raise UsageError(
            f"{_shown(given)} holds {len(found)} .cdrx packages: name the package file itself"
        )
    return found[0]


def _key_passphrase(private: bytes, passphrase_file: str | None) -> bytes | None:
    """The private key's passphrase: from --passphrase-file, else asked on the terminal (never
    echoed); none for a key without one."""
    import getpass

    from pipeline.core.errors import UsageError
    from pipeline.proof.package import key_is_protected

    if passphrase_file:
        return Path(passphrase_file).read_bytes().rstrip(b"\r\n")
    if not key_is_protected(private):
        return None
    if not sys.stdin.isatty():
        raise UsageError("the private key is protected by a passphrase: give --passphrase-file")
    return getpass.getpass("passphrase of the private key: ").encode()


def _report_verdict(verdict: ExportVerdict) -> bool:
    """Print each check and problem of a package verdict, the same for every package kind;
    True when it verified (the caller prints what was verified)."""
    for check in verdict.checks:
        print(f"ok    {check}")
    for problem in verdict.problems:
        print(f"FAIL  {problem}")
    if not verdict.ok:
        print("VERDICT: NOT VERIFIED")
    return verdict.ok


def _extract(verdict: ExportVerdict, target: str | None) -> None:
    """Write a verified package's files out when --extract asks for it."""
    from pipeline.proof.verify_export import extract

    if target:
        for path in extract(verdict, Path(target)):
            print(f"wrote {path}")


def _refused(exc: RefusedError) -> int:
    """Print every reason a request was refused (each already audited); the usage status."""
    print("request refused (recorded in the audit log):", file=sys.stderr)
    for problem in exc.problems:
        print(f"  - {problem}", file=sys.stderr)
    return exc.exit_status


def cmd_request(args: argparse.Namespace, settings: Settings) -> int:
    """Record an export or hold request (sealed), or show one or all, never an identifier."""
    from pipeline.flows import case_request

    res = _resources(settings)
    try:
        if args.action == "list":
            for s in case_request.list_requests(res):
                print(f"{s['case']:24} {s['kind']:7} by {s['requested_by']:16} "
                      f"{_plural(s['identifiers'], 'identifier')}  {s['date_from']}..{s['date_to']}  "
                      f"recorded {s['created_at'][:19]}")  # fmt: skip
            return 0
        if args.action == "show":
            if not args.case:
                print("error: request show needs --case", file=sys.stderr)
                return 2
            print(json.dumps(case_request.load_summary(res, args.case), indent=1))
            return 0
        fields, unreadable = _export_request(args)
        if unreadable:
            raise case_request.CaseRequestError(unreadable)
        summary = case_request.create_request(res, args.type, fields)
    except case_request.CaseRequestError as exc:
        return _refused(exc)
    dag = "cdr_le_export" if summary["kind"] == "export" else "cdr_legal_hold"
    print(f"request {summary['case']} ({summary['kind']}, {_plural(summary['identifiers'], 'identifier')}) "
          f"recorded, encrypted; trigger {dag} with case {summary['case']}: a second person "
          f"approves it there")  # fmt: skip
    return 0


def _subject_fields(args: argparse.Namespace) -> dict[str, object]:
    """A subject request's fields from --request (JSON) and the flags (flags win)."""
    fields: dict[str, object] = json.loads(Path(args.request).read_text()) if args.request else {}
    flags = {
        "case": args.case,
        "type": args.type,
        "identifiers": args.identifier,
        "identity_verified_by": args.identity_verified_by,
        "received": args.received,
        "requested_by": args.requested_by,
        "default_region": args.default_region,
        "country": args.country,
        "date_from": args.date_from,
        "date_to": args.date_to,
        "grounds": args.grounds,
    }
    fields |= {k: v for k, v in flags.items() if v}
    if args.recipient_key:
        fields["recipient_key"] = Path(args.recipient_key).read_text()
    if args.passphrase_file:
        fields["passphrase"] = Path(args.passphrase_file).read_text().strip()
    return fields


def cmd_subject_request(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.flows import subject

    res = _resources(settings)
    try:
        if args.action == "list":
            for s in subject.list_requests(res):
                print(f"{s['case']:24} {s['type']:12} received {s['received']}  due "
                      f"{s['deadline']}  {s['state']} {s.get('outcome') or ''}")  # fmt: skip
            return 0
        if args.action == "create":
            request = subject.SubjectRequest.from_mapping(_subject_fields(args))
            status = subject.create_subject_request(res, request)
            print(f"request {status['case']} ({status['type']}) recorded; answer by "
                  f"{status['deadline']} ({status['deadline_rule']})")  # fmt: skip
            if status.get("passphrase"):
                print(f"passphrase for the package (give it to the person out of band; it is "
                      f"not shown again): {status['passphrase']}")  # fmt: skip
            return 0
        if not args.case:
            print(f"error: subject-request {args.action} needs --case", file=sys.stderr)
            return 2
        if args.action == "run":
            answer = subject.run_subject_request(res, subject.SubjectRun(args.case, args.as_of))
            print(res.store.get_bytes(_response_key(args.case, "txt")).decode(), end="")
            if answer.type == "access" and args.out:
                copy = Path(args.out) / PurePosixPath(answer.done["package"]).name
                copy.parent.mkdir(parents=True, exist_ok=True)
                copy.write_bytes(res.store.get_bytes(answer.done["package"]))
                print(f"copy: {copy}")
            return 0
        status = subject.load_status(res, args.case)
        print(json.dumps(status, indent=1))
        if status["state"] == "answered":
            print(res.store.get_bytes(_response_key(args.case, "txt")).decode(), end="")
        return 0
    except subject.SubjectRequestError as exc:
        return _refused(exc)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except subject.SubjectError as exc:
        print(f"subject request failed: {exc}", file=sys.stderr)
        return 1


def _response_key(case: str, ext: str) -> str:
    from pipeline.core.layout import request_object_key

    return request_object_key(case, f"response.{ext}")


def cmd_verify_access(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.proof.access_package import verify_access

    try:
        blob = Path(args.package).read_bytes()
        public = Path(args.seal_public_key).read_bytes()
        passphrase = Path(args.passphrase_file).read_text().strip() if args.passphrase_file else ""
        private = Path(args.private_key).read_bytes() if args.private_key else b""
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    verdict = verify_access(blob, public, passphrase=passphrase, private_pem=private)
    if not _report_verdict(verdict):
        return 1
    print(f"VERDICT: VERIFIED ({verdict.manifest['counts']['records']} records)")
    _extract(verdict, args.extract)
    return 0


def _person_request_flags(
    cmd: argparse.ArgumentParser, scope: str, key_help: str, copy: bool = True
) -> None:
    """The flags every request about people shares (an export, a subject request): the case,
    who asked, the identifiers and their region, the period, the delivery key, a copy."""
    cmd.add_argument("--request", help="a request as JSON (the same fields as the flags)")
    cmd.add_argument("--case", help="case reference")
    cmd.add_argument("--requested-by", help="who asked (recorded in the audit log)")
    cmd.add_argument("--identifier", action="append", help="phone number or e-mail (repeatable)")
    cmd.add_argument("--default-region", type=_region, help=REGION_HELP)
    cmd.add_argument("--from", dest="date_from", help=f"{scope}period start, UTC date (YYYY-MM-DD)")
    cmd.add_argument("--to", dest="date_to", help=f"{scope}period end, inclusive (YYYY-MM-DD)")
    cmd.add_argument("--recipient-key", help=key_help)
    if copy:
        cmd.add_argument("--out", help="also copy the (encrypted) package into this folder")


def parser(prog: str = "python -m pipeline") -> argparse.ArgumentParser:
    from pipeline.records.sources import FORMATS
    from pipeline.records.synth import FORMATS as GEN_FORMATS

    p = argparse.ArgumentParser(prog=prog, description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="log each step")
    sub = p.add_subparsers(dest="command", required=True)

    ing = sub.add_parser("ingest", help="seal, tokenise and tier CDR files")
    ing.add_argument("paths", nargs="*", metavar="PATH_OR_URI", help="files, folders or s3:// URIs")
    ing.add_argument("--landing", action="store_true", help="ingest every file in landing/")
    ing.add_argument("--format", choices=FORMATS, help="skip detection: read as this format")
    ing.add_argument(
        "--source",
        type=_source,
        help="source system name, a slug (default: CDR_DEFAULT_SOURCE, else 'default')",
    )
    ing.add_argument("--default-region", type=_region, help=REGION_HELP)
    ing.add_argument("--as-of", type=_date, default=_today(), help="date deciding expired months")
    ing.add_argument("--allow-future-as-of", action="store_true", help=FUTURE_HELP)
    ing.add_argument("--report-json", help="also write the per-file reports (counts) as JSON here")
    ing.add_argument(
        "--data-docs",
        action="store_true",
        help="render the suites' results into Data Docs at the end (else: `docs`)",
    )
    ing.set_defaults(func=cmd_ingest)

    gen = sub.add_parser("generate", help="write synthetic CDRs")
    gen.add_argument("--format", choices=GEN_FORMATS, required=True)
    gen.add_argument("--rows", type=_count, required=True)
    gen.add_argument("--out", required=True)
    gen.add_argument("--seed", type=int, default=1)
    gen.add_argument("--bad-share", type=_share, default=0.01)
    gen.add_argument("--start", type=_date, default=dt.date(2025, 1, 1))
    gen.add_argument("--months", type=_count, default=3)
    gen.set_defaults(func=cmd_generate)

    demo = sub.add_parser("demo", help="generate CDRs into landing/ and ingest them")
    demo.add_argument("--records", type=_count, default=20_000)
    demo.add_argument("--as-of", type=_date, default=_today())
    demo.add_argument("--default-region", type=_region, help=REGION_HELP)
    demo.add_argument("--landing-only", action="store_true", help="only fill landing/")
    demo.set_defaults(func=cmd_demo, report_json=None)

    ret = sub.add_parser("retention", help="purge what the retention policy says is due")
    ret.add_argument("--as-of", type=_date, default=_today(), help="the day to apply the rules for")
    ret.add_argument(
        "--dry-run",
        action="store_true",
        help="say what would be purged, change nothing (the default whenever more than one "
        "month's identifiers, or more than one year of gold, would go at once: see --confirm)",
    )
    ret.add_argument(
        "--confirm",
        action="store_true",
        help="destroy even when more than one month, or a year of gold, goes at once",
    )
    ret.add_argument("--allow-future-as-of", action="store_true", help=FUTURE_HELP)
    ret.add_argument("--policy", help="a retention policy file (default: the shipped one)")
    ret.add_argument("--json", action="store_true", help=JSON_HELP)
    ret.set_defaults(func=cmd_retention)

    hold = sub.add_parser("hold", help="place, release or list legal holds")
    hold.add_argument("action", choices=["place", "release", "list"])
    hold.add_argument("--case", help="case reference")
    hold.add_argument("--reason", help="why (the order, the claim)")
    hold.add_argument("--identifier", action="append", help="phone number or e-mail (repeatable)")
    hold.add_argument("--customer", help="a business customer's id")
    hold.add_argument("--from", dest="date_from", type=_date, help="period start (UTC date)")
    hold.add_argument("--to", dest="date_to", type=_date, help="period end, inclusive")
    hold.add_argument("--until", type=_date, help="the hold ends on this date")
    hold.add_argument("--default-region", type=_region, help=REGION_HELP)
    hold.add_argument("--as-of", type=_date, default=_today())
    hold.add_argument("--json", action="store_true", help=JSON_HELP)
    hold.set_defaults(func=cmd_hold)

    aud = sub.add_parser("audit", help="verify the audit log")
    aud.add_argument("action", choices=["verify"])
    aud.set_defaults(func=cmd_audit)

    ver = sub.add_parser("verify", help="re-verify seals, originals, records and the audit log")
    ver.add_argument("--month", help="only files with records of this month (YYYY-MM)")
    ver.add_argument("--file", help="only this file (sha256 prefix, file name or object key)")
    ver.add_argument(
        "--deep",
        action="store_true",
        help="also re-read each original from bronze with an independent reader and compare",
    )
    ver.add_argument("--json", action="store_true", help=JSON_HELP)
    ver.set_defaults(func=cmd_verify)

    risk = sub.add_parser(
        "risk-report", help="a gold month's re-identification risk, against the policy's thresholds"
    )
    risk.add_argument("--month", required=True, help="the gold month (YYYY-MM)")
    risk.add_argument("--json", action="store_true", help=JSON_HELP)
    risk.set_defaults(func=cmd_risk_report)

    rep = sub.add_parser("replay", help="re-read quarantined rows from bronze after a fix")
    rep.add_argument(
        "--reason",
        required=True,
        choices=["unparseable_number", "invalid_number", "bad_timestamp:no_offset"],
        help="unparseable_number: with a --default-region given now; invalid_number: with the "
        "numbering plans this version ships (after an upgrade of phonenumbers); "
        "bad_timestamp:no_offset: in the source's zone set since (CDR_SOURCE_TIMEZONES)",
    )
    rep.add_argument("--default-region", type=_region, help=REGION_HELP)
    rep.add_argument("--file", help="only this file (sha256 prefix, file name or object key)")
    rep.add_argument("--as-of", type=_date, default=_today(), help="date deciding expired months")
    rep.add_argument("--allow-future-as-of", action="store_true", help=FUTURE_HELP)
    rep.add_argument("--json", action="store_true", help=JSON_HELP)
    rep.set_defaults(func=cmd_replay)

    exp = sub.add_parser("export", help="law-enforcement export: a signed, encrypted package")
    _person_request_flags(exp, "", "the authority's public key: a PEM file")
    exp.add_argument("--authority", help="the requesting authority")
    exp.add_argument("--legal-basis", help="statute or order the request rests on")
    exp.add_argument("--approved-by", help="who approved: a different person")
    exp.add_argument("--channel", action="append", help="only these channels (repeatable)")
    exp.set_defaults(func=cmd_export)

    vex = sub.add_parser("verify-export", help="decrypt and verify a disclosure package")
    vex.add_argument("package", help="the .cdrx file, or the folder `export --out` wrote")
    vex.add_argument("--private-key", required=True, help="the recipient's private key (PEM)")
    vex.add_argument(
        "--passphrase-file",
        help="the private key's passphrase, in this file (else asked for on the terminal)",
    )
    vex.add_argument("--seal-public-key", required=True, help="the operator's seal key (PEM)")
    vex.add_argument("--extract", help="write the decrypted records and manifest here")
    vex.set_defaults(func=cmd_verify_export)

    rkey = sub.add_parser(
        "recipient-key", help="an authority's X25519 key pair for disclosure packages"
    )
    rkey.add_argument("--out", required=True, help="folder for recipient.key and recipient.pub")
    rkey.add_argument("--passphrase-file", help="the private key's passphrase, in this file")
    rkey.add_argument(
        "--no-passphrase", action="store_true", help="leave the private key unprotected"
    )
    rkey.set_defaults(func=cmd_recipient_key)

    req = sub.add_parser("request", help="record an export or hold request for approval in Airflow")
    req.add_argument("action", choices=["create", "show", "list"])
    req.add_argument("--type", choices=["export", "hold"], default="export")
    _person_request_flags(req, "", "export: the authority's public key, a PEM file", copy=False)
    req.add_argument("--authority", help="export: the requesting authority")
    req.add_argument("--legal-basis", help="export: statute or order the request rests on")
    req.add_argument("--channel", action="append", help="export: only these channels")
    req.add_argument("--reason", help="hold: the order or claim")
    req.add_argument("--customer", help="hold: a business customer's id")
    req.add_argument("--until", type=_date, help="hold: it ends on this date (UTC)")
    req.set_defaults(func=cmd_request)

    dsr = sub.add_parser("subject-request", help="a data subject's access, erasure or restriction")
    dsr.add_argument("action", choices=["create", "run", "show", "list"])
    _person_request_flags(dsr, "access: ", "access: deliver to this public key (PEM file)")
    dsr.add_argument("--type", choices=["access", "erasure", "restriction"])
    dsr.add_argument("--identity-verified-by", help="reference of the identity check")
    dsr.add_argument("--received", help="date the request was received (YYYY-MM-DD)")
    dsr.add_argument("--country", help="whose law applies (default: the number's country)")
    dsr.add_argument("--passphrase-file", help="access: deliver to the passphrase in this file")
    dsr.add_argument("--grounds", help="the person's stated grounds")
    dsr.add_argument("--as-of", type=_date, default=_today(), help="run: the day to answer for")
    dsr.set_defaults(func=cmd_subject_request)

    vac = sub.add_parser("verify-access", help="open and verify a person's access package")
    vac.add_argument("package", help="the .cdrs file")
    vac.add_argument("--passphrase-file", help="the passphrase the person was given")
    vac.add_argument("--private-key", help="or the person's private key (PEM)")
    vac.add_argument("--seal-public-key", required=True, help="the operator's seal key (PEM)")
    vac.add_argument("--extract", help="write the decrypted files here")
    vac.set_defaults(func=cmd_verify_access)

    docs = sub.add_parser(
        "docs", help="render the suites' results stored since the last time into Data Docs"
    )
    docs.set_defaults(func=cmd_docs)

    summ = sub.add_parser("summary", help="what the store holds, per tier")
    summ.add_argument("--json", action="store_true", help=JSON_HELP)
    summ.set_defaults(func=cmd_summary)

    keys = sub.add_parser("keys", help="the seal public key; key-encryption key rotation")
    keys.add_argument(
        "what",
        choices=["public", "rotate"],
        help="public: the seal public key (PEM); rotate: a new key-encryption key re-wraps all",
    )
    keys.add_argument("--to", help="rotate to this KMS key (id, ARN or alias); local: a new KEK")
    keys.set_defaults(func=cmd_keys)
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run one command; any failure ends as one line on stderr and an exit status (docs/operations.md,
    "Exit statuses"), a traceback only with --verbose."""
    args = parser(prog or _prog()).parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = Settings.from_env()
    except ValueError as exc:  # the settings' own messages: which variable, what it must be
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        code: int = args.func(args, settings)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except failures() as exc:  # the boundary: every failure becomes one line and a status
        if args.verbose:
            log.exception("the command failed")
        message, code = failure(exc)
        print(f"error: {message}", file=sys.stderr)
    return code


def _prog() -> str:
    """The name the usage line shows: how the command was started."""
    name = Path(sys.argv[0]).name
    return name if name and not name.endswith(".py") else "python -m pipeline"


def failure(exc: BaseException) -> tuple[str, int]:
    """One line for a failure and its exit status: 2 when what was given cannot be used (a
    path, a setting, missing credentials), 1 when the run failed (the store cannot be reached,
    a step failed); the pipeline's own errors carry their status. Never a record's content."""
    from botocore.exceptions import NoCredentialsError, PartialCredentialsError, ProfileNotFound

    from pipeline.core.errors import FAILED, USAGE, PipelineError, one_line
    from pipeline.core.store import store_errors

    if isinstance(exc, PipelineError):
        return one_line(exc), exc.exit_status
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | ProfileNotFound):
        return f"no usable AWS credentials ({one_line(exc)}); see docs/configuration.md", USAGE
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.strerror or type(exc).__name__}: {_shown(exc.filename)}", USAGE
    if isinstance(exc, store_errors()):
        return f"the store cannot be reached or answered with an error: {one_line(exc)}", FAILED
    return f"unexpected {type(exc).__name__} (rerun with --verbose for the details)", FAILED


def _shown(path: object) -> str:
    """A path as an error shows it: its file name as `layout.file_label` gives it, so a name
    holding a number or an address is not repeated."""
    from pipeline.core.layout import file_label

    p = Path(str(path))
    return str(p.with_name(file_label(p.name))) if p.name else str(p)

"""The command line as a shell user meets it: one line and an exit status for every failure
(2: what was given cannot be used; 1: the run failed), never a traceback; `--json` output a
program can parse; folders ingested without the keyring or hidden files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port

NUMBER = "+923001234567"


def cli(
    env: dict[str, str], *args: str, argv0: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m pipeline ...` in a child process, as typed in a shell."""
    if argv0 is None:
        command = [sys.executable, "-m", "pipeline", *args]
    else:  # the console script: argv[0] is its path
        boot = f"import sys; sys.argv[0] = {argv0!r}; from pipeline.cli import main; raise SystemExit(main())"
        command = [sys.executable, "-c", boot, *args]
    full = {**os.environ, **env}
    return subprocess.run(command, cwd=ROOT, env=full, capture_output=True, text=True, timeout=300)


def one_line_failure(done: subprocess.CompletedProcess[str], status: int) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == status, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "CDR_STORE": str(tmp_path / "store"),
        "CDR_KEYRING": str(tmp_path / "keys"),
        "CDR_DATA_DOCS": str(tmp_path / "docs"),
        "CDR_DEFAULT_REGION": "",
    }


def test_a_missing_file_is_one_line_and_usage_status(env: dict[str, str], tmp_path: Path) -> None:
    line = one_line_failure(cli(env, "ingest", str(tmp_path / "nope.csv")), 2)
    assert "no such file or folder" in line
    assert not (tmp_path / "store").exists()  # refused before the store was touched


@pytest.mark.parametrize(
    "args",
    [
        ["generate", "--format", "canonical_csv", "--rows", "5", "--out", "{dir}"],
        ["verify-export", "{dir}/x.cdrx", "--private-key", "{dir}", "--seal-public-key", "{dir}"],
        ["retention", "--dry-run", "--policy", "{dir}"],
        ["ingest", "--report-json", "{dir}", "{dir}"],
    ],
)
def test_a_folder_given_where_a_file_is_needed_is_a_usage_error(
    env: dict[str, str], tmp_path: Path, args: list[str]
) -> None:
    folder = tmp_path / "a-folder"
    folder.mkdir()
    one_line_failure(cli(env, *[a.format(dir=folder) for a in args]), 2)


def test_an_unreachable_endpoint_is_one_line_and_a_failed_run(env: dict[str, str]) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    s3 = env | {"CDR_STORE": "s3://cdr-data/cdr", "CDR_S3_ENDPOINT_URL": closed}
    line = one_line_failure(cli(s3, "summary"), 1)
    assert "cannot be reached" in line and "EndpointConnectionError" in line


def test_missing_credentials_are_one_line_and_a_usage_error(
    env: dict[str, str], tmp_path: Path
) -> None:
    bare = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    bare |= env | {
        "CDR_STORE": "s3://cdr-data/cdr",
        "CDR_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "summary"],
        cwd=ROOT,
        env=bare,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "no usable AWS credentials" in one_line_failure(done, 2)


def test_negative_rows_are_refused(env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "x.csv"
    done = cli(env, "generate", "--format", "canonical_csv", "--rows", "-5", "--out", str(out))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--rows: must be at least 1" in done.stderr
    assert not out.exists()


def test_the_console_script_names_itself_in_its_usage_line(env: dict[str, str]) -> None:
    done = cli(env, "--help", argv0="/usr/local/bin/cdr-pipeline")
    assert done.stdout.startswith("usage: cdr-pipeline ")
    assert cli(env, "--help").stdout.startswith("usage: python -m pipeline ")


def test_a_folder_is_ingested_without_its_keyring_or_hidden_files(
    env: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "incoming"
    keys = folder / "keys"
    env = env | {"CDR_KEYRING": str(keys)}
    gen = ["generate", "--format", "canonical_csv", "--rows", "200"]
    assert cli(env, *gen, "--out", str(folder / "a.csv")).returncode == 0
    assert cli(env, *gen, "--seed", "2", "--out", str(folder / ".hidden" / "b.csv")).returncode == 0
    assert cli(env, *gen, "--seed", "3", "--out", str(folder / ".c.csv")).returncode == 0
    assert cli(env, "keys", "public").returncode == 0  # the keyring now holds its files
    assert any(p.is_file() for p in keys.rglob("*"))

    done = cli(env, "ingest", str(folder))
    assert done.returncode == 0, done.stderr
    summary = json.loads(cli(env, "summary", "--json").stdout)
    assert [f["file"] for f in summary["files"]] == ["a.csv"]
    assert summary["totals"]["records"] == 200

    again = cli(env, "ingest", str(folder))
    assert again.returncode == 0
    assert again.stdout.startswith(
        "Nothing new was ingested: all 1 files had been ingested before."
    )
    line = one_line_failure(cli(env, "ingest", str(keys)), 2)
    assert "keyring" in line


@pytest.mark.slow
def test_json_output_parses_and_holds_no_identifier(env: dict[str, str], tmp_path: Path) -> None:
    data = tmp_path / "a.csv"
    env = env | {"CDR_DEFAULT_REGION": "PK"}
    cli(env, "generate", "--format", "canonical_csv", "--rows", "150", "--out", str(data))
    assert cli(env, "ingest", str(data)).returncode == 0
    placed = cli(
        env, "hold", "place", "--case", "C-1", "--reason", "order 7", "--identifier", NUMBER
    )
    assert placed.returncode == 0, placed.stderr

    summary = json.loads(cli(env, "summary", "--json").stdout)
    assert summary["totals"]["records"] == 150 and summary["files"][0]["status"] == "ingested"
    verify = json.loads(cli(env, "verify", "--json").stdout)
    assert verify["ok"] is True and verify["files"][0]["checks"]["seal"] == "ok"
    holds = json.loads(cli(env, "hold", "list", "--json").stdout)
    assert holds[0]["case"] == "C-1" and holds[0]["identifiers"] == 1
    retention = json.loads(
        cli(env, "retention", "--dry-run", "--json", "--as-of", "2025-06-15").stdout
    )
    assert retention["dry_run"] is True and retention["as_of"] == "2025-06-15"
    for args in (["summary"], ["verify"], ["hold", "list"], ["retention", "--dry-run"]):
        out = cli(env, *args, "--json").stdout
        assert NUMBER not in out and NUMBER[1:] not in out and NUMBER[3:] not in out


@pytest.mark.slow
def test_a_second_demo_says_nothing_new_was_ingested(env: dict[str, str]) -> None:
    first = cli(env, "demo", "--records", "400")
    assert first.returncode == 0, first.stderr
    assert "Nothing new was ingested" not in first.stdout
    again = cli(env, "demo", "--records", "400")
    assert again.returncode == 0, again.stderr
    assert "Nothing new was ingested: all 7 files had been ingested before." in again.stdout


@pytest.mark.slow
@pytest.mark.parametrize("day", ["2024-02-29", "2025-12-31", "2026-03-01", "2026-07-16"])
def test_the_demo_quarantines_only_its_deliberate_bad_rows_on_any_day(
    env: dict[str, str], day: str
) -> None:
    """The demo's records end before its day (none `future_timestamp`), its files share no
    record ID (none `duplicate_record_id`), its generated IDs hold nothing the detector masks,
    and each reason the summary lists is explained in a line of its own."""
    from pipeline.records.reasons import MEANINGS

    done = cli(env, "demo", "--records", "2000", "--as-of", day)  # no region set: the demo's own
    assert done.returncode == 0, done.stderr
    summary = json.loads(cli(env, "summary", "--json").stdout)
    reasons = {r for f in summary["files"] for r in (f.get("reasons") or {})}
    assert reasons, "the demo's deliberate bad rows are quarantined"
    deliberate = {"bad_json", "bad_timestamp", "missing_id", "missing_destination",
                  "unparseable_number", "wrong_column_count"}  # fmt: skip
    assert {r.partition(":")[0] for r in reasons} <= deliberate, reasons
    assert not [f["scrubbed"] for f in summary["files"] if f.get("scrubbed")]
    rows = sum(n for f in summary["files"] for n in (f.get("reasons") or {}).values())
    records = sum(f["records"] for f in summary["files"])
    assert rows < records * 0.03  # about 1 % bad by design: nothing else
    table = cli(env, "summary").stdout
    for reason in reasons:
        line = next(x for x in table.splitlines() if x.startswith(reason + " "))
        assert MEANINGS[reason.partition(":")[0]] in line


def test_ingest_with_nothing_to_ingest_named_is_a_usage_error(env: dict[str, str]) -> None:
    line = one_line_failure(cli(env, "ingest"), 2)
    assert "needs a file, a folder, an s3:// URI or --landing" in line
    done = cli(env, "ingest", "--landing")  # named, and empty: nothing to do is no failure
    assert done.returncode == 0 and "nothing to ingest" in done.stderr


def test_a_hold_that_would_end_before_tomorrow_is_refused(env: dict[str, str]) -> None:
    import datetime as dt

    today = dt.datetime.now(dt.UTC).date()
    for until in ("2020-01-01", today.isoformat()):
        line = one_line_failure(
            cli(env, "hold", "place", "--case", "H-1", "--reason", "order 1", "--until", until), 2
        )
        assert f"until {until} is not after today" in line
    assert "H-1" not in cli(env, "hold", "list", "--json").stdout  # refused: nothing stored
    tomorrow = (today + dt.timedelta(days=1)).isoformat()
    placed = cli(env, "hold", "place", "--case", "H-1", "--reason", "order 1", "--until", tomorrow, "--identifier", NUMBER)  # fmt: skip
    assert placed.returncode == 0, placed.stderr
    assert "(1 identifier)" in placed.stdout
    backwards = ["--from", "2025-05-01", "--to", "2025-04-01"]
    line = one_line_failure(cli(env, "hold", "place", "--case", "H-2", "--reason", "r", *backwards), 2)  # fmt: skip
    assert "ends before it starts" in line


def test_retention_prints_years_as_years() -> None:
    from pipeline.report import retention_summary

    report = {"dry_run": True, "as_of": "2036-01-01", "months": [], "files": [],
              "gold_years": [{"year": 2025, "gold_objects": 1234}], "holds": [], "left_locked": []}  # fmt: skip
    text = retention_summary(report)
    assert "2025" in text and "2,025" not in text and "1,234" in text


def test_an_authority_makes_its_key_pair_and_a_package_opens_only_with_it(
    env: dict[str, str], tmp_path: Path
) -> None:
    from pipeline.proof.package import (
        decrypt_with,
        encrypt_for,
        load_private_key,
        load_recipient_key,
    )

    secret = tmp_path / "pass.txt"
    secret.write_text("correct horse battery\n")
    out = tmp_path / "authority"
    done = cli(env, "recipient-key", "--out", str(out), "--passphrase-file", str(secret))
    assert done.returncode == 0, done.stderr
    private, public = (out / "recipient.key").read_bytes(), (out / "recipient.pub").read_bytes()
    assert (out / "recipient.key").stat().st_mode & 0o777 == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in private and b"PUBLIC KEY" in public
    blob = encrypt_for(load_recipient_key(public), b"records")
    _, payload = decrypt_with(load_private_key(private, b"correct horse battery"), blob)
    assert payload == b"records"
    again = one_line_failure(cli(env, "recipient-key", "--out", str(out), "--no-passphrase"), 2)
    assert "exists already: not overwritten" in again
    assert (out / "recipient.key").read_bytes() == private
    secret.write_text("short")
    line = one_line_failure(
        cli(env, "recipient-key", "--out", str(tmp_path / "b"), "--passphrase-file", str(secret)),
        2,
    )
    assert "shorter than 8 characters" in line and not (tmp_path / "b").exists()

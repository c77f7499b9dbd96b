"""Names people and systems choose (sources, landing folders, file names) never carry an
identifier into what is kept, and never lead a write outside its place."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pytest

from pipeline.cli import main as cli
from pipeline.core import layout
from pipeline.core.config import Settings
from pipeline.core.resources import Resources
from pipeline.flows.ingest import IngestError, ingest_file
from tests.helpers import all_text_outputs, assert_no_identifiers

CSV = (
    "record_id,event_time,channel,direction,customer_id,origin,destination\n"
    "r-1,2025-03-02T10:00:00Z,sms,outbound,cust-1,InfoSMS,+923339876543\n"
    "r-2,2025-03-03T10:00:00Z,sms,outbound,cust-1,InfoSMS,+923339876544\n"
)


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def _everything(store_root: Path, *texts: str) -> list[tuple[str, str]]:
    res = Resources.from_settings(Settings.from_env())
    outside = [(k, t) for k, t in all_text_outputs(res.store) if not k.startswith("bronze/")]
    return outside + [(f"text{i}", t) for i, t in enumerate(texts)]


@pytest.fixture
def cli_env(local_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("CDR_DEFAULT_REGION", "PK")
    return local_env


def test_a_source_named_like_an_email_address_is_refused_before_anything_is_written(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "cdr.csv").write_text(CSV)
    with pytest.raises(SystemExit) as exit_:
        cli(["ingest", str(tmp_path / "cdr.csv"), "--source", "alice.secret@example.com"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "source must be a slug" in err
    assert "alice" not in err
    assert _files(Path(cli_env["CDR_STORE"])) == []


@pytest.mark.parametrize(
    "source", ["../gold/cdr/year=2026/month=08", "..", "Ops", "pbx-923001234567"]
)
def test_a_source_that_escapes_or_is_not_a_slug_writes_nothing(
    res: Resources, tmp_path: Path, source: str
) -> None:
    (tmp_path / "cdr.csv").write_text(CSV)
    with pytest.raises(IngestError, match="source must"):
        ingest_file(res, tmp_path / "cdr.csv", source=source, as_of=dt.date(2025, 6, 1))
    assert list(res.store.list("")) == []
    assert not (Path(res.settings.store).parent / "gold").exists()


def test_cli_path_escape_via_source_writes_no_seal_audit_or_gold(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "cdr.csv").write_text(CSV)
    with pytest.raises(SystemExit):
        cli(["ingest", str(tmp_path / "cdr.csv"), "--source", "../gold/cdr/year=2026/month=08"])
    assert _files(Path(cli_env["CDR_STORE"])) == []


def test_a_landing_folder_named_as_a_number_is_refused_and_never_named(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    res = Resources.from_settings(Settings.from_env())
    (tmp_path / "cdr.csv").write_text(CSV)
    res.store.put_file("landing/+923001234567/cdr.csv", tmp_path / "cdr.csv")
    caplog.set_level(logging.INFO)
    assert cli(["ingest", "--landing"]) == 1
    out = capsys.readouterr()
    assert [o.key for o in res.store.list("")] == ["landing/+923001234567/cdr.csv"]  # left as is
    assert_no_identifiers([("out", out.out), ("err", out.err), ("log", caplog.text)], ["3001234567"])  # fmt: skip


@pytest.mark.parametrize(
    "name", ["cdr-923001234567.csv", "+92 300 1234567.csv", "alice.secret@example.com.csv",
             "cdr-٩٢٣٠٠١٢٣٤٥٦٧.csv", "0300\u200b1234567.csv", "cdr 0300\u2014123\u20144567.csv"],
)  # fmt: skip
def test_a_file_name_holding_an_identifier_is_replaced_by_its_digest_everywhere(
    cli_env: dict[str, str], tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    path = tmp_path / "in" / name
    path.parent.mkdir()
    path.write_text(CSV)
    bad = tmp_path / "in2" / name  # the same name, bytes no parser reads: quarantined whole
    bad.parent.mkdir()
    bad.write_bytes(b"\x00\x01 not a CDR\n")
    caplog.set_level(logging.INFO)
    assert (
        cli(["-v", "ingest", str(path), str(bad), "--report-json", str(tmp_path / "r.json")]) == 0
    )
    out = capsys.readouterr()
    label = layout.file_label(name)
    assert label.startswith("file-") and len(label) == 21
    assert label in out.out
    needles = ["3001234567", "٣٠٠١٢٣٤٥٦٧", "alice.secret", name]
    texts = _everything(Path(cli_env["CDR_STORE"]), out.out, out.err, caplog.text,
                        (tmp_path / "r.json").read_text())  # fmt: skip
    assert_no_identifiers(texts, needles)
    res = Resources.from_settings(Settings.from_env())
    assert any(o.key.startswith("quarantine/files/") for o in res.store.list("quarantine/"))


def test_ordinary_file_names_are_kept() -> None:
    for name in ("Master.csv", "cdr.csv", "message-logs.jsonl", "late-2025.csv"):
        assert layout.file_label(name) == name

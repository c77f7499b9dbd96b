"""Legal holds as people name them: cases that look alike never share a key or a folder, the
region of a typed number is the deployment's, and a bad case reference is refused cleanly."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from pipeline.cli import main as cli
from pipeline.core import layout
from pipeline.core.resources import Resources
from pipeline.flows import holds
from pipeline.flows.export import run_export
from pipeline.flows.retention import RetentionRequest, run_retention
from pipeline.proof.audit import read_log
from tests.test_export import PURGE_DAY, _ingested, _open, _pem_pair, _request, _truth, _two_people


def _place(res: Resources, case: str, identifier: str) -> None:
    fields = {
        "action": "place",
        "case": case,
        "reason": "order 7/2026",
        "identifiers": [identifier],
    }
    holds.run_hold(res, holds.HoldRequest.from_mapping(fields))


def test_releasing_one_of_two_look_alike_cases_keeps_the_other_ones_key(
    res: Resources, tmp_path: Path
) -> None:
    g = _ingested(res, tmp_path)
    pk, _ = _two_people(g)
    _place(res, "FIA.2026.7", pk["e164"])
    _place(res, "FIA_2026_7", pk["e164"])
    assert layout.hold_key_name("FIA.2026.7") != layout.hold_key_name("FIA_2026_7")
    run_retention(res, RetentionRequest(PURGE_DAY))  # March purged: both holds copy its records

    release = {"action": "release", "case": "FIA_2026_7", "reason": "case closed"}
    holds.run_hold(res, holds.HoldRequest.from_mapping(release))
    report = run_retention(res, RetentionRequest(PURGE_DAY + dt.timedelta(days=1)))
    assert [h["case"] for h in report.holds] == ["FIA_2026_7"]

    # The active hold still decrypts, and the export of its purged month finds its records.
    assert res.keyring.has_data_key(layout.hold_key_name("FIA.2026.7"))
    public, secret = _pem_pair()
    result = run_export(res, _request(public, [pk["e164"]], case="FIA.2026.7"))
    _, records = _open(res, result, secret)
    march = records.filter(pl.col("event_time").dt.month() == 3)
    assert set(march.get_column("record_id")) == _truth(g, pk, {"email": ""}, 3) != set()
    assert set(march.get_column("found_in")) == {"hold:FIA.2026.7"}


@pytest.mark.parametrize("case", ["../../x", "FIA\n", "a/b", "..", "", "x" * 65, "ＦＩＡ-1"])
def test_cli_refuses_a_bad_case_reference_cleanly_and_writes_nothing(
    case: str, local_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    for action in (["release"], ["place", "--reason", "order", "--customer", "c-1"]):
        code = cli(["hold", action[0], "--case", case, *action[1:]])
        err = capsys.readouterr().err
        assert code == 2
        assert err.startswith("error: ") and "Traceback" not in err
    store = Path(local_env["CDR_STORE"])
    assert not [p for p in store.rglob("*") if p.is_file()]


def test_case_references_are_checked_whole() -> None:
    # `$` would let a trailing newline through; the pattern is matched against the whole value.
    with pytest.raises(layout.LayoutError):
        layout.case("FIA-1\n")
    assert layout.case("FIA.2026.7") == "FIA.2026.7"


def test_dag_forms_use_the_one_case_pattern() -> None:
    from tests.helpers import load_dag

    for dag_id in ("cdr_legal_hold", "cdr_le_export"):
        schema = load_dag(dag_id).params.get_param("case").schema
        assert schema["pattern"] == layout.CASE_PATTERN


def test_a_hold_refused_for_its_case_leaves_no_audit_entry(res: Resources) -> None:
    with pytest.raises(holds.HoldError):
        _place(res, "../gold", "+923001234567")
    assert read_log(res.store) == []


US_PERSON, PK_LOOKALIKE = "+19173750980", "+929173750980"


def _two_917_people(path: Path) -> dict[str, set[str]]:
    """March 2025 records of +1 917 375 0980 and of +92 917 3750980 (same national digits)."""
    lines = ["record_id,event_time,channel,direction,customer_id,origin,destination"]
    ids: dict[str, set[str]] = {US_PERSON: set(), PK_LOOKALIKE: set()}
    for i in range(12):
        person = US_PERSON if i % 2 else PK_LOOKALIKE
        written = "+1 917 375 0980" if person == US_PERSON else "+92 917 3750980"
        ids[person].add(f"r-{i}")
        lines.append(f"r-{i},2025-03-{i + 1:02d}T10:00:00Z,sms,outbound,cust-1,InfoSMS,{written}")
    path.write_text("\n".join(lines) + "\n")
    return ids


def test_with_cdr_default_region_us_a_hold_on_917_375_0980_keeps_that_persons_records(
    tmp_path: Path, local_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from pipeline.core.config import Settings
    from pipeline.core.keys import TOKEN_KEY_VERSION
    from pipeline.records.tokenise import token

    monkeypatch.setenv("CDR_DEFAULT_REGION", "US")
    ids = _two_917_people(tmp_path / "cdr.csv")
    assert cli(["ingest", str(tmp_path / "cdr.csv"), "--as-of", "2025-06-01"]) == 0
    code = cli(["hold", "place", "--case", "NY-1", "--reason", "order 1/2026",
                "--identifier", "917-375-0980"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    res = Resources.from_settings(Settings.from_env())
    key = res.keyring.token_key(TOKEN_KEY_VERSION)
    hold = holds.load(res.store, "NY-1")
    assert hold is not None
    assert hold.tokens == [token("msisdn", US_PERSON, key, TOKEN_KEY_VERSION)]

    assert cli(["retention", "--as-of", "2026-04-01"]) == 0  # March 2025 is purged
    held = holds.read_held(res.store, res.keyring, "NY-1", "records")
    assert set(held.get_column("record_id")) == ids[US_PERSON]
    vault = holds.read_held(res.store, res.keyring, "NY-1", "vault")
    assert set(vault.get_column("identifier")) == {US_PERSON}


def test_without_any_region_a_national_number_is_refused_saying_how_to_give_one(
    local_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.delenv("CDR_DEFAULT_REGION", raising=False)
    code = cli(["hold", "place", "--case", "NY-2", "--reason", "order", "--identifier", "917-375-0980"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "--default-region" in err and "CDR_DEFAULT_REGION" in err
    assert "917" not in err
    code = cli(["hold", "place", "--case", "NY-2", "--reason", "order",
                "--identifier", "917-375-0980", "--default-region", "US"])  # fmt: skip
    assert code == 0


def test_export_reads_a_national_number_in_the_requests_region(
    res: Resources, tmp_path: Path
) -> None:
    ids = _two_917_people(tmp_path / "cdr.csv")
    from pipeline.flows.ingest import ingest_file

    ingest_file(res, tmp_path / "cdr.csv", as_of=dt.date(2025, 6, 1))
    public, secret = _pem_pair()
    assert res.settings.default_region == "PK"
    for region, person in (("US", US_PERSON), (None, PK_LOOKALIKE)):
        request = _request(public, ["917-375-0980"], default_region=region)
        _, records = _open(res, run_export(res, request), secret)
        assert set(records.get_column("record_id")) == ids[person]

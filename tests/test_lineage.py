"""OpenLineage events of the ingest and retention tasks, collected through the provider's file
transport from `airflow dags test` runs: the landing file by digest with its rows, each month
partition written with its schema, row count and assertions, the quarantine part, and the
partitions retention deleted marked DROP. No event holds a number or an address of the files."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from pipeline.core import layout
from pipeline.core.config import Settings
from pipeline.core.resources import Resources
from pipeline.flows.ingest import IngestRequest, copy_into_landing, run_ingest
from pipeline.records import schema
from pipeline.records.synth import generate
from tests.helpers import airflow_dags_test, local_settings

NUMBER_NAME = "calls-923001234567.csv"


def _events(path: Path, job: str, kind: str = "COMPLETE") -> list[dict]:  # type: ignore[type-arg]
    """The COMPLETE (or FAIL) events of a task (`dag.task`)."""
    found = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in found if e["job"]["name"] == job and e["eventType"] == kind]


def _name(e: dict) -> str:  # type: ignore[type-arg]
    return str(e["name"])


@pytest.mark.airflow
def test_ingest_and_retention_emit_their_datasets_and_no_identifier(tmp_path: Path) -> None:
    env_cdr = local_settings(tmp_path)
    res = Resources.from_settings(Settings.from_env(env_cdr))
    # identifiers of March to May 2024, ingested then: due for deletion by today's retention
    old = generate("canonical_csv", tmp_path / "old.csv", 200, seed=7, months=3,
                   start=dt.date(2024, 3, 1), bad_share=0, id_prefix="o")  # fmt: skip
    run_ingest(res, IngestRequest(dt.date(2024, 6, 20)), copy_into_landing(res.store, old.path, "sw"))  # fmt: skip
    new = generate("canonical_csv", tmp_path / NUMBER_NAME, 300, seed=8, months=2,
                   start=dt.date(2026, 9, 1), bad_share=0.05, id_prefix="n")  # fmt: skip
    copy_into_landing(res.store, new.path, "sms-hub")
    # an unreadable upload in the same batch: the task fails, the good file's lineage stays
    (tmp_path / "truncated.bin").write_bytes(b"\x00\x01binary" * 50)
    copy_into_landing(res.store, tmp_path / "truncated.bin", "sms-hub")
    events = tmp_path / "lineage.jsonl"
    transport = {"type": "file", "log_file_path": str(events), "append": True}
    lineage_on = {
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(transport),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "cdr-test",
    }
    airflow_dags_test(tmp_path, env_cdr, lineage_on, "cdr_ingest", "cdr_retention")

    assert _events(events, "cdr_ingest.ingest") == []  # the batch failed, for the bad file
    (ingest,) = _events(events, "cdr_ingest.ingest", "FAIL")
    parsed = [o.key for o in res.store.list(layout.SEALS) if o.key.endswith(".parse.json")]
    bodies = {k: json.loads(res.store.get_bytes(k))["body"] for k in parsed}
    ((key, body),) = [
        (k, b) for k, b in bodies.items() if b["source"] == "sms-hub" and b["status"] == "ingested"
    ]
    sha = key[len(layout.SEALS) : -len(".parse.json")]
    (read,) = ingest["inputs"]
    assert read["namespace"] == "file" and _name(read).endswith(f"/landing/sms-hub/sha256:{sha}")
    assert read["inputFacets"]["inputStatistics"] == read["inputFacets"]["inputStatistics"] | {"rowCount": 300, "size": new.path.stat().st_size}  # fmt: skip

    written = {_name(o).split("/store/", 1)[1]: o for o in ingest["outputs"]}
    for tier in ("silver", "vault", "gold"):
        for month, n in body["by_month"]["gold" if tier == "gold" else "silver"].items():
            out = written.pop(layout.month_prefix(tier, layout.parse_month(month)).rstrip("/"))
            fields = [f["name"] for f in out["facets"]["schema"]["fields"]]
            assert fields == list({"vault": schema.VAULT, "silver": schema.SILVER, "gold": schema.GOLD}[tier])  # fmt: skip
            assertions = out["facets"]["dataQualityAssertions"]["assertions"]
            assert assertions and all(a["success"] for a in assertions)
            if tier != "vault":
                assert out["outputFacets"]["outputStatistics"]["rowCount"] == n
    (quarantine,) = written.values()  # and nothing else
    assert quarantine["outputFacets"]["outputStatistics"]["rowCount"] == body["quarantined"] > 0
    assert [f["name"] for f in quarantine["facets"]["schema"]["fields"]] == list(schema.QUARANTINE_ROWS)  # fmt: skip

    (retention,) = _events(events, "cdr_retention.apply_retention")
    dropped = sorted(_name(o).split("/store/", 1)[1] for o in retention["outputs"])
    expected = sorted(
        layout.month_prefix(t, (2024, m)).rstrip("/")
        for t in ("silver", "vault")
        for m in (3, 4, 5)
    )
    assert dropped == expected
    assert {o["facets"]["lifecycleStateChange"]["lifecycleStateChange"] for o in retention["outputs"]} == {"DROP"}  # fmt: skip

    text = events.read_text()
    numbers = old.numbers | new.numbers
    assert numbers and not any(n[-9:] in text for n in numbers)
    assert not any(e in text for e in old.emails | new.emails)
    assert "923001234567" not in text  # the file's name

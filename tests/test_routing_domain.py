"""Gold says where an e-mail or SIP party is routed: its domain, never its local part, kept after
the identifiers are purged and covered by the record's commitment (from encoding 3)."""

from __future__ import annotations

import datetime as dt
import io
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from pipeline.core.resources import Resources
from pipeline.flows import ingest as ingest_module
from pipeline.flows.ingest import ingest_file
from pipeline.flows.retention import RetentionRequest, run_retention
from pipeline.flows.verify import VerifyRequest, run_verify
from pipeline.proof.commitments import ENCODING
from pipeline.proof.integrity import parse_key
from pipeline.records.quality import failures, result_document
from tests.conftest import ROOT
from tests.helpers import all_text_outputs, read_tier

TOOL = ROOT / "tools" / "verify_commitments.py"
LOCAL_PARTS = ["alice.smith", "bob.jones", "carol", "dave", "noreply"]


def _mail_and_sip(tmp_path: Path) -> Path:
    path = tmp_path / "mixed.csv"
    path.write_text(
        "record_id,event_time,channel,direction,origin,destination\n"
        "m1,2025-03-10T08:00:00Z,email,outbound,noreply@Shop.Example.com,Alice.Smith@Mail.Example.ORG\n"
        "s1,2025-03-10T09:00:00Z,voice,outbound,sip:bob.jones@pbx.example.net:5060,+923001234567\n"
        "s2,2025-03-10T10:00:00Z,voice,inbound,sip:carol@10.0.0.7,sip:dave@voip.example.com;transport=udp\n"
        "n1,2025-03-10T11:00:00Z,sms,outbound,InfoSMS,+923001234568\n"
    )
    return path


def _domains(gold: pl.DataFrame) -> dict[str, tuple[str | None, str | None]]:
    rows = gold.select("record_id", "origin_domain", "destination_domain").iter_rows()
    return {r: (o, d) for r, o, d in rows}


def _gold_failures(res: Resources, gold: pl.DataFrame, run: str) -> list[str]:
    """The gold suite's failures, from the batch evaluator ingest runs and from GX itself."""
    tally = res.quality.tally("gold")
    tally.add(gold)
    ours = failures(result_document(tally))
    theirs = res.quality.validate_frame("gold", gold.to_pandas(), run)
    assert sorted(ours) == sorted(theirs), (ours, theirs)
    return ours


def _standalone(store: Path, cwd: Path) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-I", str(TOOL), "store", str(store)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done.returncode, done.stdout + done.stderr


def test_gold_keeps_the_domain_of_every_mail_and_sip_party_after_the_purge(
    res: Resources, tmp_path: Path
) -> None:
    report = ingest_file(res, _mail_and_sip(tmp_path), as_of=dt.date(2025, 6, 15))
    assert report.gold == 4 and report.quarantined == 0
    expected = {
        "m1": ("shop.example.com", "mail.example.org"),  # lower-cased
        "s1": ("pbx.example.net", None),  # no port; a number has a country instead
        "s2": (None, "voip.example.com"),  # an IP host is not kept; no URI parameters
        "n1": (None, None),
    }
    assert _domains(read_tier(res.store, "gold/")) == expected
    assert _domains(read_tier(res.store, "silver/")) == expected
    gold_text = "".join(t for k, t in all_text_outputs(res.store) if k.startswith("gold/"))
    assert not [p for p in LOCAL_PARTS if p in gold_text.lower()]
    assert "10.0.0.7" not in gold_text

    run_retention(res, RetentionRequest(dt.date(2026, 4, 1)))  # March's identifiers go
    assert not len(read_tier(res.store, "silver/"))
    gold = read_tier(res.store, "gold/")
    assert gold.get_column("destination").null_count() == 4  # no address, no token
    assert _domains(gold) == expected  # the destination still identified, by its domain
    verdict = run_verify(res, VerifyRequest(expectations=False))
    assert verdict.ok, verdict.problems()
    code, out = _standalone(Path(res.settings.store), tmp_path)
    assert code == 0 and f"encoding {ENCODING}" in out, out

    # The domain is committed: an edited one is named by both verifiers.
    [key] = [o.key for o in res.store.list("gold/") if o.key.endswith(".parquet")]
    edited = pl.read_parquet(io.BytesIO(res.store.get_bytes(key))).with_columns(
        pl.when(pl.col("record_id") == "m1")
        .then(pl.lit("elsewhere.example"))
        .otherwise(pl.col("destination_domain"))
        .alias("destination_domain")
    )
    buf = io.BytesIO()
    edited.write_parquet(buf)
    res.store.put_bytes(key, buf.getvalue())
    verdict = run_verify(res, VerifyRequest(expectations=False))
    assert not verdict.ok and any("record m1 " in p for p in verdict.problems())
    code, out = _standalone(Path(res.settings.store), tmp_path)
    assert code == 1 and "record m1 " in out


@pytest.mark.parametrize(
    ("domain", "fails"),
    [
        ("alice.smith@mail.example.org", True),  # the local part
        ("Mail.Example.org", True),  # not lower-cased
        ("10.0.0.7", True),  # an address, not a domain
        ("mail.example.org", False),
    ],
)
def test_the_gold_suite_refuses_anything_but_a_domain(
    res: Resources, tmp_path: Path, domain: str, fails: bool
) -> None:
    ingest_file(res, _mail_and_sip(tmp_path), as_of=dt.date(2025, 6, 15))
    gold = read_tier(res.store, "gold/").with_columns(
        pl.when(pl.col("record_id") == "m1")
        .then(pl.lit(domain))
        .otherwise(pl.col("destination_domain"))
        .alias("destination_domain")
    )
    failures = _gold_failures(res, gold, "domain-check")
    assert bool([f for f in failures if "destination_domain" in f]) == fails, failures


def test_an_email_destination_without_its_domain_fails_the_gold_suite(
    res: Resources, tmp_path: Path
) -> None:
    ingest_file(res, _mail_and_sip(tmp_path), as_of=dt.date(2025, 6, 15))
    gold = read_tier(res.store, "gold/").with_columns(pl.lit(None, pl.String).alias("destination_domain"))  # fmt: skip
    failures = _gold_failures(res, gold, "domain-missing")
    assert any("destination_domain" in f for f in failures), failures


@pytest.mark.parametrize("version", [2, 3])
def test_a_file_committed_under_an_earlier_encoding_still_verifies(
    res: Resources, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: int
) -> None:
    """Files ingested before the domains were committed (2), or before the fixed-width
    encoding (3), keep their encoding and verify."""
    monkeypatch.setattr(ingest_module, "ENCODING", version)
    sha = ingest_file(res, _mail_and_sip(tmp_path), as_of=dt.date(2025, 6, 15)).sha256
    entry = res.store.get_bytes(parse_key(sha)).replace(b" ", b"")
    assert f'"commitment_encoding":{version}'.encode() in entry
    verdict = run_verify(res, VerifyRequest(expectations=False))
    assert verdict.ok, verdict.problems()
    code, out = _standalone(Path(res.settings.store), tmp_path)
    assert code == 0 and f"encoding {version}" in out, out

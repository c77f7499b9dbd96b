"""The pipeline on S3 as operators run it: versioned, locked, and sometimes failing.

Everything runs against moto's server on 127.0.0.1, some of it through a proxy that answers
errors, resets connections or loses answers (tests/faultproxy.py); nothing in boto3 is patched.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from pipeline.cli import main as cli
from pipeline.core.config import Settings
from pipeline.core.layout import parse_key
from pipeline.core.resources import Resources
from pipeline.records.synth import generate
from tests.faultproxy import FaultPlan, FaultProxy, always, always_with_header

pytestmark = pytest.mark.s3
RECENT = dt.date(2026, 10, 1)  # recent enough that its lock still holds by the wall clock
AS_OF = dt.date(2026, 11, 15)


def _upload_lock(res: Resources, records: dt.date) -> dt.date:
    """An original is locked by its upload from the month it arrived in (now), and never
    shorter than the purge date of its records' earliest month (`records`)."""
    today = dt.datetime.now(dt.UTC).date()
    return max(res.policy.identifier_purge(today.year, today.month), records)


def res_of(env: dict[str, str]) -> Resources:
    return Resources.from_settings(Settings.from_env(env))


def run(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], *args: str) -> int:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return cli(list(args))


@pytest.fixture
def locked_env(s3_env: dict[str, str]) -> dict[str, str]:
    return s3_env | {"CDR_BRONZE_LOCK": "true", "CDR_DEFAULT_REGION": "PK"}


def test_a_lock_configuration_that_cannot_be_read_fails_the_ingest(
    locked_env: dict[str, str],
    moto_endpoint: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    g = generate("canonical_csv", tmp_path / "in.csv", 200, start=RECENT, months=1)
    plan = FaultPlan(rules=[always("GET", "object-lock", "500")])
    with FaultProxy(moto_endpoint, plan) as url:
        env = locked_env | {"CDR_S3_ENDPOINT_URL": url}
        assert run(monkeypatch, env, "ingest", "--as-of", f"{AS_OF}", str(g.path)) == 1
    assert any("FAILED in.csv" in r.message and "Object Lock" in r.message for r in caplog.records)
    res = Resources.from_settings(Settings.from_env(locked_env))
    assert not list(res.bronze.list("bronze/"))  # nothing stored unlocked
    sha = __import__("hashlib").sha256(g.path.read_bytes()).hexdigest()
    assert not res.store.exists(parse_key(sha))
    # Once the store answers again, the same file goes in, locked until its policy date.
    assert run(monkeypatch, locked_env, "ingest", "--as-of", f"{AS_OF}", str(g.path)) == 0
    [original] = [o.key for o in res.bronze.list("bronze/")]
    until = res.bronze.lock_until(original)
    assert until is not None and until.date() == _upload_lock(res, dt.date(2027, 11, 1))
    assert run(monkeypatch, locked_env, "verify") == 0


def test_a_bronze_store_without_lock_is_refused_when_locking_is_required(
    locked_env: dict[str, str], s3_buckets: tuple[str, str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    data, _ = s3_buckets
    env = locked_env | {"CDR_BRONZE_STORE": f"s3://{data}/bronze-here"}
    g = generate("canonical_csv", tmp_path / "in.csv", 100, start=RECENT, months=1)
    assert run(monkeypatch, env, "ingest", "--as-of", f"{AS_OF}", str(g.path)) == 1
    assert any("has no Object Lock" in r.message for r in caplog.records)


def test_verify_names_an_original_locked_short_of_the_policy(
    locked_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    g = generate("canonical_csv", tmp_path / "in.csv", 100, start=RECENT, months=1)
    assert run(monkeypatch, locked_env, "ingest", "--as-of", f"{AS_OF}", str(g.path)) == 0
    until = _upload_lock(res_of(locked_env), dt.date(2027, 11, 1))
    longer = tmp_path / "policy.toml"
    longer.write_text(
        '[default]\nidentifier_months = 24\nrecord_years = 10\nreason = "a longer rule"\n'
    )
    env = locked_env | {"CDR_RETENTION_POLICY": str(longer)}
    capsys.readouterr()
    assert run(monkeypatch, env, "verify") == 1
    out = capsys.readouterr().out
    assert f"is locked until {until}, the policy says 2028-11-01" in out


def _landing(res: Resources, tmp_path: Path, names: list[str]) -> None:
    from pipeline.flows.ingest import copy_into_landing

    for i, name in enumerate(names):
        g = generate("canonical_csv", tmp_path / name, 150, seed=40 + i, start=RECENT, months=1)
        # One source per file: generated record ids restart at each file, and a repeated id
        # from one source is a re-delivery.
        copy_into_landing(res.store, g.path, f"operator-{name[0]}")


@pytest.mark.slow
def test_one_files_store_error_fails_that_file_and_the_others_go_in(
    locked_env: dict[str, str], moto_endpoint: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from tests.faultproxy import always

    res = Resources.from_settings(Settings.from_env(locked_env))
    _landing(res, tmp_path, ["a.csv", "b.csv", "c.csv"])
    # Every download of b.csv is cut mid-body (boto3 does not retry a body it has begun).
    plan = FaultPlan(rules=[always("GET", "landing/operator-b/b.csv", "cut")])
    with FaultProxy(moto_endpoint, plan) as url:
        env = locked_env | {"CDR_S3_ENDPOINT_URL": url}
        assert run(monkeypatch, env, "ingest", "--landing", "--as-of", f"{AS_OF}") == 1
    failed = [r.message for r in caplog.records if r.message.startswith("FAILED")]
    assert len(failed) == 1 and failed[0].startswith("FAILED b.csv: ")
    assert "\n" not in failed[0]
    assert [o.key for o in res.store.list("landing/")] == ["landing/operator-b/b.csv"]
    assert len(list(res.store.list("gold/"))) == 2
    # The rerun picks up where it failed.
    assert run(monkeypatch, locked_env, "ingest", "--landing", "--as-of", f"{AS_OF}") == 0
    assert not list(res.store.list("landing/")) and len(list(res.store.list("gold/"))) == 3

    # verify: an unreadable object is that file's failure, named; the others are checked.
    plan = FaultPlan(rules=[always("GET", "/proofs/", "cut")])
    with FaultProxy(moto_endpoint, plan) as url:
        capsys.readouterr()
        assert run(monkeypatch, locked_env | {"CDR_S3_ENDPOINT_URL": url}, "verify") == 1
    out = capsys.readouterr().out
    assert out.count("proofs           FAIL") == 3  # each file named, none crashed the run
    assert out.count("cannot be read") == 3
    assert "MISMATCHES" in out and "Traceback" not in out


def test_a_lock_outliving_the_purge_date_is_reported_once_and_the_key_destroyed_on_time(
    locked_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from pipeline.proof.audit import read_log

    res = Resources.from_settings(Settings.from_env(locked_env))
    g = generate("canonical_csv", tmp_path / "oct.csv", 150, seed=8, start=RECENT, months=1)
    assert run(monkeypatch, locked_env, "ingest", "--as-of", f"{AS_OF}", str(g.path)) == 0
    [original] = [o.key for o in res.bronze.list("bronze/")]
    until = _upload_lock(res, dt.date(2027, 11, 1))
    assert res.bronze.lock_until(original) == dt.datetime.combine(until, dt.time(), dt.UTC)

    def retain(day: str) -> int:  # a day still to come: allowed, and every month at once
        return run(monkeypatch, locked_env, "retention", "--as-of", day, "--allow-future-as-of", "--confirm")  # fmt: skip

    capsys.readouterr()
    assert retain("2027-11-01") == 0
    out = capsys.readouterr().out
    assert f"{original} locked until {until}" in out
    sha = original.rsplit("/", 1)[1][: -len(".enc")]
    assert not res.keyring.has_data_key(f"file-{sha}")  # shredded on the day

    assert retain("2027-11-02") == 0
    assert "locked until" not in capsys.readouterr().out  # said once
    purges = [e for e in read_log(res.store) if e["action"] == "purge_file"]
    assert [e["event"] for e in purges] == [f"purge-file:{sha}"]
    assert purges[0]["what"]["key_destroyed"] is True


def test_an_original_is_locked_by_its_upload_before_any_commit(
    locked_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """A run killed between the upload and the commit leaves its original locked (from the
    month it arrived in); `verify` exits 1 for the gap and checks that lock too."""
    import pipeline.flows.ingest as ingest_flow

    for key, value in locked_env.items():
        monkeypatch.setenv(key, value)
    res = Resources.from_settings(Settings.from_env())
    g = generate("canonical_csv", tmp_path / "in.csv", 100, start=RECENT, months=1)

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # what a kill between upload and parse leaves: no commit

    monkeypatch.setattr(ingest_flow, "_parse_into_tiers", killed)
    with pytest.raises(KeyboardInterrupt):
        ingest_flow.ingest_file(res, g.path, as_of=AS_OF, arrived_at=dt.datetime(2026, 11, 3, tzinfo=dt.UTC))  # fmt: skip
    [original] = [o.key for o in res.bronze.list("bronze/")]
    assert res.bronze.lock_until(original) == dt.datetime(2027, 12, 1, tzinfo=dt.UTC)  # 2026-11
    capsys.readouterr()
    assert cli(["verify"]) == 1
    out = capsys.readouterr().out
    assert "sealed, not parsed" in out and "lock             ok (until 2027-12-01)" in out


def test_a_refused_lock_request_stores_nothing_unlocked(
    locked_env: dict[str, str], moto_endpoint: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """The role lacks `s3:PutObjectRetention`: the upload that carries the lock is refused
    (AccessDenied), the ingest fails, and bronze holds no original without its lock."""
    g = generate("canonical_csv", tmp_path / "in.csv", 100, start=RECENT, months=1)
    plan = FaultPlan(rules=[always_with_header("PUT", "bronze/", "403", "x-amz-object-lock-mode")])  # fmt: skip
    with FaultProxy(moto_endpoint, plan) as url:
        env = locked_env | {"CDR_S3_ENDPOINT_URL": url}
        assert run(monkeypatch, env, "ingest", "--as-of", f"{AS_OF}", str(g.path)) == 1
    assert any(action == "403" for _, _, action in plan.seen)
    res = Resources.from_settings(Settings.from_env(locked_env))
    assert not list(res.bronze.list("bronze/"))
    capsys.readouterr()
    assert run(monkeypatch, locked_env, "verify") == 1  # sealed, never stored: a gap
    assert run(monkeypatch, locked_env, "ingest", "--as-of", f"{AS_OF}", str(g.path)) == 0
    [original] = [o.key for o in res.bronze.list("bronze/")]
    assert res.bronze.lock_until(original) is not None
    assert run(monkeypatch, locked_env, "verify") == 0

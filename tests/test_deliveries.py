"""Files as real systems deliver them: leap seconds, old Mac line ends. Each case is the file,
the command and the check, as an operator met it; `verify --deep` reads them as ingest does
(the autouse deep check after every test)."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import zipfile
from pathlib import Path

import polars as pl
import pytest

from pipeline.cli import main as cli
from pipeline.core.config import Settings
from pipeline.core.resources import Resources
from pipeline.report import ingested_files
from tests.helpers import read_tier

HEADER = "record_id,event_time,channel,direction,origin,destination\n"
AS_OF = "2025-06-15"


@pytest.fixture
def res(local_env: dict[str, str]) -> Resources:
    return Resources.from_settings(Settings.from_env(local_env))


def _ingest(*paths: Path) -> None:
    assert cli(["ingest", "--as-of", AS_OF, "--default-region", "PK", *map(str, paths)]) == 0


def test_a_leap_second_stays_in_its_minute_month_and_year(
    res: Resources, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`2016-12-31T23:59:60Z` is the last instant of 2016, not the first of 2017: its month's
    identifiers are purged with December's, in every format."""
    csv = tmp_path / "leap.csv"
    csv.write_text(
        HEADER
        + "z1,2016-12-31T23:59:60Z,sms,outbound,InfoSMS,+923001234567\n"
        + "z2,2016-12-31 23:59:60.5,sms,outbound,InfoSMS,+923001234567\n"
        + "z3,2017-01-01T04:59:60+05:00,sms,outbound,InfoSMS,+923001234567\n"
        + "z4,2016-12-31T23:59:59Z,sms,outbound,InfoSMS,+923001234567\n"
    )
    jsonl = tmp_path / "leap.jsonl"
    message = {"messageId": "m1", "from": "InfoSMS", "to": "923001234567",
               "sentAt": "2016-12-31T23:59:60.000+0000"}  # fmt: skip
    jsonl.write_text(json.dumps(message) + "\n")
    asterisk = tmp_path / "Master.csv"
    asterisk.write_text(
        '"acc","1001","+923001234567","from-internal","","PJSIP/1001-01","PJSIP/trunk-02",'
        '"Dial","","2016-12-31 23:59:60","2016-12-31 23:59:60","2017-01-01 00:00:30","30","30",'
        '"ANSWERED","DOCUMENTATION","1483228800.1",""\n'
    )
    _ingest(csv, jsonl, asterisk)
    gold = read_tier(res.store, "gold/").sort("record_id")
    last = dt.datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC)
    times = gold.get_column("event_time").to_list()
    assert len(times) == 6 and times.count(last) == 5  # z4 is 23:59:59 itself
    assert gold.filter(pl.col("record_id") == "z4").get_column("event_time").item() < last
    assert [o.key for o in res.store.list("gold/") if "month=12" not in o.key] == []
    assert all("year=2016" in o.key for o in res.store.list("gold/"))
    capsys.readouterr()
    assert cli(["verify", "--deep"]) == 0
    assert capsys.readouterr().out.count("original (deep)  ok") == 3


def _records(lines: list[str], end: str) -> bytes:
    return (HEADER.rstrip("\n") + end + end.join(lines) + end).encode()


@pytest.mark.parametrize("end", ["\r", "\r\n", "\n"])
def test_old_mac_line_ends_are_line_ends(
    res: Resources, tmp_path: Path, capsys: pytest.CaptureFixture[str], end: str
) -> None:
    """A CSV written with bare `\\r` line ends (classic Mac exports) is read record by record,
    like one with `\\r\\n` or `\\n`: never two records merged into one quarantined row."""
    rows = [f"r{i},2025-05-02T10:00:00Z,sms,outbound,InfoSMS,+92300123{i:04d}" for i in range(3)]
    path = tmp_path / "mac.csv"
    path.write_bytes(_records(rows, end))
    _ingest(path)
    gold = read_tier(res.store, "gold/").sort("source_line")
    assert gold.select("record_id", "source_line").rows() == [("r0", 2), ("r1", 3), ("r2", 4)]
    capsys.readouterr()
    assert cli(["verify", "--deep"]) == 0


def test_bare_cr_line_ends_across_many_blocks_and_inside_quotes(
    res: Resources, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file of bare `\\r` ends bigger than a read block (no `\\n` at all: it is still read in
    bounded blocks), and a quoted field holding a `\\r`, which is part of its value."""
    n = 4000
    rows = [
        f"r{i},2025-05-02T10:00:00Z,sms,outbound,InfoSMS,+92300{i:07d},"
        + ('"two\rlines"' if i == 7 else "plain " + "x" * 40)
        for i in range(n)
    ]
    path = tmp_path / "big-mac.csv"
    header = HEADER.rstrip("\n") + ",status"
    path.write_bytes((header + "\r" + "\r".join(rows) + "\r").encode())
    assert path.stat().st_size > 3 * (1 << 16)
    _ingest(path)
    gold = read_tier(res.store, "gold/").sort("source_line")
    assert len(gold) == n
    assert gold.get_column("source_line").to_list()[:8] == [2, 3, 4, 5, 6, 7, 8, 9]
    assert gold.filter(pl.col("record_id") == "r7").get_column("status").to_list() == ["twolines"]
    assert gold.get_column("source_line").max() == n + 2  # the quoted `\r` is a line of its own
    capsys.readouterr()
    assert cli(["verify", "--deep"]) == 0


# --- a landing file that is still being written ------------------------------------------------


def _calls(n: int) -> str:
    return HEADER + "".join(
        f"a{i},2025-05-02T10:00:00Z,sms,outbound,InfoSMS,+92300{i:07d}\n" for i in range(n)
    )


def _appended(n: int, start: int) -> str:
    return "".join(
        f"a{i},2025-05-02T11:00:00Z,sms,outbound,InfoSMS,+92300{i:07d}\n"
        for i in range(start, start + n)
    )


def _kept_ids(res: Resources) -> list[str]:
    return sorted(read_tier(res.store, "gold/").get_column("record_id").to_list())


@pytest.mark.parametrize("step", ["store_original", "_parse_into_tiers", "_record_outcome"])
def test_rows_appended_during_an_ingest_are_never_lost_nor_published_unsealed(
    res: Resources, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """A PBX keeps appending to the landing file while a run ingests it: after the seal (before
    bronze), between bronze and the parse, or after the parse. The run publishes exactly what
    it sealed; the file is left in landing because it changed; the next run ingests the new
    rows (the ones already kept are re-deliveries). Every record is kept once."""
    from pipeline.flows import ingest

    source = tmp_path / "Master.csv"
    source.write_text(_calls(30))
    key = ingest.copy_into_landing(res.store, source, "pbx-khi")
    landed = Path(res.store.uri(key))
    real = getattr(ingest, step)

    def appending(*args: object, **kwargs: object) -> object:
        with open(landed, "a") as f:  # the source system writes while the run works
            f.write(_appended(5, 30))
        monkeypatch.setattr(ingest, step, real)
        return real(*args, **kwargs)

    monkeypatch.setattr(ingest, step, appending)
    first = ingest.ingest_landing(res, key, as_of=dt.date(2025, 6, 15))
    assert (first.status, first.records, first.gold) == ("ingested", 30, 30)
    assert first.warnings and "changed since it was read" in first.warnings[0]
    assert landed.exists()  # not deleted: it holds rows nobody read yet

    second = ingest.ingest_landing(res, key, as_of=dt.date(2025, 6, 15))
    assert (second.status, second.records, second.gold) == ("ingested", 35, 5)
    assert second.reasons == {"duplicate_record_id": 30} and not landed.exists()
    assert _kept_ids(res) == sorted(f"a{i}" for i in range(35))
    assert cli(["verify"]) == 0


def test_a_file_changing_while_it_is_copied_is_left_for_a_later_run(
    res: Resources, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.core import snapshot
    from pipeline.flows import ingest

    source = tmp_path / "up.csv"
    source.write_text(_calls(10))
    key = ingest.copy_into_landing(res.store, source, "sftp")
    landed = Path(res.store.uri(key))
    real, looks = snapshot.stamp, []

    def stamp(path: Path) -> tuple[int, int, int]:
        looks.append(path)
        if len(looks) == 2:  # the look after the copy: the upload went on meanwhile
            with open(landed, "a") as f:
                f.write(_appended(3, 10))
        return real(path)

    monkeypatch.setattr(snapshot, "stamp", stamp)
    report = ingest.ingest_landing(res, key, as_of=dt.date(2025, 6, 15))
    assert report.status == "not_settled"
    assert not list(res.store.list("seals/")) and landed.exists()  # nothing sealed, nothing lost
    monkeypatch.setattr(snapshot, "stamp", real)
    again = ingest.ingest_landing(res, key, as_of=dt.date(2025, 6, 15))
    assert (again.status, again.gold) == ("ingested", 13) and not landed.exists()


def test_a_landing_file_younger_than_the_settle_time_is_watched_first(
    local_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With `CDR_LANDING_SETTLE_SECONDS`, a file written a moment ago is looked at again after
    that long: one that grew meanwhile is left for a later run, one that did not is taken."""
    import threading

    from pipeline.flows import ingest

    env = local_env | {"CDR_LANDING_SETTLE_SECONDS": "1"}
    res = Resources.from_settings(Settings.from_env(env))
    source = tmp_path / "up.csv"
    source.write_text(_calls(10))
    key = ingest.copy_into_landing(res.store, source, "sftp")
    landed = Path(res.store.uri(key))
    writer = threading.Timer(0.3, lambda: landed.open("a").write(_appended(2, 10)))
    writer.start()
    report = ingest.ingest_landing(res, key, as_of=dt.date(2025, 6, 15))
    writer.join()
    assert report.status == "not_settled" and not list(res.store.list("seals/"))
    report = ingest.ingest_landing(res, key, as_of=dt.date(2025, 6, 15))  # quiet since
    assert (report.status, report.gold) == ("ingested", 12)
    assert cli(["verify"]) == 0


@pytest.mark.s3
def test_an_s3_landing_object_replaced_during_an_ingest_stays_as_a_new_delivery(
    s3_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On S3 the run reads the version it listed; a newer upload under the same key (a source
    re-sending with more rows) is neither read by that run nor deleted by it."""
    from pipeline.flows import ingest

    res = Resources.from_settings(Settings.from_env(s3_env | {"CDR_DEFAULT_REGION": "PK"}))
    first, fuller = tmp_path / "first.csv", tmp_path / "fuller.csv"
    first.write_text(_calls(8))
    fuller.write_text(_calls(8) + _appended(4, 8))
    key = ingest.copy_into_landing(res.store, first, "partner")
    real = ingest.store_original

    def replaced(*args: object, **kwargs: object) -> object:
        res.store.put_file(key, fuller)  # the new upload lands mid-ingest
        monkeypatch.setattr(ingest, "store_original", real)
        return real(*args, **kwargs)

    monkeypatch.setattr(ingest, "store_original", replaced)
    report = ingest.ingest_landing(res, key, as_of=dt.date(2025, 6, 15))
    assert (report.status, report.records) == ("ingested", 8)
    assert res.store.exists(key)
    again = ingest.ingest_landing(res, key, as_of=dt.date(2025, 6, 15))
    assert (again.status, again.records, again.gold) == ("ingested", 12, 4)
    assert not res.store.exists(key)


def test_bronze_must_hash_to_the_seal_before_anything_is_published(
    res: Resources,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Whatever made the bytes read for bronze differ from the sealed ones (a disk, a bug), the
    original is not stored and nothing is published; verify shows the gap until a rerun."""
    from pipeline.records import bronze

    path = tmp_path / "calls.csv"
    path.write_text(_calls(5))
    real = bronze.file_blocks
    monkeypatch.setattr(
        bronze, "file_blocks", lambda p: (b.replace(b"a1,", b"a9,") for b in real(p))
    )
    assert cli(["ingest", "--as-of", AS_OF, str(path)]) == 1
    assert "do not hash to the seal" in caplog.text
    assert not list(res.store.list("bronze/")) and not list(res.store.list("gold/"))
    assert cli(["verify"]) == 1
    monkeypatch.setattr(bronze, "file_blocks", real)
    assert cli(["ingest", "--as-of", AS_OF, str(path)]) == 0
    assert _kept_ids(res) == [f"a{i}" for i in range(5)]
    assert cli(["verify"]) == 0


# --- two hosts on one store, one of them killed -------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("store", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_a_run_killed_on_one_host_is_taken_over_from_another_once_its_lease_lapses(
    local_env: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest, store: str
) -> None:
    """Host A is killed (`kill -9`) mid-ingest. Host B sees A's lease (host, age) and does not
    touch the file while the lease could still be renewed; `verify` and `summary` name it and
    verify exits 1; once the lease has lapsed, B takes the file over and ingests it whole. On
    the local folder and on S3 alike (the hosts are told apart by `CDR_HOST`)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from pipeline.records.synth import generate

    g = generate("canonical_csv", tmp_path / "big.csv", 60_000, start=dt.date(2025, 3, 1))
    stores = request.getfixturevalue("s3_env") if store == "s3" else local_env
    env = {**os.environ, **local_env, **stores, "CDR_LEASE_SECONDS": "12"}
    res = Resources.from_settings(Settings.from_env(env))
    command = [sys.executable, "-m", "pipeline", "ingest", "--as-of", AS_OF, str(g.path)]
    a = subprocess.Popen(command, env={**env, "CDR_HOST": "host-a"}, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while not list(res.store.list("leases/")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # well into the ingest: sealed, parsing
    os.kill(a.pid, signal.SIGKILL)
    a.wait()

    def on_b(*args: str) -> subprocess.CompletedProcess[str]:
        b_env = {**env, "CDR_HOST": "host-b"}
        return subprocess.run([sys.executable, "-m", "pipeline", *args], env=b_env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip

    blocked = on_b("ingest", "--as-of", AS_OF, str(g.path))
    assert "another run is ingesting" in blocked.stdout + blocked.stderr
    verify = on_b("verify", "--json")
    assert verify.returncode == 1
    gaps = [f["gap"] for f in json.loads(verify.stdout)["files"] if f["gap"]]
    assert len(gaps) == 1 and "leased by host host_a" in gaps[0], gaps
    assert "Ingests under way (1)" in on_b("summary").stdout

    time.sleep(12)  # nobody renews A's lease
    taken = on_b("ingest", "--as-of", AS_OF, str(g.path))
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert "taking over the ingest lease" in taken.stderr
    assert on_b("verify").returncode == 0
    assert (
        len(read_tier(res.store, "gold/")) + len(read_tier(res.store, "quarantine/rows/")) == 60_000
    )


# --- times written without an offset ----------------------------------------------------------


def _naive_file(tmp_path: Path, name: str = "khi.csv") -> Path:
    path = tmp_path / name
    path.write_text(
        HEADER
        + "k1,2025-06-01 02:00:00,sms,outbound,InfoSMS,+923001234567\n"  # 00:00-05:00 PKT on the 1st
        + "k2,2025-06-01T06:00:00,sms,outbound,InfoSMS,+923001234568\n"
        + "k3,2025-06-01T02:00:00+05:00,sms,outbound,InfoSMS,+923001234569\n"  # its own offset
    )
    return path


def _months(res: Resources) -> dict[str, str]:
    gold = read_tier(res.store, "gold/")
    return {r: f"{t:%Y-%m-%d %H:%M}" for r, t in gold.select("record_id", "event_time").iter_rows()}


@pytest.mark.parametrize("how", ["deployment", "per_source"])
def test_naive_canonical_times_are_read_in_the_sources_zone(
    local_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """`2025-06-01 02:00` from a Karachi source is 2025-05-31 21:00 UTC: May's record, its
    identifiers purged on May's date, not a month late."""
    if how == "deployment":
        monkeypatch.setenv("CDR_SOURCE_TIMEZONE", "Asia/Karachi")
    else:
        monkeypatch.setenv("CDR_SOURCE_TIMEZONES", "pbx-khi=Asia/Karachi, other=America/New_York")
    res = Resources.from_settings(Settings.from_env())
    assert cli(["ingest", "--as-of", "2025-06-15", "--source", "pbx-khi", str(_naive_file(tmp_path))]) == 0  # fmt: skip
    assert _months(res) == {"k1": "2025-05-31 21:00", "k2": "2025-06-01 01:00", "k3": "2025-05-31 21:00"}  # fmt: skip
    assert any("month=05" in o.key for o in res.store.list("gold/"))


def test_naive_times_from_a_source_whose_zone_is_unknown_are_quarantined(
    local_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """Never assumed UTC: without `CDR_SOURCE_TIMEZONE` (or the source in
    `CDR_SOURCE_TIMEZONES`) a time without an offset is `bad_timestamp:no_offset`; one with its
    offset is kept. A PBX file (local times only) is quarantined row by row, and reconciles."""
    monkeypatch.delenv("CDR_SOURCE_TIMEZONE", raising=False)
    monkeypatch.setenv("CDR_SOURCE_TIMEZONES", "elsewhere=UTC")
    res = Resources.from_settings(Settings.from_env())
    assert res.settings.zone_for("pbx-khi") is None
    asterisk = tmp_path / "Master.csv"
    asterisk.write_text(
        '"acc","1001","+923001234567","from-internal","","PJSIP/1001-01","PJSIP/trunk-02",'
        '"Dial","","2025-05-02 10:00:00","2025-05-02 10:00:01","2025-05-02 10:01:00","60","59",'
        '"ANSWERED","DOCUMENTATION","1746180000.0101",""\n'
    )
    assert cli(["ingest", "--as-of", AS_OF, "--source", "pbx-khi", str(_naive_file(tmp_path)), str(asterisk)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "bad_timestamp:no_offset" in out
    reports = {r["file"]: r for r in ingested_files(res.store)}
    assert reports["khi.csv"]["reasons"] == {"bad_timestamp:no_offset": 2}
    assert reports["Master.csv"]["reasons"] == {"bad_timestamp:no_offset": 1}
    assert set(_months(res)) == {"k3"}
    assert cli(["verify", "--deep"]) == 0


def test_a_zone_that_does_not_exist_is_refused_when_settings_load() -> None:
    with pytest.raises(ValueError, match="not a time zone"):
        Settings.from_env({"CDR_SOURCE_TIMEZONE": "Asia/Karachy"})
    with pytest.raises(ValueError, match="source=Zone"):
        Settings.from_env({"CDR_SOURCE_TIMEZONES": "pbx-khi"})
    assert Settings.from_env({"CDR_SOURCE_TIMEZONES": "a=UTC"}).zone_for("b") is None


@pytest.mark.parametrize("wrap", ["plain", "gzip", "zip"])
def test_rows_quarantined_for_an_unknown_zone_come_back_once_the_zone_is_set(
    local_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wrap: str
) -> None:
    """Also from a compressed original: the replay opens it again as ingest did."""
    monkeypatch.delenv("CDR_SOURCE_TIMEZONE", raising=False)
    res = Resources.from_settings(Settings.from_env())
    path = _naive_file(tmp_path)
    if wrap == "gzip":
        path = path.rename(path.with_suffix(".gz"))
        path.write_bytes(gzip.compress(path.read_bytes()))
    elif wrap == "zip":
        with zipfile.ZipFile(tmp_path / "khi.zip", "w", zipfile.ZIP_DEFLATED) as archive:
            archive.write(path, "khi.csv")
        path = tmp_path / "khi.zip"
    assert cli(["ingest", "--as-of", "2025-06-15", "--source", "pbx-khi", str(path)]) == 0
    assert set(_months(res)) == {"k3"}
    replay = ["replay", "--reason", "bad_timestamp:no_offset", "--as-of", "2025-06-15"]
    assert cli(replay) == 0  # no zone yet: nothing to replay with, nothing changed
    assert set(_months(res)) == {"k3"}
    monkeypatch.setenv("CDR_SOURCE_TIMEZONES", "pbx-khi=Asia/Karachi")
    assert cli(replay) == 0
    assert _months(res) == {"k1": "2025-05-31 21:00", "k2": "2025-06-01 01:00", "k3": "2025-05-31 21:00"}  # fmt: skip
    (entry,) = [e for e in ingested_files(res.store) if e["file"] == path.name]
    assert entry["reasons"] == {} and entry["gold"] == 3
    assert cli(replay) == 0 and len(read_tier(res.store, "gold/")) == 3  # once per zone
    assert cli(["verify", "--deep"]) == 0


def test_an_empty_delivery_has_its_own_state_and_verifies(
    res: Resources, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 0-byte file (a "no traffic" signal, or an upload that never started) is sealed, kept
    in bronze and ends `empty`: not a format error, not a gap."""
    from pipeline.flows import ingest

    empty = tmp_path / "no-traffic.csv"
    empty.write_bytes(b"")
    key = ingest.copy_into_landing(res.store, empty, "pbx-khi")
    report = ingest.ingest_landing(res, key, as_of=dt.date(2025, 6, 15))
    assert (report.status, report.reason, report.records) == ("empty", "empty_file", 0)
    assert not res.store.exists(key) and not list(res.store.list("quarantine/"))
    capsys.readouterr()
    assert cli(["summary"]) == 0
    assert "EMPTY FILE: no-traffic.csv" in capsys.readouterr().out
    assert cli(["verify"]) == 0
    assert "state            empty: empty_file" in capsys.readouterr().out


def test_a_run_whose_lease_was_taken_over_stops_before_it_publishes(
    res: Resources, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run paused past its lease (or two hosts taking a lapsed lease at once): the one that
    no longer holds it publishes nothing and commits nothing; the holder does."""
    from pipeline.core import layout
    from pipeline.core.lease import LeaseLost
    from pipeline.flows import ingest

    path = tmp_path / "calls.csv"
    path.write_text(_calls(20))
    real = ingest.store_original
    other = json.dumps({"owner": "host_b-1-x", "host": "host_b", "expires": "2999-01-01T00:00:00+00:00"})  # fmt: skip

    def taken_over(*args: object, **kwargs: object) -> object:
        written = real(*args, **kwargs)
        sha = args[3]
        res.store.put_bytes(layout.lease_key(str(sha)), other.encode())  # host B's now
        return written

    monkeypatch.setattr(ingest, "store_original", taken_over)
    with pytest.raises(LeaseLost):
        ingest.ingest_file(res, path, as_of=dt.date(2025, 6, 15))
    assert not list(res.store.list("gold/")) and not list(res.store.list("silver/"))
    [lease] = [o.key for o in res.store.list("leases/")]
    assert json.loads(res.store.get_bytes(lease))["host"] == "host_b"  # left to its holder
    assert not [o for o in res.store.list("seals/") if o.key.endswith(".parse.json")]
    res.store.purge(lease)  # host B finishes (here: lets go) and the file is ingested once
    monkeypatch.setattr(ingest, "store_original", real)
    assert ingest.ingest_file(res, path, as_of=dt.date(2025, 6, 15)).gold == 20


def test_a_replay_reads_times_in_the_zone_the_ingest_read_them_in(
    local_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The zone setting changed (or was removed) after the ingest: a replay for another reason
    re-reads the times as the ingest did, never drops or re-dates kept records."""
    monkeypatch.setenv("CDR_SOURCE_TIMEZONE", "Asia/Karachi")
    monkeypatch.delenv("CDR_DEFAULT_REGION", raising=False)
    path = tmp_path / "khi.csv"
    path.write_text(
        HEADER
        + "k1,2025-06-01 02:00:00,sms,outbound,InfoSMS,+923001234567\n"
        + "k2,2025-06-01 03:00:00,sms,outbound,InfoSMS,03001234568\n"  # national: no region yet
    )
    res = Resources.from_settings(Settings.from_env())
    assert cli(["ingest", "--as-of", "2025-06-15", "--source", "pbx-khi", str(path)]) == 0
    assert _months(res) == {"k1": "2025-05-31 21:00"}
    monkeypatch.delenv("CDR_SOURCE_TIMEZONE")  # the setting is gone since
    replay = ["replay", "--reason", "unparseable_number", "--default-region", "PK", "--as-of", "2025-06-15"]  # fmt: skip
    assert cli(replay) == 0
    assert _months(res) == {"k1": "2025-05-31 21:00", "k2": "2025-05-31 22:00"}
    assert cli(["verify", "--deep"]) == 0


@pytest.mark.parametrize("sep", [";", "\t"])
def test_a_canonical_csv_written_with_semicolons_or_tabs_is_read(
    res: Resources, tmp_path: Path, capsys: pytest.CaptureFixture[str], sep: str
) -> None:
    """Spreadsheets in many locales export with `;` (or tabs): the header says which, and the
    rows are read with it, quoted separators and all; `verify --deep` reads them alike."""
    rows = [
        ["record_id", "event_time", "channel", "direction", "origin", "destination", "status"],
        ["s1", "2025-05-02T10:00:00Z", "sms", "outbound", "InfoSMS", "+923001234567", "ok"],
        ["s2", "2025-05-02T10:01:00Z", "sms", "outbound", "InfoSMS", "+923001234568", f'"a{sep}b"'],
        ["s3", "2025-05-02T10:02:00Z", "sms", "outbound", "InfoSMS"],  # a field short
    ]
    path = tmp_path / "export.csv"
    path.write_text("\n".join(sep.join(r) for r in rows) + "\n")
    _ingest(path)
    gold = read_tier(res.store, "gold/").sort("record_id")
    kept = "a;b" if sep == ";" else "ab"  # a tab inside free text is a control character
    assert gold.select("record_id", "status").rows() == [("s1", "ok"), ("s2", kept)]
    (entry,) = ingested_files(res.store)
    assert entry["format"] == "canonical_csv" and entry["reasons"] == {"wrong_column_count": 1}
    capsys.readouterr()
    assert cli(["verify", "--deep"]) == 0


# --- PBX files as written ------------------------------------------------------------------

_PBX_CALLS = [  # src, channel, dst, dstchannel, context; expected kinds of src and dst
    (
        "1001",
        "PJSIP/1001-00000001",
        "+923001234567",
        "PJSIP/trunk-00000002",
        "from-internal",
        "sip",
        "msisdn",
    ),
    (
        "0101",
        "PJSIP/0101-00000003",
        "1002",
        "PJSIP/1002-00000004",
        "from-internal",
        "sip",
        "sip",
    ),
    (
        "2345678",
        "SIP/2345678-00000005",
        "+923001234569",
        "SIP/trunk-00000006",
        "from-internal",
        "sip",
        "msisdn",
    ),
    (
        "+923001234568",
        "PJSIP/trunk-00000007",
        "70012",
        "PJSIP/70012-0000000a",
        "from-pstn",
        "msisdn",
        "sip",
    ),
    (  # a follow-me: a Local channel carries what was dialled, a mobile number here
        "1003",
        "PJSIP/1003-0000000b",
        "+923001234570",
        "Local/+923001234570@from-internal-0000000c;1",
        "from-internal",
        "sip",
        "msisdn",
    ),
    (
        "alice",
        "PJSIP/alice-00000009",
        "bob",
        "PJSIP/bob-0000000a",
        "from-internal",
        "sip",
        "sip",
    ),
]


@pytest.mark.parametrize("region", ["PK", "US", "GB", "DE"])
def test_pbx_extensions_of_any_length_are_internal_parties_in_every_region(
    local_env: dict[str, str], tmp_path: Path, region: str
) -> None:
    """An extension is the PBX's own endpoint when its call's channel names it (`PJSIP/0101-…`,
    never a `Local/…` channel, which carries what was dialled): a SIP user, tokenised, whatever
    its digits and the region. Read as a number, `0101` was quarantined and `2345678` kept as
    another country's number."""
    lines = [
        f'"acc","{src}","{dst}","{ctx}","","{chan}","{dchan}","Dial","","2025-05-02 10:00:00",'
        f'"2025-05-02 10:00:01","2025-05-02 10:01:00","60","59","ANSWERED","DOCUMENTATION",'
        f'"1746180000.{i}",""'
        for i, (src, chan, dst, dchan, ctx, _, _) in enumerate(_PBX_CALLS)
    ]
    path = tmp_path / "Master.csv"
    path.write_text("\n".join(lines) + "\n")
    res = Resources.from_settings(Settings.from_env())
    assert cli(["ingest", "--as-of", AS_OF, "--default-region", region, str(path)]) == 0
    silver = read_tier(res.store, "silver/").sort("source_line")
    kinds = list(zip(silver["origin_kind"], silver["destination_kind"], strict=True))
    assert kinds == [(o, d) for *_, o, d in _PBX_CALLS]
    gold = read_tier(res.store, "gold/")
    assert len(gold) == len(_PBX_CALLS) and not list(res.store.list("quarantine/rows/"))
    sip = silver.filter(pl.col("origin_kind") == "sip")
    assert sip["origin_country"].null_count() == len(sip)
    values = {v for row in gold.rows() for v in row if isinstance(v, str) and len(v) != 64}
    assert not {v for v in values if "2345678" in v or "0101" in v}


def test_a_freeswitch_caller_in_an_internal_context_is_a_sip_user(
    local_env: dict[str, str], tmp_path: Path
) -> None:
    """The `example` template names no channel: a caller in a context that is not inbound
    (`default`) is the PBX's own user, one in `public` (from outside) is read as a number."""
    rows = [
        ("0123", "default", "+923001234567", "sip"),
        ("+923001234568", "public", "1000", "msisdn"),
        ("03001234569", "default", "+923001234567", "msisdn"),  # 7+ digits: a forwarded number
    ]
    path = tmp_path / "Master.csv"
    path.write_text("".join(
        f'"Ali","{src}","{dst}","{ctx}","2025-05-02 10:00:00","2025-05-02 10:00:01",'
        f'"2025-05-02 10:01:00","60","59","NORMAL_CLEARING","uuid-{i}","","acc","PCMA","PCMA"\n'
        for i, (src, ctx, dst, _) in enumerate(rows)
    ))  # fmt: skip
    res = Resources.from_settings(Settings.from_env())
    assert cli(["ingest", "--as-of", AS_OF, "--default-region", "PK", str(path)]) == 0
    silver = read_tier(res.store, "silver/").sort("source_line")
    assert silver["origin_kind"].to_list() == [kind for *_, kind in rows]


def test_a_file_left_in_landing_names_its_folder_by_label() -> None:
    """A file not yet settled is reported before its folder is checked as a source: a folder
    named like a number is named by its label (the report goes to XCom and to metrics)."""
    import json

    from pipeline.flows import ingest

    report = ingest._not_settled("landing/+923001234567/calls 923001234567.csv", "still being written")  # fmt: skip
    assert report.status == "not_settled" and report.source.startswith("file-")
    assert "1234567" not in json.dumps(report.to_dict())
    assert ingest._not_settled("landing/sftp/up.csv", "x").source == "sftp"

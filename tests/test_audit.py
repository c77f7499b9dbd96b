"""The audit log catches every kind of tampering and names the first bad entry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.core.keys import LocalKeyring
from pipeline.core.store import LocalStore, ObjectStore
from pipeline.proof import audit
from pipeline.proof.audit import append, read_log, verify_log
from pipeline.proof.integrity import sign


@pytest.fixture
def log(tmp_path: Path) -> tuple[ObjectStore, LocalKeyring]:
    store, ring = LocalStore(tmp_path / "store"), LocalKeyring(tmp_path / "keys")
    for i in range(5):
        append(
            store,
            ring.signing_key(),
            "purge_month",
            what={"month": f"2025-0{i + 1}", "objects": i},
            why="12-month rule",
        )
    return store, ring


def _path(store: ObjectStore, seq: int) -> Path:
    return Path(store.uri(f"audit/{seq:012d}.json"))


def test_an_untouched_log_verifies(log: tuple[ObjectStore, LocalKeyring]) -> None:
    store, ring = log
    verdict = verify_log(store, ring.public_key())
    assert verdict.ok and verdict.entries == 5
    assert [e["seq"] for e in read_log(store)] == [1, 2, 3, 4, 5]
    assert read_log(store)[0]["actor"] == audit.actor()


def test_an_edited_entry_is_named(log: tuple[ObjectStore, LocalKeyring]) -> None:
    store, ring = log
    entry = json.loads(_path(store, 3).read_text())
    entry["body"]["what"]["objects"] = 999
    _path(store, 3).write_text(json.dumps(entry))
    verdict = verify_log(store, ring.public_key())
    assert (verdict.ok, verdict.first_bad) == (False, "audit/000000000003.json")
    assert "signature" in (verdict.problem or "")


def test_a_deleted_entry_is_named(log: tuple[ObjectStore, LocalKeyring]) -> None:
    store, ring = log
    _path(store, 2).unlink()
    verdict = verify_log(store, ring.public_key())
    assert (verdict.ok, verdict.first_bad) == (False, "audit/000000000003.json")
    assert "gap" in (verdict.problem or "")


def test_a_deleted_and_renumbered_entry_breaks_the_chain(
    log: tuple[ObjectStore, LocalKeyring],
) -> None:
    store, ring = log
    _path(store, 2).unlink()
    for seq in (3, 4, 5):  # shifting the files down hides the gap but not the chain
        _path(store, seq).rename(_path(store, seq - 1))
    verdict = verify_log(store, ring.public_key())
    assert verdict.first_bad == "audit/000000000002.json"


def test_an_inserted_entry_is_named(log: tuple[ObjectStore, LocalKeyring]) -> None:
    store, ring = log
    forged_body = {"seq": 3, "prev": "0" * 64, "at": "2026-01-01T00:00:00+00:00", "actor": "x",
                   "action": "purge_month", "what": {}, "why": ""}  # fmt: skip
    for seq in (5, 4, 3):
        _path(store, seq).rename(_path(store, seq + 1))
    _path(store, 3).write_text(json.dumps(sign(forged_body, ring.signing_key())))
    verdict = verify_log(store, ring.public_key())
    assert (verdict.ok, verdict.first_bad) == (False, "audit/000000000003.json")
    assert "chain" in (verdict.problem or "")


def test_swapped_entries_are_named(log: tuple[ObjectStore, LocalKeyring]) -> None:
    store, ring = log
    a, b = _path(store, 2).read_text(), _path(store, 3).read_text()
    _path(store, 2).write_text(b)
    _path(store, 3).write_text(a)
    verdict = verify_log(store, ring.public_key())
    assert (verdict.ok, verdict.first_bad) == (False, "audit/000000000002.json")


def test_an_entry_signed_with_another_key_is_named(log: tuple[ObjectStore, LocalKeyring], tmp_path: Path) -> None:  # fmt: skip
    store, ring = log
    other = LocalKeyring(tmp_path / "other").signing_key()
    body = json.loads(_path(store, 4).read_text())["body"]
    _path(store, 4).write_text(json.dumps(sign(body, other)))
    assert verify_log(store, ring.public_key()).first_bad == "audit/000000000004.json"


def test_racing_writers_never_overwrite_each_other(tmp_path: Path) -> None:
    import threading

    store, ring = LocalStore(tmp_path / "s"), LocalKeyring(tmp_path / "k")
    key = ring.signing_key()
    threads = [threading.Thread(target=append, args=(store, key, "seal"), kwargs={"what": {"n": i}}) for i in range(12)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert verify_log(store, ring.public_key()).entries == 12
    assert sorted(e["what"]["n"] for e in read_log(store)) == list(range(12))


def test_one_event_is_recorded_once_however_often_it_is_appended(tmp_path: Path) -> None:
    store, ring = LocalStore(tmp_path / "s"), LocalKeyring(tmp_path / "k")
    first = append(store, ring.signing_key(), "seal", what={"n": 1}, event="seal:abc")
    again = append(store, ring.signing_key(), "seal", what={"n": 1}, event="seal:abc")
    append(store, ring.signing_key(), "seal", what={"n": 2}, event="seal:def")
    assert again == first
    assert [e["event"] for e in read_log(store)] == ["seal:abc", "seal:def"]
    assert audit.find_event(store, "seal:abc") == first
    assert audit.find_event(store, "seal:xyz") is None


def test_two_entries_with_one_event_are_flagged(tmp_path: Path) -> None:
    store, ring = LocalStore(tmp_path / "s"), LocalKeyring(tmp_path / "k")
    append(store, ring.signing_key(), "ingest", what={}, event="ingest:abc")
    append(store, ring.signing_key(), "other", what={}, event="other:1")
    # A second entry for the same event, chained properly (as an old writer's retry made it).
    last = json.loads(_path(store, 2).read_text())
    body = {"seq": 3, "prev": audit.entry_digest(last), "at": "2026-01-01T00:00:00+00:00",
            "actor": "x", "action": "ingest", "event": "ingest:abc", "what": {}, "why": ""}  # fmt: skip
    _path(store, 3).write_text(json.dumps(sign(body, ring.signing_key())))
    verdict = verify_log(store, ring.public_key())
    assert (verdict.ok, verdict.first_bad) == (False, "audit/000000000003.json")
    assert "recorded twice" in (verdict.problem or "")


def test_racing_writers_of_one_event_write_it_once(tmp_path: Path) -> None:
    import threading

    store, ring = LocalStore(tmp_path / "s"), LocalKeyring(tmp_path / "k")
    key = ring.signing_key()
    threads = [threading.Thread(target=append, args=(store, key, "ingest"), kwargs={"what": {}, "event": "ingest:same"}) for _ in range(8)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [e["event"] for e in read_log(store)] == ["ingest:same"]


@pytest.mark.s3
def test_a_create_if_absent_write_whose_answer_is_lost_is_not_written_twice(
    moto_endpoint: str, s3_buckets: tuple[str, str], tmp_path: Path
) -> None:
    from pipeline.core.store import open_store
    from tests.faultproxy import FaultPlan, FaultProxy, once

    data, _ = s3_buckets
    ring = LocalKeyring(tmp_path / "k")
    # The first conditional PUT of an entry reaches S3, its answer is lost; boto3 retries: 412.
    plan = FaultPlan(rules=[once("PUT", "/audit/", "lost", header="If-None-Match")])
    with FaultProxy(moto_endpoint, plan) as url:
        store = open_store(f"s3://{data}/cdr", url)
        append(store, ring.signing_key(), "seal", what={"n": 1}, event="seal:abc")
        append(store, ring.signing_key(), "seal", what={"n": 2}, event="seal:def")
    assert ("PUT", f"/{data}/cdr/audit/000000000001.json", "lost") in plan.seen
    assert [e["event"] for e in read_log(store)] == ["seal:abc", "seal:def"]
    assert verify_log(store, ring.public_key()).ok


class _CountingStore(LocalStore):
    """A folder store that counts the audit keys its listings hand out."""

    listed = 0

    def list(self, prefix: str):  # type: ignore[no-untyped-def]
        return self._counted(super().list(prefix))

    def list_after(self, prefix: str, after: str):  # type: ignore[no-untyped-def]
        return self._counted(super().list_after(prefix, after))

    def _counted(self, infos):  # type: ignore[no-untyped-def]
        for info in infos:
            self.listed += info.key.startswith("audit/")
            yield info


@pytest.mark.parametrize("kind", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_an_append_reads_only_the_entries_written_since_the_last_one_it_saw(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    """A log of thousands of files a day must not be listed whole for each entry. Another
    writer's entries (a second store object, as another process or host) are still found and
    chained to, and a log emptied under the same store object is listed whole again."""
    ring = LocalKeyring(tmp_path / "keys")
    if kind == "s3":
        from pipeline.core.store import open_store

        endpoint = request.getfixturevalue("moto_endpoint")
        data, _ = request.getfixturevalue("s3_buckets")
        mine, other = (open_store(f"s3://{data}/cdr", endpoint) for _ in range(2))
        before = mine.list
        seen: list[str] = []
        mine.list = lambda prefix: (seen.append(i.key) or i for i in before(prefix))  # type: ignore[method-assign]
        after = mine.list_after
        mine.list_after = lambda prefix, start: (
            seen.append(i.key) or i for i in after(prefix, start)
        )  # type: ignore[method-assign]
        count = lambda: sum(k.startswith("audit/") for k in seen)  # noqa: E731
    else:
        mine, other = _CountingStore(tmp_path / "store"), LocalStore(tmp_path / "store")
        count = lambda: mine.listed  # noqa: E731
    for i in range(40):
        append(mine, ring.signing_key(), "seal", what={"n": i}, event=f"seal:{i}")
    append(other, ring.signing_key(), "seal", what={"n": "other"}, event="seal:other")
    start = count()
    entry = append(mine, ring.signing_key(), "seal", what={"n": 41}, event="seal:41")
    assert entry["body"]["seq"] == 42  # chained after the other writer's entry
    assert count() - start <= 2  # the other writer's entry and its own, not 41 entries
    assert verify_log(mine, ring.public_key()).ok
    if kind == "local":
        import shutil

        shutil.rmtree(tmp_path / "store" / "audit")
        again = append(mine, ring.signing_key(), "seal", what={"n": 0}, event="seal:new-log")
        assert again["body"]["seq"] == 1 and verify_log(mine, ring.public_key()).ok


def test_an_entry_names_the_person_who_acted_and_apart_the_process(
    log: tuple[ObjectStore, LocalKeyring], monkeypatch: pytest.MonkeyPatch
) -> None:
    import getpass

    store, ring = log
    monkeypatch.delenv("CDR_ACTOR", raising=False)
    monkeypatch.setattr(audit, "_task_resolvers", [])  # a shell: no Airflow task around
    shell = audit.append(store, ring.signing_key(), "note", what={})["body"]
    assert shell["actor"] == f"user:{getpass.getuser()}"
    assert shell["process"].startswith(f"{getpass.getuser()}@")
    with audit.acting_as("a.khan"):
        with audit.acting_as("b.ali"):
            inner = audit.append(store, ring.signing_key(), "note", what={})["body"]
        outer = audit.append(store, ring.signing_key(), "note", what={})["body"]
        with audit.acting_as("  "):  # nobody named: the enclosing person still acts
            blank = audit.append(store, ring.signing_key(), "note", what={})["body"]
    assert (inner["actor"], outer["actor"], blank["actor"]) == ("b.ali", "a.khan", "a.khan")
    assert audit.actor() == f"user:{getpass.getuser()}"
    monkeypatch.setattr(audit, "_task_resolvers", [lambda: ("dag_user", "cdr_ingest/r1/ingest")])
    in_task = audit.append(store, ring.signing_key(), "note", what={})["body"]
    assert in_task["actor"] == "dag_user"
    assert in_task["process"].endswith(" airflow:cdr_ingest/r1/ingest")
    with audit.acting_as("approver"):  # a person named by the caller comes first
        assert audit.actor() == "approver"
    assert verify_log(store, ring.public_key()).ok

"""Ingest on arrival: S3 notifications read as landing references, the queue's trigger run for
real against moto's S3 and SQS on 127.0.0.1, and the watched DAG end to end (slow)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import urllib.error
from pathlib import Path

import pytest

from pipeline.core import layout
from pipeline.core.store import LocalStore, ObjectStore
from pipeline.flows.arrivals import notified_refs
from pipeline.flows.ingest_batches import landing_batches
from tests.airflow_ui import UI, api, running_ui
from tests.helpers import read_tier

NUMBER = "+923001234567"
STORE = "s3://data/cdr"


def _s3_event(key: str, bucket: str = "data", event: str = "ObjectCreated:Put") -> str:
    """A notification body as S3 writes it (the key form-encoded)."""
    from urllib.parse import quote_plus

    record = {"eventName": event, "s3": {"bucket": {"name": bucket}, "object": {"key": quote_plus(key)}}}  # fmt: skip
    return json.dumps({"Records": [record]})


def test_notifications_name_landing_files_by_reference_only() -> None:
    hostile = f"cdr/landing/switch a/calls {NUMBER}.csv"
    bodies = [
        _s3_event("cdr/landing/sw1/calls-0001.csv"),
        _s3_event(hostile),
        json.dumps({"Type": "Notification", "Message": _s3_event("cdr/landing/sw1/b.csv")}),  # SNS
        _s3_event("cdr/landing/sw1/calls-0001.csv"),  # a duplicate
        _s3_event("cdr/silver/cdr/x.parquet"),  # not landing
        _s3_event("other/landing/sw1/c.csv"),  # another prefix
        _s3_event("cdr/landing/sw1/d.csv", bucket="elsewhere"),
        _s3_event("cdr/landing/sw1/e.csv", event="ObjectRemoved:Delete"),
        json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "data"}),
        "not json",
        json.dumps({"Records": "nonsense"}),
        json.dumps({"Records": [{"eventName": "ObjectCreated:Put", "s3": {"object": {}}}]}),
        "[" * 100_000,  # nested past the JSON parser: that message only is skipped
        json.dumps([1, 2]),
    ]
    refs = notified_refs(bodies, STORE)
    assert refs == [
        "landing/sw1/calls-0001.csv",
        layout.landing_ref("landing/switch a/calls +923001234567.csv"),
        "landing/sw1/b.csv",
    ]
    assert NUMBER[1:] not in json.dumps(refs) and "923001234567"[-7:] not in json.dumps(refs)
    # a bucket without a prefix; a folder store has no bucket: nothing is its notification
    assert notified_refs([_s3_event("landing/x/y.csv")], "s3://data") == ["landing/x/y.csv"]
    assert notified_refs([_s3_event("landing/x/y.csv")], "/var/store") == []


def test_only_the_notified_files_still_in_landing_are_batched(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    for name in ("a.csv", "b.csv", f"{NUMBER}.csv"):
        store.put_bytes(f"landing/sw/{name}", b"x" * 10)
    named = {"landing/sw/b.csv", layout.landing_ref(f"landing/sw/{NUMBER}.csv"), "landing/sw/gone.csv"}  # fmt: skip
    batches = landing_batches(store, 50, 1 << 20, only=named)
    assert [sorted(b["refs"]) for b in batches] == [sorted(named - {"landing/sw/gone.csv"})]
    assert landing_batches(store, 50, 1 << 20, only=set()) == []


@pytest.fixture
def queue(moto_endpoint: str, s3_buckets: tuple[str, str]) -> str:
    """An SQS queue the data bucket notifies of every object created under `cdr/landing/`."""
    import boto3

    sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1")
    url = sqs.create_queue(QueueName=f"arrivals-{s3_buckets[0]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]  # fmt: skip
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    rule = {"Key": {"FilterRules": [{"Name": "prefix", "Value": "cdr/landing/"}]}}
    s3.put_bucket_notification_configuration(
        Bucket=s3_buckets[0],
        NotificationConfiguration={
            "QueueConfigurations": [
                {"QueueArn": arn, "Events": ["s3:ObjectCreated:*"], "Filter": rule}
            ]
        },
    )
    return str(url)


def test_the_trigger_turns_the_buckets_notifications_into_references(
    queue: str, moto_endpoint: str, s3_buckets: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real SQS trigger (common-messaging, Amazon provider) polls moto's queue; its event
    holds references, never the key with the number, and the messages are gone from the queue."""
    import boto3

    from cdr_airflow.arrival_trigger import LandingArrivalTrigger

    conn = {"conn_type": "aws", "extra": {"endpoint_url": moto_endpoint, "region_name": "us-east-1"}}  # fmt: skip
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(conn))
    data = s3_buckets[0]
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    s3.put_object(Bucket=data, Key="cdr/silver/ignored.parquet", Body=b"x")  # not notified
    s3.put_object(Bucket=data, Key=f"cdr/landing/sw1/{NUMBER}.csv", Body=b"a,b\n")
    s3.put_object(Bucket=data, Key="cdr/landing/sw1/plain.csv", Body=b"a,b\n")

    trigger = LandingArrivalTrigger(store=f"s3://{data}/cdr", sqs_queue=queue, waiter_delay=1)
    path, kwargs = trigger.serialize()
    assert path == "cdr_airflow.arrival_trigger.LandingArrivalTrigger"  # the triggerer runs it
    again = LandingArrivalTrigger(**kwargs)

    async def first_event() -> dict:  # type: ignore[type-arg]
        events = again.run()
        event = await asyncio.wait_for(anext(events), timeout=60)
        await events.aclose()
        return dict(event.payload)

    payloads = [asyncio.run(first_event())]
    while len({r for p in payloads for r in p["refs"]}) < 2:  # moto may hand them over twice
        payloads.append(asyncio.run(first_event()))
    refs = {r for p in payloads for r in p["refs"]}
    assert refs == {layout.landing_ref(f"landing/sw1/{NUMBER}.csv"), "landing/sw1/plain.csv"}
    assert all(set(p) == {"refs", "messages"} for p in payloads)  # nothing else is kept
    assert "1234567" not in json.dumps(payloads)
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1")
    left = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=0)
    assert "Messages" not in left  # received and deleted: S3's test event too


RUN_SECONDS = 240


def _runs(ui: UI, dag_id: str) -> list[dict]:  # type: ignore[type-arg]
    return list(api(ui, "GET", f"/dags/{dag_id}/dagRuns?order_by=run_after")["dag_runs"])


def _finished_runs(ui: UI, dag_id: str, count: int) -> list[dict]:  # type: ignore[type-arg]
    """The DAG's runs once `count` of them have finished (success or failed)."""
    deadline = time.monotonic() + RUN_SECONDS
    runs: list[dict] = []  # type: ignore[type-arg]
    while time.monotonic() < deadline:
        runs = _runs(ui, dag_id)
        if sum(r["state"] in ("success", "failed") for r in runs) >= count:
            return runs
        time.sleep(1)
    raise AssertionError(f"{dag_id}: {len(runs)} run(s), {[r['state'] for r in runs]}")


def _unpause(ui: UI, dag_id: str) -> None:
    """Unpaused once the dag-processor has parsed it."""
    deadline = time.monotonic() + RUN_SECONDS
    while time.monotonic() < deadline:
        try:
            api(ui, "PATCH", f"/dags/{dag_id}", {"is_paused": False})
            return
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise
        time.sleep(1)
    raise AssertionError(f"{dag_id} never parsed")


def _parsed(store: ObjectStore) -> int:
    """How many files were ingested (each has one parse commitment)."""
    return sum(o.key.endswith(".parse.json") for o in store.list(layout.SEALS))


@pytest.mark.slow
@pytest.mark.airflow
def test_a_file_put_in_the_bucket_is_ingested_on_arrival_exactly_once(
    tmp_path: Path, s3_env: dict[str, str], queue: str, moto_endpoint: str
) -> None:
    """Airflow's four components (`make ui`) on a store in moto's bucket: a file put in
    landing/ is ingested by `cdr_ingest_on_arrival` through the queue's notification, without
    the hourly DAG; a duplicate notification ingests nothing again; a file whose notification
    was lost is taken by the hourly sweep. Each file once; no number in Airflow's records."""
    import boto3

    from pipeline.core.config import Settings
    from pipeline.core.resources import Resources
    from pipeline.records.synth import generate

    conn = {"conn_type": "aws", "extra": {"endpoint_url": moto_endpoint, "region_name": "us-east-1"}}  # fmt: skip
    settings = {
        **s3_env,
        "CDR_DEFAULT_REGION": "PK",
        "CDR_ARRIVALS_QUEUE": queue,
        "CDR_ARRIVALS_POLL_SECONDS": "2",
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(conn),
    }
    bucket, prefix = s3_env["CDR_STORE"][len("s3://") :].split("/", 1)
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1")
    files = {}
    for name, seed in ((f"calls {NUMBER}.csv", 1), ("late.csv", 2)):
        g = generate("canonical_csv", tmp_path / f"{seed}.csv", 200, seed=seed,
                     start=dt.date(2026, 9, 1), months=2, bad_share=0, id_prefix=f"f{seed}-")  # fmt: skip
        files[name] = g.path.read_bytes()
    first_key = f"{prefix}/landing/sw1/calls {NUMBER}.csv"

    with running_ui(tmp_path / "ui", settings) as ui:
        store = Resources.from_settings(Settings.from_env()).store
        _unpause(ui, "cdr_ingest_on_arrival")
        s3.put_object(Bucket=bucket, Key=first_key, Body=files[f"calls {NUMBER}.csv"])
        (run,) = _finished_runs(ui, "cdr_ingest_on_arrival", 1)
        assert run["state"] == "success", run
        assert _parsed(store) == 1 and not list(store.list(layout.LANDING))
        assert _runs(ui, "cdr_ingest") == []  # the hourly DAG is paused: it took nothing
        gold = len(read_tier(store, layout.GOLD))
        assert gold == 200

        # the same notification again (S3 delivers at least once): a run that takes nothing
        sqs.send_message(QueueUrl=queue, MessageBody=_s3_event(first_key, bucket=bucket))
        runs = _finished_runs(ui, "cdr_ingest_on_arrival", 2)
        assert [r["state"] for r in runs] == ["success", "success"]
        assert _parsed(store) == 1 and len(read_tier(store, layout.GOLD)) == gold

        # a lost notification: nothing runs on arrival; the hourly sweep ingests the file
        s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={})
        s3.put_object(Bucket=bucket, Key=f"{prefix}/landing/sw2/late.csv", Body=files["late.csv"])
        time.sleep(8)  # four polls of the queue
        assert len(_runs(ui, "cdr_ingest_on_arrival")) == 2 and _parsed(store) == 1
        _unpause(ui, "cdr_ingest")
        api(ui, "POST", "/dags/cdr_ingest/dagRuns", {"logical_date": None})
        hourly = _finished_runs(ui, "cdr_ingest", 1)
        assert all(r["state"] == "success" for r in hourly if r["state"] != "queued")
        deadline = time.monotonic() + RUN_SECONDS
        while _parsed(store) < 2 and time.monotonic() < deadline:
            time.sleep(1)
        assert _parsed(store) == 2 and len(read_tier(store, layout.GOLD)) == 400

        # what Airflow keeps of the runs (asset events, XCom) names no number
        events = api(ui, "GET", "/assets/events?limit=100")["asset_events"]
        assert events and "1234567" not in json.dumps(events)


def test_the_trigger_outlives_a_queue_that_does_not_answer(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """A queue that is missing (or a network that fails) is polled again, not the end of the
    watch: ingest on arrival resumes by itself once the queue answers."""
    import boto3

    from cdr_airflow.arrival_trigger import LandingArrivalTrigger

    conn = {"conn_type": "aws", "extra": {"endpoint_url": moto_endpoint, "region_name": "us-east-1"}}  # fmt: skip
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(conn))
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1")
    name = f"late-{time.monotonic_ns()}"
    url = f"{moto_endpoint}/123456789012/{name}"
    trigger = LandingArrivalTrigger(store="s3://data/cdr", sqs_queue=url, waiter_delay=1)

    async def watch() -> dict:  # type: ignore[type-arg]
        events = trigger.run()
        waiting = asyncio.ensure_future(anext(events))
        await asyncio.sleep(2.5)  # two polls of a queue that does not exist yet
        assert not waiting.done()
        sqs.create_queue(QueueName=name)
        sqs.send_message(QueueUrl=url, MessageBody=_s3_event("cdr/landing/sw1/a.csv"))
        event = await asyncio.wait_for(waiting, timeout=30)
        await events.aclose()
        return dict(event.payload)

    assert asyncio.run(watch())["refs"] == ["landing/sw1/a.csv"]
    said = "".join(capfd.readouterr())
    assert "polling the arrivals queue failed" in said and "NonExistentQueue" in said


def test_refs_come_from_the_watchers_events_and_from_events_posted_by_hand() -> None:
    from types import SimpleNamespace as Event

    from cdr_airflow.arrivals import arrived_refs

    events = {"cdr_landing_arrivals": [
        Event(extra={"from_trigger": True, "payload": {"refs": ["landing/a/x.csv"], "messages": 1}}),
        Event(extra={"refs": ["landing/a/y.csv", "landing/a/x.csv"]}),  # posted through the API
        Event(extra={"payload": "not a mapping"}), Event(extra=None), Event(extra={"refs": "x"}),
    ]}  # fmt: skip
    assert arrived_refs(events) == ["landing/a/x.csv", "landing/a/y.csv"]

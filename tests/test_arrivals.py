"""Ingest on arrival: S3 notifications read as landing references, the queue's trigger run for
real against moto's S3 and SQS on 127.0.0.1, and the watched DAG end to end (slow)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from pipeline.core import layout
from pipeline.core.store import LocalStore
from pipeline.flows.arrivals import notified_refs
from pipeline.flows.ingest_batches import landing_batches

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

    from cdr_airflow.arrivals import LandingArrivalTrigger

    conn = {"conn_type": "aws", "extra": {"endpoint_url": moto_endpoint, "region_name": "us-east-1"}}  # fmt: skip
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(conn))
    data = s3_buckets[0]
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    s3.put_object(Bucket=data, Key="cdr/silver/ignored.parquet", Body=b"x")  # not notified
    s3.put_object(Bucket=data, Key=f"cdr/landing/sw1/{NUMBER}.csv", Body=b"a,b\n")
    s3.put_object(Bucket=data, Key="cdr/landing/sw1/plain.csv", Body=b"a,b\n")

    trigger = LandingArrivalTrigger(store=f"s3://{data}/cdr", sqs_queue=queue, waiter_delay=1)
    path, kwargs = trigger.serialize()
    assert path == "cdr_airflow.arrivals.LandingArrivalTrigger"  # the triggerer runs this class
    again = LandingArrivalTrigger(**kwargs)

    async def first_event() -> dict:  # type: ignore[type-arg]
        events = again.run()
        event = await asyncio.wait_for(anext(events), timeout=60)
        await events.aclose()
        return dict(event.payload)

    payload = asyncio.run(first_event())
    refs = set(payload["refs"])
    while len(refs) < 2:  # moto may hand the messages over in two receives
        refs |= set(asyncio.run(first_event())["refs"])
    assert refs == {layout.landing_ref(f"landing/sw1/{NUMBER}.csv"), "landing/sw1/plain.csv"}
    assert "1234567" not in json.dumps(payload)
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1")
    left = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=0)
    assert "Messages" not in left  # received and deleted: S3's test event too

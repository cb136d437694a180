"""The SQS bridge against moto's real SQS: notifications in, events out, and messages
deleted only once their event was accepted."""

from __future__ import annotations

import json
import uuid
from typing import Any

import boto3
import pytest
from prefect.events import Event

from deployments.bridge import Bridge, parse_message
from deployments.events import MAX_KEYS_PER_EVENT, objects_created_events, parse_object_uri


def s3_notification(bucket: str, *keys: str, event: str = "ObjectCreated:Put") -> str:
    records = [
        {"eventName": event, "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}
        for key in keys
    ]
    return json.dumps({"Records": records})


@pytest.fixture
def queue(s3_endpoint: str) -> tuple[Any, str]:
    sqs = boto3.client("sqs")
    url = sqs.create_queue(
        QueueName=f"bridge-{uuid.uuid4().hex[:8]}", Attributes={"VisibilityTimeout": "1"}
    )["QueueUrl"]
    return sqs, url


def queued(sqs: Any, url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def test_notifications_become_one_event_per_bucket_with_decoded_keys(queue) -> None:
    sqs, url = queue
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"Event": "s3:TestEvent"}))
    sqs.send_message(
        QueueUrl=url, MessageBody=s3_notification("raw", "inbox/bbc/Gr%C3%A8ve+au+port.html")
    )
    sqs.send_message(
        QueueUrl=url, MessageBody=s3_notification("raw", "inbox/bbc/b.txt", "inbox/bbc/c.txt")
    )
    sqs.send_message(
        QueueUrl=url,
        MessageBody=s3_notification("raw", "inbox/bbc/gone.txt", event="ObjectRemoved:Delete"),
    )
    wrapped = {"Type": "Notification", "Message": s3_notification("other", "x/y.json")}
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(wrapped))
    sent: list[Event] = []

    forwarded = Bridge(sqs, url, sent.extend, wait_seconds=1).poll_once()

    assert forwarded == 4
    payloads = sorted((e.payload["bucket"], e.payload["object_keys"]) for e in sent)
    assert payloads == [
        ("other", ["x/y.json"]),
        ("raw", ["inbox/bbc/Grève au port.html", "inbox/bbc/b.txt", "inbox/bbc/c.txt"]),
    ]
    assert {e.resource.id for e in sent} == {"s3.bucket.raw", "s3.bucket.other"}
    assert queued(sqs, url) == 0, "every handled message, test event included, is deleted"


def test_messages_stay_queued_until_the_event_is_accepted(queue) -> None:
    sqs, url = queue
    sqs.send_message(QueueUrl=url, MessageBody=s3_notification("raw", "inbox/a.txt"))
    sqs.send_message(QueueUrl=url, MessageBody="not json at all")

    def api_down(events: list[Event]) -> None:
        raise ConnectionError("Prefect API unreachable")

    with pytest.raises(ConnectionError):
        Bridge(sqs, url, api_down, wait_seconds=1).poll_once()
    assert queued(sqs, url) == 2

    sent: list[Event] = []
    # After the visibility timeout the message is redelivered and forwarded; the
    # unparseable one stays for the queue's dead-letter policy.
    Bridge(sqs, url, sent.extend, wait_seconds=2, batch_window=2).poll_once()
    assert [e.payload["object_keys"] for e in sent] == [["inbox/a.txt"]]
    assert queued(sqs, url) == 1


def test_event_shape() -> None:
    keys = [f"k/{i}.txt" for i in range(MAX_KEYS_PER_EVENT + 1)]
    events = objects_created_events("raw", keys + keys[:5], origin=["m1", "m2"])
    assert [len(e.payload["object_keys"]) for e in events] == [MAX_KEYS_PER_EVENT, 1]
    again = objects_created_events("raw", keys, origin=["m2", "m1"])
    assert [e.id for e in events] == [e.id for e in again], "same messages, same event ids"
    assert parse_object_uri("s3://raw/inbox/a b.txt") == ("raw", "inbox/a b.txt")
    with pytest.raises(ValueError, match="one object"):
        parse_object_uri("s3://raw/inbox/")
    assert (
        parse_message(
            {"MessageId": "m", "ReceiptHandle": "r", "Body": json.dumps({"Event": "s3:TestEvent"})}
        ).objects
        == []
    )

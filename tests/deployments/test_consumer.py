"""The event consumer (`newsflow listen`): against moto's real SQS with a plain function as
its ingest (what it receives, holds, retries and deletes), then in the session's deployed
stack under a burst of uploads (processes bounded, every object once)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import boto3
import pytest
from newsflow.deployments.consumer import Consumer, keys_to_ingest, parse_message
from newsflow.deployments.events import MAX_KEYS_PER_EVENT, objects_created_events, parse_object_uri
from newsflow.tasks.s3 import ObjectRef, S3Location
from newsflow.tasks.settings import DeploymentSettings

from tests.deployments.conftest import (
    LISTEN_WORKERS,
    Stack,
    processes_of,
    queued_messages,
    wait_until,
)
from tests.deployments.test_deployed import (
    assert_each_input_once,
    event_runs,
    keys_in_lake,
    ledger_counts,
    runs_of,
    upload,
)

INBOX = S3Location.parse("s3://raw/inbox/")


def s3_notification(bucket: str, *keys: str, event: str = "ObjectCreated:Put") -> str:
    records = [
        {"eventName": event, "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}
        for key in keys
    ]
    return json.dumps({"Records": records})


def eventbridge_created(bucket: str, details: dict[str, Any]) -> dict[str, Any]:
    """An EventBridge `Object Created` event from S3, as a rule targeting a queue sends it."""
    return {
        "version": "0",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "detail": {"bucket": {"name": bucket}, "object": details, "reason": "PutObject"},
    }


def settings(**limits: Any) -> DeploymentSettings:
    return DeploymentSettings(
        input_uri=str(INBOX), output_uri="/unused", events_wait_seconds=1, **limits
    )


@contextmanager
def consuming(consumer: Consumer, *releases: threading.Event) -> Iterator[None]:
    """`consumer.run()` in a thread for the block; then a stop, the `releases` set (so
    that runs held in `ingest` end), and the consumer must have returned."""
    running = threading.Thread(target=consumer.run)
    running.start()
    try:
        yield
    finally:
        consumer.stop()
        for release in releases:
            release.set()
        running.join(timeout=30)
    assert not running.is_alive()


@pytest.fixture
def queue(s3_endpoint: str) -> tuple[Any, str]:
    sqs = boto3.client("sqs")
    return sqs, sqs.create_queue(QueueName=f"consumer-{uuid.uuid4().hex[:8]}")["QueueUrl"]


def visible(sqs: Any, url: str) -> int:
    """Messages another consumer could receive now."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def test_one_micro_batch_of_decoded_keys_then_every_handled_message_deleted(queue) -> None:
    sqs, url = queue
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"Event": "s3:TestEvent"}))
    sqs.send_message(
        QueueUrl=url, MessageBody=s3_notification("raw", "inbox/bbc/Gr%C3%A8ve+au+port.html")
    )
    sqs.send_message(
        QueueUrl=url, MessageBody=s3_notification("raw", "inbox/bbc/b.txt", "inbox/bbc/c.txt")
    )
    sqs.send_message(QueueUrl=url, MessageBody=s3_notification("raw", "inbox/bbc/b.txt"))
    sqs.send_message(
        QueueUrl=url,
        MessageBody=s3_notification("raw", "inbox/bbc/gone.txt", event="ObjectRemoved:Delete"),
    )
    wrapped = {"Type": "Notification", "Message": s3_notification("raw", "inbox/wire/d.json")}
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(wrapped))
    eventbridge = eventbridge_created(
        "raw", {"key": "inbox/wire/2026-12-05T10:00:00.html", "size": 10}
    )
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(eventbridge))
    deleted = {**eventbridge, "detail-type": "Object Deleted"}
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(deleted))
    sqs.send_message(QueueUrl=url, MessageBody=s3_notification("raw", "lake/articles/x.parquet"))
    sqs.send_message(QueueUrl=url, MessageBody=s3_notification("other", "inbox/y.txt"))
    sqs.send_message(QueueUrl=url, MessageBody="not json at all")
    batches: list[list[str]] = []

    def ingest(keys: list[str]) -> dict[str, Any]:
        assert visible(sqs, url) == 0, "messages visible to others while their batch runs"
        batches.append(keys)
        return {"objects_new": len(keys)}

    committed = Consumer(sqs, url, INBOX, ingest, settings()).run_once()

    assert committed == 5
    assert [sorted(keys) for keys in batches] == [
        [
            "inbox/bbc/Grève au port.html",
            "inbox/bbc/b.txt",
            "inbox/bbc/c.txt",
            "inbox/wire/2026-12-05T10:00:00.html",
            "inbox/wire/d.json",
        ]
    ]
    # Handled messages, ignored objects' included, are deleted; the one that is not an S3
    # notification is left for the queue's dead-letter policy.
    assert queued_messages(sqs, url) == 1


def test_a_failing_run_is_retried_with_its_messages_held_then_they_are_deleted(queue) -> None:
    sqs, url = queue
    for i in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=s3_notification("raw", f"inbox/a{i}.txt"))
    attempts: list[float] = []

    def ingest(keys: list[str]) -> dict[str, Any]:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise ConnectionError("Prefect API unreachable")
        # Longer than the visibility timeout: only its renewal keeps others off them.
        time.sleep(8)
        assert visible(sqs, url) == 0
        return {}

    consumer = Consumer(sqs, url, INBOX, ingest, settings(events_visibility_seconds=6))
    assert consumer.run_once() == 3

    assert len(attempts) == 3
    assert [round(b - a) for a, b in pairwise(attempts)] == [1, 2]
    assert queued_messages(sqs, url) == 0


def test_a_stop_while_the_run_keeps_failing_hands_the_messages_back(queue) -> None:
    sqs, url = queue
    sqs.send_message(QueueUrl=url, MessageBody=s3_notification("raw", "inbox/a.txt"))

    def ingest(keys: list[str]) -> dict[str, Any]:
        raise ConnectionError("S3 unreachable")

    consumer = Consumer(sqs, url, INBOX, ingest, settings(events_visibility_seconds=600))
    threading.Timer(1.5, consumer.stop).start()
    assert consumer.run_once() == 0

    assert visible(sqs, url) == 1, "handed back at once, not after the visibility timeout"
    (message,) = sqs.receive_message(QueueUrl=url)["Messages"]
    assert parse_message(message).objects == [("raw", "inbox/a.txt")]


def test_a_notification_announces_the_version_it_names() -> None:
    record = {
        "eventName": "ObjectCreated:Put",
        "eventTime": "2026-12-05T10:00:00.250Z",
        "s3": {
            "bucket": {"name": "raw"},
            "object": {"key": "inbox/a+b.html", "size": 2048, "eTag": "9b2cf535f27731c9"},
        },
    }
    unsaid = {**record, "s3": {"bucket": {"name": "raw"}, "object": {"key": "inbox/c.html"}}}
    eventbridge = {
        **eventbridge_created(
            "raw", {"key": "inbox/d.html", "size": 10, "etag": "d41d8cd98f00b204"}
        ),
        "time": "2026-12-05T10:00:01Z",
    }
    messages = [
        {"MessageId": str(i), "ReceiptHandle": str(i), "Body": json.dumps(body)}
        for i, body in enumerate([{"Records": [record, unsaid]}, eventbridge])
    ]
    notifications = [parse_message(m) for m in messages]

    at = datetime(2026, 12, 5, 10, 0, 0, 250000, tzinfo=UTC)
    a = ObjectRef("inbox/a b.html", "9b2cf535f27731c9", 2048, at)
    d = ObjectRef(
        "inbox/d.html", "d41d8cd98f00b204", 10, datetime(2026, 12, 5, 10, 0, 1, tzinfo=UTC)
    )
    assert keys_to_ingest(notifications, INBOX) == [a, "inbox/c.html", d]
    # A second upload of a key in the same micro-batch: the run takes its current version.
    newer = {**record, "s3": {**record["s3"], "object": {**record["s3"]["object"], "eTag": "e2"}}}
    again = parse_message(
        {"MessageId": "9", "ReceiptHandle": "9", "Body": json.dumps({"Records": [newer]})}
    )
    assert keys_to_ingest([*notifications, again], INBOX) == ["inbox/a b.html", "inbox/c.html", d]


def test_the_next_micro_batch_is_received_while_one_runs_and_a_stop_hands_it_back(
    queue,
) -> None:
    sqs, url = queue
    for i in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=s3_notification("raw", f"inbox/a{i}.txt"))
    batches: list[list[str]] = []
    release = threading.Event()

    def ingest(keys: list[str]) -> dict[str, Any]:
        if not batches:  # more arrive while the first runs, and are taken meanwhile
            # In one message: three sent apart may be received apart, the first alone
            # while the others are still on their way, and the rest only after this run.
            later = [f"inbox/b{i}.txt" for i in range(3)]
            sqs.send_message(QueueUrl=url, MessageBody=s3_notification("raw", *later))
            wait_until(lambda: visible(sqs, url) == 0, 20, "the next micro-batch received")
        batches.append(sorted(keys))
        if len(batches) == 2:
            sqs.send_message(QueueUrl=url, MessageBody=s3_notification("raw", "inbox/c.txt"))
            release.wait(20)
        return {}

    consumer = Consumer(sqs, url, INBOX, ingest, settings(events_runs=1))
    with consuming(consumer, release):
        wait_until(lambda: len(batches) == 2, 30, "two micro-batches")
        wait_until(lambda: visible(sqs, url) == 0, 20, "the third received while the second runs")
    assert batches == [[f"inbox/a{i}.txt" for i in range(3)], [f"inbox/b{i}.txt" for i in range(3)]]
    # The second was deleted once done; the third, received but not begun when the stop
    # came, is handed back at once.
    assert queued_messages(sqs, url) == 1 and visible(sqs, url) == 1


def test_two_micro_batches_run_at_once_and_each_is_deleted_when_its_run_returns(
    queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    sqs, url = queue
    # A second run starts beside a running one once a batch of objects waits: here, one.
    monkeypatch.setenv("NEWSFLOW_BATCH_SIZE", "1")
    sqs.send_message(QueueUrl=url, MessageBody=s3_notification("raw", "inbox/first.txt"))
    started: list[list[str]] = []
    both_running = threading.Barrier(2, timeout=20)
    second_may_end = threading.Event()

    def ingest(keys: list[str]) -> dict[str, Any]:
        started.append(keys)
        if len(started) == 1:  # the second arrives while the first runs, and starts too
            sqs.send_message(QueueUrl=url, MessageBody=s3_notification("raw", "inbox/next.txt"))
        both_running.wait()
        if keys == ["inbox/next.txt"]:
            second_may_end.wait(20)
        return {}

    consumer = Consumer(sqs, url, INBOX, ingest, settings(events_runs=2))
    with consuming(consumer, second_may_end):
        # Both began, the first returned and its message went; the second's is held while
        # it runs. (The queue also holds one message before the first is received.)
        wait_until(
            lambda: len(started) == 2 and queued_messages(sqs, url) == 1, 30, "the first's delete"
        )
        assert visible(sqs, url) == 0
        second_may_end.set()
        wait_until(lambda: queued_messages(sqs, url) == 0, 30, "the second's delete")
    assert started == [["inbox/first.txt"], ["inbox/next.txt"]]


def test_a_second_run_waits_for_a_batch_of_objects(queue, monkeypatch: pytest.MonkeyPatch) -> None:
    sqs, url = queue
    monkeypatch.setenv("NEWSFLOW_BATCH_SIZE", "3")
    sqs.send_message(QueueUrl=url, MessageBody=s3_notification("raw", "inbox/first.txt"))
    started: list[list[str]] = []
    release = threading.Event()

    def ingest(keys: list[str]) -> dict[str, Any]:
        started.append(sorted(keys))
        release.wait(30)
        return {}

    consumer = Consumer(sqs, url, INBOX, ingest, settings(events_runs=2))
    with consuming(consumer, release):
        wait_until(lambda: len(started) == 1, 20, "the first run")
        for i in range(2):  # a message an object, as S3 sends them
            sqs.send_message(QueueUrl=url, MessageBody=s3_notification("raw", f"inbox/w{i}.txt"))
        wait_until(lambda: visible(sqs, url) == 0, 20, "the two received")
        time.sleep(3)
        assert len(started) == 1, "a second run started for fewer objects than a batch"
        sqs.send_message(QueueUrl=url, MessageBody=s3_notification("raw", "inbox/w2.txt"))
        wait_until(lambda: len(started) == 2, 20, "a second run once a batch waits")
    assert started == [["inbox/first.txt"], [f"inbox/w{i}.txt" for i in range(3)]]


def test_emitted_events_name_the_keys_at_most_a_thousand_each() -> None:
    keys = [f"k/{i}.txt" for i in range(MAX_KEYS_PER_EVENT + 1)]
    events = objects_created_events("raw", keys + keys[:5])
    assert [len(e.payload["object_keys"]) for e in events] == [MAX_KEYS_PER_EVENT, 1]
    assert {e.resource.id for e in events} == {"s3.bucket.raw"}
    assert parse_object_uri("s3://raw/inbox/a b.txt") == ("raw", "inbox/a b.txt")
    with pytest.raises(ValueError, match="one object"):
        parse_object_uri("s3://raw/inbox/")


def test_a_burst_stays_within_the_process_limit_and_lands_each_object_once(
    stack: Stack, s3: Any
) -> None:
    """Uploads for 5 s: the trigger of the old event path started one run process per
    second of uploads (and more as they piled up); the consumer's processes stay fixed."""
    since = datetime.now(UTC)
    peaks = {"listen": 0, "serve": 0}
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.2):
            peaks["listen"] = max(peaks["listen"], processes_of(stack.listen_pid))
            peaks["serve"] = max(peaks["serve"], processes_of(stack.serve_pid))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        keys = []
        for second in range(5):
            keys += upload(stack, s3, f"burst-{second}", 20)
            time.sleep(1)
        wait_until(lambda: keys_in_lake(stack.output, keys), 120, "the burst in the lake")
    finally:
        done.set()
        watcher.join()

    # The consumer, multiprocessing's resource tracker, the forkserver that starts the
    # stage workers, and the workers.
    assert 1 < peaks["listen"] <= LISTEN_WORKERS + 3, peaks
    assert peaks["serve"] == 1, "`newsflow serve` started run processes"
    assert not runs_of(stack, "ingest-articles/on-upload", since)
    runs = event_runs(stack, since)
    assert 1 <= len(runs) < 10, "the uploads were not coalesced into micro-batches"
    counts = ledger_counts(stack.output)
    assert all(counts[key] == 1 for key in keys), {k: counts[k] for k in keys if counts[k] != 1}
    assert_each_input_once(stack.output)
    wait_until(lambda: queued_messages(boto3.client("sqs"), stack.queue_url) == 0, 30, "deletes")

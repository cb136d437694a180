"""S3 `ObjectCreated` notifications in an SQS queue -> `newsflow.objects.created` events.

The loop: receive a batch of messages, turn their records into one event per bucket,
POST the events to the Prefect API and wait for its answer, and only then delete the
messages. If the bridge dies in between, SQS redelivers the messages after their
visibility timeout; the redelivered event starts a run that finds the objects already in
the ledger, so a crash costs a little work and loses nothing.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any
from urllib.parse import unquote_plus

from prefect.client.orchestration import get_client
from prefect.events import Event

from deployments.events import objects_created_events

logger = logging.getLogger("newsflow.bridge")

SendEvents = Callable[[list[Event]], None]
_SQS_BATCH = 10  # SQS returns and deletes at most 10 messages per call


@dataclass(slots=True)
class Notification:
    """What one SQS message said: created objects as (bucket, key); none for a test event."""

    message_id: str
    receipt_handle: str
    objects: list[tuple[str, str]] = field(default_factory=list)


def parse_message(message: dict[str, Any]) -> Notification:
    """Read an S3 event notification, sent directly or wrapped by SNS.

    Raises ValueError for a body that is not an S3 notification at all: such a message
    stays in the queue (for its dead-letter queue) rather than being silently deleted.
    """
    notification = Notification(message["MessageId"], message["ReceiptHandle"])
    try:
        body = json.loads(message["Body"])
        if body.get("Type") == "Notification" and "Message" in body:
            body = json.loads(body["Message"])
    except (TypeError, ValueError) as error:
        raise ValueError(f"message {notification.message_id} is not JSON: {error}") from None
    if body.get("Event") == "s3:TestEvent":
        return notification
    if "Records" not in body:
        raise ValueError(f"message {notification.message_id} has no S3 Records")
    for record in body["Records"]:
        if not str(record.get("eventName", "")).startswith("ObjectCreated:"):
            continue
        notification.objects.append(
            (record["s3"]["bucket"]["name"], unquote_plus(record["s3"]["object"]["key"]))
        )
    return notification


def events_for(notifications: list[Notification]) -> list[Event]:
    """One event per bucket (more if it has over MAX_KEYS_PER_EVENT keys)."""
    keys: dict[str, list[str]] = defaultdict(list)
    origin: dict[str, list[str]] = defaultdict(list)
    for notification in notifications:
        for bucket, key in notification.objects:
            keys[bucket].append(key)
            origin[bucket].append(notification.message_id)
    return [
        event
        for bucket in keys
        for event in objects_created_events(bucket, keys[bucket], origin=origin[bucket])
    ]


def post_events(events: list[Event]) -> None:
    """Send events to the Prefect API and return once it has accepted them.

    Not `emit_event`: that hands events to a background websocket writer and returns at
    once, so a crash right after it could delete SQS messages whose event never arrived.
    """
    with get_client(sync_client=True) as client:
        # The client's own HTTP session: it carries the API URL, key and retries.
        response = client._client.post(
            "/events", json=[event.model_dump(mode="json") for event in events]
        )
        response.raise_for_status()


class Bridge:
    """Moves notifications from one queue to Prefect until `stop()`."""

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        send: SendEvents = post_events,
        *,
        wait_seconds: int = 10,
        batch_window: float = 1.0,
        max_messages: int = 100,
    ) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.send = send
        self.wait_seconds = wait_seconds
        self.batch_window = batch_window
        self.max_messages = max_messages
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def _receive(self, wait_seconds: int) -> list[dict[str, Any]]:
        response = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=_SQS_BATCH,
            WaitTimeSeconds=wait_seconds,
        )
        return list(response.get("Messages", []))

    def _collect(self) -> Iterator[dict[str, Any]]:
        """Long-poll for a first message, then keep taking more for `batch_window` seconds
        so a burst of uploads becomes one event, not one per object."""
        messages = self._receive(self.wait_seconds)
        yield from messages
        count, deadline = len(messages), time.monotonic() + self.batch_window
        while messages and count < self.max_messages and time.monotonic() < deadline:
            more = self._receive(1)  # returns as soon as one arrives; SQS waits in whole seconds
            count += len(more)
            yield from more

    def _delete(self, notifications: list[Notification]) -> None:
        for start in range(0, len(notifications), _SQS_BATCH):
            chunk = notifications[start : start + _SQS_BATCH]
            response = self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": n.receipt_handle} for i, n in enumerate(chunk)
                ],
            )
            for failure in response.get("Failed", []):
                logger.warning("could not delete message: %s", failure)

    def poll_once(self) -> int:
        """One receive-send-delete round; returns the number of objects forwarded."""
        notifications = []
        for message in self._collect():
            try:
                notifications.append(parse_message(message))
            except ValueError as error:
                logger.warning("left in the queue: %s", error)
        if not notifications:
            return 0
        events = events_for(notifications)
        if events:
            self.send(events)
        self._delete(notifications)
        forwarded = sum(len(n.objects) for n in notifications)
        buckets = sorted({bucket for n in notifications for bucket, _ in n.objects})
        logger.info(
            "%d messages -> %d objects created in %s, %d events sent",
            len(notifications),
            forwarded,
            ", ".join(buckets) or "no bucket (test events only)",
            len(events),
        )
        return forwarded

    def run(self) -> None:
        """Poll until stopped; a round in progress finishes (send, then delete) first."""
        logger.info("listening on %s", self.queue_url)
        while not self._stopping.is_set():
            try:
                self.poll_once()
            except Exception:
                # The API or SQS is briefly unreachable: the messages stay in the queue and
                # come back after their visibility timeout. Back off instead of spinning.
                logger.exception("round failed; retrying in 5 s")
                self._stopping.wait(5)
        logger.info("stopped")


def stop_on_signals(bridge: Bridge) -> None:
    """SIGINT and SIGTERM finish the current round, then end `run()`."""

    def handle(signum: int, frame: FrameType | None) -> None:
        logger.info("signal %d: stopping after the current round", signum)
        bridge.stop()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)

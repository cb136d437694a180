"""The event path: S3 `ObjectCreated` notifications in an SQS queue, ingested in
micro-batches by one long-running process (`newsflow listen`).

The consumer takes whatever is queued (up to `events_batch_objects` objects), runs one
`ingest-articles` flow run in this process for those keys, with the stage workers kept
warm from one micro-batch to the next, and deletes the messages only once the run has
returned, that is once its objects are committed. Up to `events_runs` micro-batches run
at once, and a receiver thread keeps the next one's messages coming; what arrives beyond
that waits in the queue. So the cost of a run is shared by more objects as the rate
grows, and the queue, not the process, holds any backlog.

While a micro-batch runs, its messages stay invisible to other consumers: a message's
visibility timeout is renewed once less than half of `events_visibility_seconds` is
left of it, so a micro-batch done within half the timeout costs no renewal call. If this
process dies, they come back that long after the last renewal, and the run that takes
them again finds what was committed in the lake: each object is written once. A run that
fails (the Prefect API or S3 unreachable; bad input never fails a run, it becomes a
reject) is retried with the same messages, after 1 s, 2 s, 4 s… up to
`events_retry_max_seconds`, until it succeeds; meanwhile no new micro-batch starts in its
place, and the buffer stops receiving once full.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from datetime import datetime
from types import FrameType
from typing import Any
from urllib.parse import unquote_plus

from newsflow.tasks.s3 import ObjectRef, S3Location, key_of, named_once
from newsflow.tasks.settings import DeploymentSettings, Settings

logger = logging.getLogger("newsflow.consumer")

# Processes the objects of one micro-batch; returns once they are committed.
Ingest = Callable[[list[str | ObjectRef]], dict[str, Any]]
_SQS_BATCH = 10  # SQS returns, deletes and changes the visibility of at most 10 per call


@dataclass(slots=True)
class Notification:
    """What one SQS message said: created objects as (bucket, version announced, or just
    the key when the message does not say which); none for a test event."""

    message_id: str
    receipt_handle: str
    objects: list[tuple[str, str | ObjectRef]] = field(default_factory=list)


def announced(key: str, details: dict[str, Any], event_time: Any) -> str | ObjectRef:
    """The object version a notification names (its ETag, size and time), so the run
    need not ask S3 for it; just the key when one of them is missing."""
    etag = details.get("eTag") or details.get("etag")
    size = details.get("size")
    try:
        moment = datetime.fromisoformat(str(event_time))
    except ValueError:
        return key
    if not etag or not isinstance(size, int) or moment.tzinfo is None:
        return key
    return ObjectRef(key, str(etag).strip('"'), size, moment)


def parse_message(message: dict[str, Any]) -> Notification:
    """Read an S3 event notification, sent directly or wrapped by SNS, or an EventBridge
    `Object Created` event from S3 (a rule whose target is the queue).

    S3's own notifications URL-encode keys (`a+b%C3%A8.html`); EventBridge's events carry
    them as they are (a captured `Object Created` event shows `:` unencoded).

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
    if body.get("source") == "aws.s3" and "detail" in body:
        if body.get("detail-type") == "Object Created":
            detail = body["detail"]
            key = detail["object"]["key"]
            version = announced(key, detail["object"], body.get("time"))
            notification.objects.append((detail["bucket"]["name"], version))
        return notification
    if "Records" not in body:
        raise ValueError(f"message {notification.message_id} has no S3 Records")
    for record in body["Records"]:
        if not str(record.get("eventName", "")).startswith("ObjectCreated:"):
            continue
        details = record["s3"]["object"]
        version = announced(unquote_plus(details["key"]), details, record.get("eventTime"))
        notification.objects.append((record["s3"]["bucket"]["name"], version))
    return notification


def keys_to_ingest(
    notifications: list[Notification], location: S3Location
) -> list[str | ObjectRef]:
    """The objects under the input prefix, as announced, each once (`named_once`).

    Objects elsewhere (another bucket, the lake's own writes when the notification has no
    prefix filter) are not the event path's: their messages are deleted with the rest.
    """
    ours: list[str | ObjectRef] = []
    for notification in notifications:
        for bucket, version in notification.objects:
            key = key_of(version)
            if bucket == location.bucket and key.startswith(location.prefix):
                ours.append(version)
            else:
                logger.warning("not under %s, ignored: s3://%s/%s", location, bucket, key)
    return named_once(ours)


class Consumer:
    """Ingests the objects announced in one queue, a micro-batch at a time, until `stop()`."""

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        location: S3Location,
        ingest: Ingest,
        settings: DeploymentSettings,
    ) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.location = location
        self.ingest = ingest
        self.settings = settings
        self._stopping = threading.Event()
        # Messages received and neither deleted nor let go: message id -> (receipt
        # handle, when its visibility timeout ends on the monotonic clock).
        self._held: dict[str, tuple[str, float]] = {}
        self._held_lock = threading.Lock()
        # Received, not yet taken into a micro-batch (`run`); at most events_batch_objects.
        self._buffer: list[dict[str, Any]] = []
        self._buffer_changed = threading.Condition()
        self._running_runs = 0  # micro-batches running now (`run`), under that condition
        # What waits before a run starts beside a running one: a batch of the runs' own.
        self._backlog = min(Settings().batch_size, settings.events_batch_objects)

    def stop(self) -> None:
        self._stopping.set()
        with self._buffer_changed:
            self._buffer_changed.notify_all()

    def run(self) -> None:
        """Micro-batches until stopped; the one in progress finishes (or, while its run
        keeps failing, its messages go back to the queue) first, and what was received
        but not begun is handed back at once.

        A receiver thread keeps taking messages into a buffer of at most
        `events_batch_objects`. A micro-batch is what the buffer holds when a run starts:
        one object on an idle queue, up to the cap under load. While one run works, a
        second (up to `events_runs`) starts only once a backlog of a run's batch
        (`NEWSFLOW_BATCH_SIZE` objects) waits: each run is a flow run in a thread of its
        own, sharing the stage workers, and fills the time the other spends fetching,
        committing and talking to Prefect, which is worth a run's fixed cost only with a
        full batch to do; smaller arrivals wait for the running one to end. Messages are
        deleted, in the background, once their run returned. So at most `events_runs` + 1
        micro-batches are held at once.
        """
        logger.info("consuming %s for %s", self.queue_url, self.location)
        receiver = threading.Thread(target=self._receive_into_buffer, name="sqs-receive")
        running: list[Future[None]] = []
        with (
            self._renewing(),
            ThreadPoolExecutor(1, thread_name_prefix="sqs-delete") as deleter,
            ThreadPoolExecutor(self.settings.events_runs, thread_name_prefix="run") as runs,
        ):
            receiver.start()
            try:
                while messages := self._take_when_a_run_is_due():
                    running.append(runs.submit(self._run_micro_batch, messages, deleter))
                    for future in [f for f in running if f.done()]:
                        running.remove(future)
                        future.result()
            finally:
                self._stopping.set()
                for future in running:
                    future.result()
                receiver.join()
                with suppress(Exception):  # unreachable: they come back after their timeout
                    self._change_visibility(self._parse(self._take_all()), 0)
        logger.info("stopped")

    def _take_when_a_run_is_due(self) -> list[dict[str, Any]]:
        """Wait until a run may start (see `run`), then take what the buffer holds, up to
        the cap, and count the run as started; nothing once a stop came."""
        cap = self.settings.events_batch_objects

        def due() -> bool:
            if self._running_runs >= self.settings.events_runs:
                return False
            return len(self._buffer) >= (self._backlog if self._running_runs else 1)

        with self._buffer_changed:
            self._buffer_changed.wait_for(lambda: self._stopping.is_set() or due())
            if self._stopping.is_set():
                return []
            taken, self._buffer = self._buffer[:cap], self._buffer[cap:]
            self._running_runs += 1
            self._buffer_changed.notify_all()
            return taken

    def _run_micro_batch(self, messages: list[dict[str, Any]], deleter: Executor) -> None:
        try:
            deleter.submit(self._delete_logged, self._ingest_messages(messages))
        finally:
            with self._buffer_changed:
                self._running_runs -= 1
                self._buffer_changed.notify_all()

    def run_once(self) -> int:
        """Receive one micro-batch, ingest it and delete its messages; the number of
        objects committed (0 if its run never succeeded before a stop)."""
        with self._renewing():
            return self.handle(self._receive())

    def handle(self, messages: list[dict[str, Any]]) -> int:
        """Ingest the objects the messages announce and delete the messages; the number
        of objects committed (0 if their run never succeeded before a stop)."""
        committed = self._ingest_messages(messages)
        self._delete(committed)
        return len(keys_to_ingest(committed, self.location))

    def _ingest_messages(self, messages: list[dict[str, Any]]) -> list[Notification]:
        """Ingest the objects the messages announce; the notifications whose objects are
        now committed, to be deleted (none if their run never succeeded before a stop)."""
        notifications = self._parse(messages)
        keys = keys_to_ingest(notifications, self.location)
        if keys and not self._ingest_until_done(notifications, keys):
            return []
        return notifications

    def _receive_into_buffer(self) -> None:
        """Until a stop: receive while the buffer has room, long-polling when the queue is
        empty; an SQS that cannot be reached is asked again every 5 s."""
        cap = self.settings.events_batch_objects
        while not self._stopping.is_set():
            with self._buffer_changed:
                self._buffer_changed.wait_for(
                    lambda: len(self._buffer) < cap or self._stopping.is_set()
                )
            if self._stopping.is_set():
                return
            try:
                messages = self._receive_call(self.settings.events_wait_seconds)
            except Exception:
                logger.exception("receiving failed; retrying in 5 s")
                self._stopping.wait(5)
                continue
            with self._buffer_changed:
                self._buffer += messages
                self._buffer_changed.notify_all()

    def _take_all(self) -> list[dict[str, Any]]:
        with self._buffer_changed:
            taken, self._buffer = self._buffer, []
            return taken

    def _parse(self, messages: list[dict[str, Any]]) -> list[Notification]:
        notifications = []
        for message in messages:
            try:
                notifications.append(parse_message(message))
            except ValueError as error:
                logger.warning("left in the queue: %s", error)
                self._let_go([message["MessageId"]])
        return notifications

    def _let_go(self, message_ids: list[str]) -> None:
        with self._held_lock:
            for message_id in message_ids:
                self._held.pop(message_id, None)

    def _receive(self) -> list[dict[str, Any]]:
        """Long-poll until a first message comes (or a stop), then take what is queued,
        without waiting, up to `events_batch_objects` messages."""
        messages = self._receive_call(self.settings.events_wait_seconds)
        while not messages and not self._stopping.is_set():
            messages = self._receive_call(self.settings.events_wait_seconds)
        while messages and len(messages) < self.settings.events_batch_objects:
            more = self._receive_call(0)
            if not more:
                break
            messages += more
        return messages

    def _receive_call(self, wait_seconds: int) -> list[dict[str, Any]]:
        """One receive (at most 10 messages), held from now on."""
        wanted = min(_SQS_BATCH, self.settings.events_batch_objects)
        response = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=wanted,
            WaitTimeSeconds=wait_seconds,
            VisibilityTimeout=self.settings.events_visibility_seconds,
        )
        messages = list(response.get("Messages", []))
        visible_at = time.monotonic() + self.settings.events_visibility_seconds
        with self._held_lock:
            self._held.update((m["MessageId"], (m["ReceiptHandle"], visible_at)) for m in messages)
        return messages

    def _ingest_until_done(
        self, notifications: list[Notification], keys: list[str | ObjectRef]
    ) -> bool:
        """Run the micro-batch until it succeeds; False if a stop came first (the messages
        are then handed back to the queue)."""
        started, attempt = time.monotonic(), 0
        while True:
            try:
                summary = self.ingest(keys)
                break
            except Exception:
                delay = min(2**attempt, self.settings.events_retry_max_seconds)
                logger.exception(
                    "micro-batch of %d objects failed; retrying in %d s", len(keys), delay
                )
                attempt += 1
                if self._stopping.wait(delay):
                    self._change_visibility(notifications, 0)
                    return False
        logger.info(
            "%d messages, %d objects: %d new -> %d articles, %d rejects in %.1f s",
            len(notifications),
            len(keys),
            summary.get("objects_new", 0),
            summary.get("articles", 0),
            summary.get("rejects", 0),
            time.monotonic() - started,
        )
        return True

    @contextmanager
    def _renewing(self) -> Iterator[None]:
        """Keep the held messages invisible while the block runs."""
        done = threading.Event()
        renewer = threading.Thread(target=self._keep_invisible, args=(done,), name="sqs-visibility")
        renewer.start()
        try:
            yield
        finally:
            done.set()
            renewer.join()

    def _keep_invisible(self, done: threading.Event) -> None:
        """Until `done`, renew the held messages (the running micro-batch's and those
        buffered for the next) that have less than half the visibility timeout left; it
        looks every sixth of the timeout, so a renewal comes at least a third before the
        end."""
        timeout = self.settings.events_visibility_seconds
        while not done.wait(timeout / 6):
            now = time.monotonic()
            with self._held_lock:
                due = [
                    Notification(message_id, handle)
                    for message_id, (handle, visible_at) in self._held.items()
                    if visible_at - now < timeout / 2
                ]
            if not due:
                continue
            try:
                self._change_visibility(due, timeout, keep=True)
            except Exception:
                # SQS unreachable: the next renewal may reach it; if none does, another
                # consumer may take the messages, and the lake still writes each once.
                logger.exception("could not renew the messages' visibility")
                continue
            with self._held_lock:
                for notification in due:
                    if notification.message_id in self._held:
                        self._held[notification.message_id] = (
                            notification.receipt_handle,
                            now + timeout,
                        )

    def _change_visibility(
        self, notifications: list[Notification], seconds: int, *, keep: bool = False
    ) -> None:
        """Set the messages' visibility timeout; unless `keep`, they are let go."""
        if not keep:
            self._let_go([n.message_id for n in notifications])
        self._each_chunk(
            notifications,
            self.sqs.change_message_visibility_batch,
            lambda i, n: {
                "Id": str(i),
                "ReceiptHandle": n.receipt_handle,
                "VisibilityTimeout": seconds,
            },
        )

    def _delete_logged(self, notifications: list[Notification]) -> None:
        try:
            self._delete(notifications)
        except Exception:
            # SQS unreachable: the messages come back after their timeout, and the run that
            # takes them again finds their objects in the lake.
            logger.exception("could not delete %d messages", len(notifications))

    def _delete(self, notifications: list[Notification]) -> None:
        self._let_go([n.message_id for n in notifications])
        self._each_chunk(
            notifications,
            self.sqs.delete_message_batch,
            lambda i, n: {"Id": str(i), "ReceiptHandle": n.receipt_handle},
        )

    def _each_chunk(
        self,
        notifications: list[Notification],
        call: Callable[..., dict[str, Any]],
        entry: Callable[[int, Notification], dict[str, Any]],
    ) -> None:
        for start in range(0, len(notifications), _SQS_BATCH):
            chunk = notifications[start : start + _SQS_BATCH]
            response = call(
                QueueUrl=self.queue_url, Entries=[entry(i, n) for i, n in enumerate(chunk)]
            )
            for failure in response.get("Failed", []):
                logger.warning("%s failed for a message: %s", call.__name__, failure)


def run_until_signalled(consumer: Consumer) -> None:
    """Run the consumer until SIGINT or SIGTERM, which let the current micro-batch finish.

    The micro-batches run in a thread of their own: Prefect replaces the main thread's
    SIGTERM handler with one that crashes the flow run for as long as a run lasts, and it
    installs none in other threads.
    """

    def handle(signum: int, frame: FrameType | None) -> None:
        logger.info("signal %d: stopping after the current micro-batch", signum)
        consumer.stop()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)
    worker = threading.Thread(target=consumer.run, name="consumer")
    worker.start()
    while worker.is_alive():
        worker.join(timeout=1)  # wakes to run the signal handlers


def ingest_in_this_process(settings: DeploymentSettings) -> Ingest:
    """Each micro-batch as an `ingest-articles` flow run of this process, tagged `events`:
    visible in Prefect with its task runs, logs and artifacts like any other run."""
    from newsflow.flows.ingest import ingest_articles
    from prefect import tags
    from prefect.settings import (
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        get_current_settings,
        temporary_settings,
    )

    def ingest(keys: list[str | ObjectRef]) -> dict[str, Any]:
        name = f"events-{len(keys)}-objects"
        # No run heartbeats (unset by default): they tell a server that a long run's
        # process still lives, and these runs take seconds, in this long-lived process; a
        # sync flow run ends by joining its heartbeat thread, which sleeps in 1-s steps.
        beating = get_current_settings().flows.heartbeat_frequency is not None
        with (
            tags("newsflow", "events"),
            temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})
            if beating
            else nullcontext(),
        ):
            return ingest_articles.with_options(flow_run_name=name)(
                input_uri=settings.input_uri, output_uri=settings.output_uri, keys=keys
            )

    return ingest

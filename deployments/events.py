"""The event that starts an on-upload run: objects were created in a bucket.

Shared by `newsflow emit` and the on-upload deployment's trigger, so the shape is
defined once. A Prefect Cloud webhook can produce the same event from an S3
notification (see docs/deployments.md). The event path proper, `newsflow listen`, reads
the notifications from SQS itself (`deployments/consumer.py`) and sends no event.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlparse

from prefect.client.orchestration import get_client
from prefect.events import Event

OBJECTS_CREATED = "newsflow.objects.created"
# Bounds one event's payload (and so the triggered run's `keys` parameter) far below
# Prefect's 512 KB parameter and 1.5 MB event caps, even with long keys.
MAX_KEYS_PER_EVENT = 1000


def bucket_resource_id(bucket: str) -> str:
    return f"s3.bucket.{bucket}"


def parse_object_uri(uri: str) -> tuple[str, str]:
    """s3://BUCKET/KEY -> (bucket, key)."""
    parsed = urlparse(uri)
    key = parsed.path.lstrip("/")
    if parsed.scheme != "s3" or not parsed.netloc or not key or key.endswith("/"):
        raise ValueError(f"expected s3://BUCKET/KEY of one object, got {uri!r}")
    return parsed.netloc, key


def objects_created_events(bucket: str, keys: Iterable[str]) -> list[Event]:
    """Events for `keys` of one bucket, at most MAX_KEYS_PER_EVENT keys each.

    The payload field is `object_keys`, not `keys`: in a Jinja template `payload.keys`
    would be the dict's method.
    """
    unique = list(dict.fromkeys(keys))
    return [
        Event(
            event=OBJECTS_CREATED,
            resource={"prefect.resource.id": bucket_resource_id(bucket), "s3.bucket": bucket},
            payload={"bucket": bucket, "object_keys": unique[start : start + MAX_KEYS_PER_EVENT]},
        )
        for start in range(0, len(unique), MAX_KEYS_PER_EVENT)
    ]


def post_events(events: list[Event]) -> None:
    """Send events to the Prefect API and return once it has accepted them.

    Not `emit_event`: that hands events to a background websocket writer and returns at
    once, so a command that exits right after it could lose them.
    """
    with get_client(sync_client=True) as client:
        # The client's own HTTP session: it carries the API URL, key and retries.
        response = client._client.post(
            "/events", json=[event.model_dump(mode="json") for event in events]
        )
        response.raise_for_status()

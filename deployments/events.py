"""The one event newsflow reacts to: objects were created in a bucket.

Shared by the SQS bridge, `newsflow emit` and the on-upload deployment's trigger, so the
shape is defined once. A Prefect Cloud webhook can produce the same event from the S3
notification (see docs/deployments.md).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from urllib.parse import urlparse

from prefect.events import Event

OBJECTS_CREATED = "newsflow.objects.created"
# Bounds one event's payload (and so the triggered run's `keys` parameter) far below
# Prefect's 512 KB parameter and 1.5 MB event caps, even with long keys.
MAX_KEYS_PER_EVENT = 1000
# Fixed namespace: the same notification messages always make the same event id.
_EVENT_NAMESPACE = uuid.UUID("6f1d3c52-4d2e-4b8a-9a57-2f0c1e9b7d11")


def bucket_resource_id(bucket: str) -> str:
    return f"s3.bucket.{bucket}"


def parse_object_uri(uri: str) -> tuple[str, str]:
    """s3://BUCKET/KEY -> (bucket, key)."""
    parsed = urlparse(uri)
    key = parsed.path.lstrip("/")
    if parsed.scheme != "s3" or not parsed.netloc or not key or key.endswith("/"):
        raise ValueError(f"expected s3://BUCKET/KEY of one object, got {uri!r}")
    return parsed.netloc, key


def objects_created_events(
    bucket: str, keys: Iterable[str], *, origin: Iterable[str] = ()
) -> list[Event]:
    """Events for `keys` of one bucket, at most MAX_KEYS_PER_EVENT keys each.

    The payload field is `object_keys`, not `keys`: in a Jinja template `payload.keys`
    would be the dict's method. `origin` (e.g. SQS message ids) makes the event ids
    deterministic, so a batch redelivered after a bridge crash is recognisably the same.
    """
    unique = list(dict.fromkeys(keys))
    seed = "\n".join(sorted(origin))
    events = []
    for start in range(0, len(unique), MAX_KEYS_PER_EVENT):
        chunk = unique[start : start + MAX_KEYS_PER_EVENT]
        identity = (
            {"id": uuid.uuid5(_EVENT_NAMESPACE, f"{bucket}\n{start}\n{seed}")} if seed else {}
        )
        events.append(
            Event(
                event=OBJECTS_CREATED,
                resource={"prefect.resource.id": bucket_resource_id(bucket), "s3.bucket": bucket},
                payload={"bucket": bucket, "object_keys": chunk},
                **identity,
            )
        )
    return events

"""The input side's S3 access: where raw articles are, which versions of them, and the
client that reads them.

Endpoint, credentials and region come from boto3's standard chain (`AWS_ENDPOINT_URL`,
`AWS_ACCESS_KEY_ID`, profiles, roles), so MinIO, LocalStack or moto work with no code
change. The lake resolves its own S3 settings through the same chain (`tasks/lake/`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any
from urllib.parse import urlparse

import boto3
from botocore.config import Config
from newsflow.tasks.schema import object_fingerprint
from newsflow.tasks.settings import Settings


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """One version of one input object, as listed or as its notification announced it."""

    key: str
    etag: str
    size: int
    last_modified: datetime

    @property
    def fingerprint(self) -> bytes:
        return object_fingerprint(self.key, self.etag)


def key_of(named: str | ObjectRef) -> str:
    return named if isinstance(named, str) else named.key


def named_once(items: Iterable[str | ObjectRef]) -> list[str | ObjectRef]:
    """Each key once, where first named; a key named as two different versions (two
    uploads announced) by its key alone, so that its current version is the one taken."""
    named: dict[str, str | ObjectRef] = {}
    for item in items:
        key = key_of(item)
        named[key] = key if key in named and named[key] != item else item
    return list(named.values())


@dataclass(frozen=True, slots=True)
class S3Location:
    bucket: str
    prefix: str  # no leading slash; empty or ending in "/"

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        parsed = urlparse(uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"expected s3://BUCKET[/PREFIX], got {uri!r}")
        prefix = parsed.path.lstrip("/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        return cls(bucket=parsed.netloc, prefix=prefix)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def s3_client(settings: Settings) -> Any:
    """A boto3 S3 client with adaptive retries: 500/503/SlowDown and resets are retried.

    One per process for the same settings and AWS environment, shared by its threads
    (boto3 clients are thread-safe): making one costs ~120 ms of CPU, which the event
    path's runs, a micro-batch each, would otherwise pay every time."""
    environment = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))
    return _client(settings.s3_max_attempts, settings.fetch_concurrency, environment)


@lru_cache(maxsize=8)
def _client(max_attempts: int, concurrency: int, environment: tuple[tuple[str, str], ...]) -> Any:
    config = Config(
        retries={"max_attempts": max_attempts, "mode": "adaptive"},
        # A run's HEADs and its first fetches overlap, and two event runs share it.
        max_pool_connections=max(10, 2 * concurrency),
        connect_timeout=10,
        read_timeout=60,
    )
    return boto3.session.Session().client("s3", config=config)

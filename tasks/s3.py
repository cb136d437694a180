"""The input side's S3 access: where raw articles are, and the client that reads them.

Endpoint, credentials and region come from boto3's standard chain (`AWS_ENDPOINT_URL`,
`AWS_ACCESS_KEY_ID`, profiles, roles), so MinIO, LocalStack or moto work with no code
change. The lake resolves its own S3 settings through the same chain (`tasks/lake/`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import boto3
from botocore.config import Config
from newsflow.tasks.settings import Settings


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
    """A boto3 S3 client with adaptive retries: 500/503/SlowDown and resets are retried."""
    config = Config(
        retries={"max_attempts": settings.s3_max_attempts, "mode": "adaptive"},
        max_pool_connections=max(10, settings.fetch_concurrency),
        connect_timeout=10,
        read_timeout=60,
    )
    return boto3.session.Session().client("s3", config=config)

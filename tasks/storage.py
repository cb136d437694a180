"""Where bytes live: the S3 client for input, and the output root (a local path or S3).

Both sides resolve the endpoint, credentials and region through boto3's standard chain
(`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, profiles, roles), so MinIO, LocalStack or moto
work with no code change, and pyarrow writes to the same endpoint that boto3 reads from.
"""

from __future__ import annotations

import posixpath
import uuid
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
import pyarrow.fs as pafs
from botocore.config import Config

from tasks.settings import Settings


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


def _arrow_s3_filesystem(settings: Settings) -> pafs.S3FileSystem:
    """pyarrow's S3 filesystem configured from boto3's resolution of endpoint and credentials."""
    session = boto3.session.Session()
    client = s3_client(settings)
    credentials = session.get_credentials()
    options: dict[str, Any] = {
        "region": client.meta.region_name or "us-east-1",
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=settings.s3_max_attempts),
    }
    if credentials is not None:
        frozen = credentials.get_frozen_credentials()
        options.update(
            access_key=frozen.access_key,
            secret_key=frozen.secret_key,
            session_token=frozen.token,
        )
    endpoint = urlparse(client.meta.endpoint_url)
    if not endpoint.hostname or not endpoint.hostname.endswith("amazonaws.com"):
        options.update(endpoint_override=endpoint.netloc, scheme=endpoint.scheme)
    return pafs.S3FileSystem(**options)


@dataclass(frozen=True, slots=True)
class OutputRoot:
    """The output root as a pyarrow filesystem plus a base path on it.

    Reads and writes go through pyarrow. On S3, moves and deletes go through boto3
    (`client`): pyarrow re-creates an empty "directory" object for the parent of every
    file it deletes, and those markers would show up as uploads in bucket notifications.
    The lease's conditional write needs boto3 too.
    """

    uri: str
    filesystem: pafs.FileSystem
    base: str
    s3: S3Location | None
    client: Any = None

    @classmethod
    def open(cls, uri: str, settings: Settings) -> OutputRoot:
        if uri.startswith("s3://"):
            location = S3Location.parse(uri)
            base = f"{location.bucket}/{location.prefix}".rstrip("/")
            return cls(uri, _arrow_s3_filesystem(settings), base, location, s3_client(settings))
        if "://" in uri:
            raise ValueError(f"output must be a local path or s3://BUCKET/PREFIX, got {uri!r}")
        path = Path(uri).expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return cls(str(path), pafs.LocalFileSystem(), path.as_posix(), None)

    def path(self, *parts: str) -> str:
        """A path under the root; parts are built by newsflow, never taken from object keys."""
        return posixpath.join(self.base, *parts)

    def ensure_dir(self, path: str) -> None:
        """Create a local directory; on S3 a no-op, since 'directories' there are empty
        marker objects that would only fire spurious upload notifications."""
        if self.s3 is None:
            self.filesystem.create_dir(path, recursive=True)

    def move(self, source: str, target: str) -> None:
        """Replace `target` with `source` in one step for readers (rename, or S3 copy)."""
        if self.s3 is None:
            self.filesystem.move(source, target)
            return
        bucket, source_key = source.split("/", 1)
        target_key = target.split("/", 1)[1]
        self.client.copy_object(
            Bucket=bucket, Key=target_key, CopySource={"Bucket": bucket, "Key": source_key}
        )
        self.client.delete_object(Bucket=bucket, Key=source_key)

    def delete_file(self, path: str) -> None:
        """Delete one file; a missing one is not an error (deletes are retried)."""
        if self.s3 is None:
            with suppress(FileNotFoundError):
                self.filesystem.delete_file(path)
            return
        bucket, key = path.split("/", 1)
        self.client.delete_object(Bucket=bucket, Key=key)

    def delete_tree(self, path: str) -> None:
        """Delete a folder and everything under it; a missing one is not an error."""
        if self.s3 is None:
            with suppress(FileNotFoundError):
                self.filesystem.delete_dir(path)
            return
        bucket, prefix = path.rstrip("/").split("/", 1)
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/"):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})


def write_atomically(root: OutputRoot, path: str, data: bytes) -> None:
    """Readers see the old bytes or the new, never a torn file.

    On S3 it is one PutObject through boto3, atomic by itself and retried by botocore;
    pyarrow's output stream would start a multipart upload, whose completion can fail
    inside a 200 response and was seen to fail for good against the fault proxy.
    Locally the bytes go to a hidden sibling that is then renamed over the target.
    """
    if root.s3 is not None:
        bucket, key = path.split("/", 1)
        root.client.put_object(Bucket=bucket, Key=key, Body=data)
        return
    directory, name = posixpath.split(path)
    root.ensure_dir(directory)
    hidden = posixpath.join(directory, f".{name}.{uuid.uuid4().hex}.tmp")
    with root.filesystem.open_output_stream(hidden) as stream:
        stream.write(data)
    root.move(hidden, path)

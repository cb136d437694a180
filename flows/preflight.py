"""Checks the command line makes before Prefect is imported: a typo or a missing bucket
costs one line and a second, not a temporary Prefect server and a traceback.

Two kinds of failure, each a one-line message that says what to do:

    PreflightError
     ├── UsageError        (exit 2) an argument or NEWSFLOW_* setting is wrong
     └── EnvironmentProblem (exit 1) the world does not match: a bucket missing, an
                            endpoint unreachable, no credentials, an output not writable

Nothing here imports Prefect. The S3 and SQS probes use a client of their own with a
short connect timeout and one retry, not the pipeline's adaptive retries.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from newsflow.tasks.s3 import S3Location
from newsflow.tasks.settings import DeploymentSettings, Settings
from pydantic import ValidationError
from pydantic_settings import BaseSettings

_CONNECT_SECONDS = 1
_READ_SECONDS = 2
_ATTEMPTS = 2
_CREDENTIALS_HINT = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, "
    "or run where an instance or task role applies"
)
_SettingsT = TypeVar("_SettingsT", bound=BaseSettings)


class PreflightError(Exception):
    """A check failed; `str()` is the one line to print."""

    exit_code = 1


class UsageError(PreflightError):
    exit_code = 2


class EnvironmentProblem(PreflightError):
    exit_code = 1


def _settings_error(error: ValidationError, flags: Mapping[str, str]) -> UsageError:
    """One line naming each wrong variable (or the flag that sets it) and what it must be."""
    problems = []
    for detail in error.errors():
        field = str(detail["loc"][0]) if detail["loc"] else ""
        variable = f"NEWSFLOW_{field.upper()}"
        if detail["type"] == "missing":
            where = f"{flags[field]} or {variable}" if field in flags else variable
            problems.append(f"{field.replace('_', ' ')} not given: pass {where}")
        else:
            problems.append(f"{variable}={detail.get('input')!r}: {detail['msg']}")
    return UsageError("; ".join(problems))


def _load(
    factory: Callable[..., _SettingsT],
    overrides: Mapping[str, Any] | None = None,
    flags: Mapping[str, str] | None = None,
) -> _SettingsT:
    try:
        return factory(**(overrides or {}))
    except ValidationError as error:
        raise _settings_error(error, flags or {}) from error


def load_settings() -> Settings:
    """The pipeline's settings from NEWSFLOW_*, or a UsageError naming the wrong variables."""
    return _load(Settings)


def load_deployment_settings(
    input_uri: str | None, output_uri: str | None, sweep_cron: str | None
) -> DeploymentSettings:
    """`newsflow serve`/`deploy`'s settings: the flags win over NEWSFLOW_*."""
    given = {"input_uri": input_uri, "output_uri": output_uri, "sweep_cron": sweep_cron}
    return _load(
        DeploymentSettings,
        {name: value for name, value in given.items() if value is not None},
        {"input_uri": "--input", "output_uri": "--output", "sweep_cron": "--cron"},
    )


def parse_input_uri(uri: str, flag: str = "--input") -> S3Location:
    try:
        return S3Location.parse(uri)
    except ValueError as error:
        raise UsageError(
            f"{flag} {uri!r} is not an S3 location: give s3://BUCKET/PREFIX"
        ) from error


def parse_output_uri(uri: str, flag: str = "--output") -> S3Location | Path:
    """An S3 location, or a local path (`Lake.open`'s rule)."""
    if uri.startswith("s3://"):
        return parse_input_uri(uri, flag)
    if "://" in uri or not uri:
        raise UsageError(f"{flag} {uri!r}: give a local path or s3://BUCKET/PREFIX")
    return Path(uri).expanduser()


def parse_object_uri(uri: str) -> tuple[str, str]:
    """s3://BUCKET/KEY of one object (the rule of `newsflow.deployments.events.parse_object_uri`,
    which imports Prefect)."""
    parsed = urlparse(uri)
    key = parsed.path.lstrip("/")
    if parsed.scheme != "s3" or not parsed.netloc or not key or key.endswith("/"):
        raise UsageError(f"{uri!r} is not one object: give s3://BUCKET/KEY")
    return parsed.netloc, key


def parse_queue_url(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.path in ("", "/"):
        raise UsageError(
            f"--queue {url!r} is not an SQS queue URL: "
            "give https://sqs.REGION.amazonaws.com/ACCOUNT/QUEUE"
        )
    return url


def check_local_output(path: Path, flag: str = "--output") -> None:
    """The directory exists and can be written to, or can be created where it would go."""
    existing = path.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise EnvironmentProblem(
            f"cannot write {flag} {str(path)!r}: {str(existing)!r} is a file, not a directory; "
            "choose another path"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise EnvironmentProblem(
            f"cannot write {flag} {str(path)!r}: {str(existing)!r} is not writable by this "
            "user; choose another path or change its permissions"
        )


def aws_client(service: str) -> Any:
    """A boto3 client for a quick probe: short connect timeout, one retry, boto3's chain
    for the endpoint, credentials and region."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=_CONNECT_SECONDS,
        read_timeout=_READ_SECONDS,
        retries={"total_max_attempts": _ATTEMPTS, "mode": "standard"},
    )
    from botocore.exceptions import NoRegionError

    session = boto3.session.Session()
    try:
        client = session.client(service, config=config)
    except NoRegionError as error:
        raise EnvironmentProblem(
            f"no AWS region set for {service}: set AWS_DEFAULT_REGION or AWS_PROFILE"
        ) from error
    except ValueError as error:  # botocore's "Invalid endpoint: …"
        raise UsageError(
            f"AWS_ENDPOINT_URL: {error}; give a URL such as http://127.0.0.1:9000"
        ) from error
    if session.get_credentials() is None:
        raise EnvironmentProblem(f"no AWS credentials found: {_CREDENTIALS_HINT}")
    return client


def _describe(error: Exception, client: Any, what: str) -> EnvironmentProblem:
    """An S3 or SQS probe's failure as one line with what to do."""
    from botocore.exceptions import (
        ClientError,
        ConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    endpoint = client.meta.endpoint_url
    if isinstance(error, NoCredentialsError):
        return EnvironmentProblem(f"no AWS credentials found: {_CREDENTIALS_HINT}")
    if isinstance(error, ConnectionError | ReadTimeoutError):
        return EnvironmentProblem(
            f"cannot reach {endpoint} ({type(error).__name__}): check the network, or set "
            "AWS_ENDPOINT_URL to the S3-compatible endpoint to use"
        )
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("404", "NoSuchBucket", "AWS.SimpleQueueService.NonExistentQueue") or (
            code == "QueueDoesNotExist"
        ):
            return EnvironmentProblem(
                f"{what} does not exist at {endpoint}: create it or fix the name"
            )
        if status == 403 or code in ("403", "AccessDenied", "InvalidAccessKeyId"):
            return EnvironmentProblem(
                f"access to {what} denied at {endpoint} ({code or status}): check the "
                "credentials (AWS_ACCESS_KEY_ID, AWS_PROFILE) and the resource's policy"
            )
        return EnvironmentProblem(f"{endpoint} answered {code or status} for {what}: {error}")
    return EnvironmentProblem(f"{what} at {endpoint}: {type(error).__name__}: {error}")


def check_buckets(client: Any, buckets: Mapping[str, str]) -> None:
    """HeadBucket on each bucket, named by its role ("input bucket 'raw'")."""
    for bucket, role in buckets.items():
        try:
            client.head_bucket(Bucket=bucket)
        except Exception as error:
            raise _describe(error, client, f"{role} {bucket!r}") from error


def check_queue(client: Any, url: str) -> None:
    try:
        client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    except Exception as error:
        raise _describe(error, client, f"queue {url}") from error


def check_locations(input_uri: str | None, output_uri: str | None) -> None:
    """Every check for an input and/or an output: their syntax first (usage errors), then
    the local output, then credentials and the buckets on S3."""
    input_location = parse_input_uri(input_uri) if input_uri is not None else None
    output = parse_output_uri(output_uri) if output_uri is not None else None
    if isinstance(output, Path):
        check_local_output(output)
    buckets: dict[str, str] = {}
    if isinstance(output, S3Location):
        buckets[output.bucket] = "output bucket"
    if input_location is not None:
        buckets[input_location.bucket] = "input bucket"
    if buckets:
        check_buckets(aws_client("s3"), buckets)


def check_object_uris(uris: Iterable[str]) -> None:
    for uri in uris:
        parse_object_uri(uri)


def check_queue_url(url: str) -> None:
    parse_queue_url(url)
    check_queue(aws_client("sqs"), url)

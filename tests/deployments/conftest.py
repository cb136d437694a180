"""The deployed stack, started once per session: `newsflow serve` and `newsflow listen`
(the event consumer) as real processes against the real `prefect server`, reading a moto
S3 bucket whose ObjectCreated notifications (for `inbox/`) go to an SQS queue on the same
moto server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import psutil
import pytest
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, temporary_settings

INPUT_PREFIX = "inbox/"
TEST_CRON = "0 5 1 1 *"  # far from any test run: sweeps here are started by hand
LISTEN_WORKERS = 2
DEPLOYMENTS = (
    "ingest-articles/sweep",
    "ingest-articles/on-upload",
    "backfill-articles/backfill",
    "maintain-lake/daily",
)


@dataclass(frozen=True, slots=True)
class Stack:
    api_url: str
    bucket: str
    queue_url: str
    output: Path
    env: dict[str, str]
    logs: Path
    serve_pid: int
    listen_pid: int

    @property
    def input_uri(self) -> str:
        return f"s3://{self.bucket}/{INPUT_PREFIX}"

    @contextmanager
    def client(self) -> Iterator[SyncPrefectClient]:
        """A client of the real server, even if the in-process test harness is running."""
        with (
            temporary_settings(updates={PREFECT_API_URL: self.api_url}),
            get_client(sync_client=True) as client,
        ):
            yield client


def wait_until(check: Callable[[], Any], timeout: float, what: str, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def notifying_bucket(s3: Any, sqs: Any, bucket: str) -> tuple[str, str]:
    """A bucket whose uploads under INPUT_PREFIX are announced in a queue of their own;
    (bucket, queue URL)."""
    s3.create_bucket(Bucket=bucket)
    queue_url = sqs.create_queue(QueueName=f"{bucket}-uploads")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": arn["Attributes"]["QueueArn"],
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": INPUT_PREFIX}]}},
                }
            ]
        },
    )
    return bucket, queue_url


def queued_messages(sqs: Any, queue_url: str) -> int:
    """Messages in the queue, visible or held by a consumer (approximate, exact on moto)."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def processes_of(pid: int) -> int:
    """The process and its descendants."""
    try:
        return 1 + len(psutil.Process(pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return 0


def start_newsflow(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "newsflow.flows.cli", *command],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )


def stop_process(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then the exit code; -9 if it had to be killed."""
    process.terminate()
    try:
        return process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return -9


@pytest.fixture(scope="session")
def stack(
    s3_endpoint: str, prefect_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("deployed")
    bucket, queue_url = notifying_bucket(
        boto3.client("s3"), boto3.client("sqs"), "newsflow-deployed"
    )
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": s3_endpoint,
        "PREFECT_API_URL": prefect_server,
        "PREFECT_HOME": str(root / "prefect-home"),
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "NEWSFLOW_WORKERS": "1",
        "NEWSFLOW_INPUT_URI": f"s3://{bucket}/{INPUT_PREFIX}",
        "NEWSFLOW_OUTPUT_URI": str(root / "lake"),
        "NEWSFLOW_SWEEP_CRON": TEST_CRON,
    }
    server = start_newsflow(["serve"], env, root / "serve.log")
    # The consumer with a pool of stage workers kept warm, as in production.
    listen = start_newsflow(
        ["listen", "--queue", queue_url, "--wait", "1"],
        {**env, "NEWSFLOW_WORKERS": str(LISTEN_WORKERS)},
        root / "listen.log",
    )
    stack = Stack(
        prefect_server, bucket, queue_url, root / "lake", env, root, server.pid, listen.pid
    )
    try:

        def served() -> bool:
            with stack.client() as client:
                try:
                    for name in DEPLOYMENTS:
                        client.read_deployment_by_name(name)
                except ObjectNotFound:
                    return False
                return True

        wait_until(served, 60, f"the served deployments (see {root / 'serve.log'})")
        yield stack
    finally:
        listen_exit = stop_process(listen)
        stop_process(server)
    assert listen_exit == 0, (
        f"`newsflow listen` did not stop cleanly on SIGTERM: {root / 'listen.log'}"
    )

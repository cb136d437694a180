"""Session fixtures: a real S3-compatible server over HTTP and a real Prefect API.

The S3 server is moto's standalone server in its own process on 127.0.0.1, reached
through the same boto3 and pyarrow code paths production uses (no patched clients).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pyarrow.fs as pafs
import pytest

if TYPE_CHECKING:
    from newsflow.tasks.lake import Lake

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"

# Before anything imports boto3 sessions or Prefect: no developer config may leak in.
os.environ.update(
    AWS_CONFIG_FILE="/dev/null",
    AWS_SHARED_CREDENTIALS_FILE="/dev/null",
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing-secret",
    AWS_DEFAULT_REGION="us-east-1",
    PREFECT_SERVER_ANALYTICS_ENABLED="false",
    NEWSFLOW_WORKERS="1",
)


def read_table(lake: Lake, table: str, columns: list[str] | None = None) -> list[dict[str, Any]]:
    """The rows of one of the lake's Delta tables as a Delta reader (deltalake) sees them
    now, partition columns included."""
    return lake.table(table).to_pyarrow_table(columns=columns).to_pylist()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        endpoint = f"http://127.0.0.1:{port}"
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="session")
def arrow_s3(s3_endpoint: str) -> pafs.S3FileSystem:
    """pyarrow's own S3 filesystem on the test server: reads the lake as an analyst would."""
    return pafs.S3FileSystem(
        endpoint_override=s3_endpoint.removeprefix("http://"),
        scheme="http",
        access_key=os.environ["AWS_ACCESS_KEY_ID"],
        secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        region="us-east-1",
    )


@pytest.fixture(scope="session")
def s3(s3_endpoint: str):
    return boto3.client("s3")


@pytest.fixture
def bucket(s3) -> str:
    """A fresh, empty bucket per test."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One Prefect test harness (a real API on a temporary database) for the session."""
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@contextmanager
def running_prefect_server(home: Path, port: int | None = None) -> Iterator[str]:
    """A real `prefect server` process on 127.0.0.1 (on `port`, else a free one) with its
    database in `home`; yields its API URL."""
    import httpx

    port = port or free_port()
    environment = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": "",
    }
    log = (home / "server.log").open("ab")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prefect server did not start; see {home / 'server.log'}")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The session's real `prefect server`, for tests that drive deployments, workers,
    automations and subprocess runs; in-process flow tests use the lighter `prefect_api`
    harness."""
    with running_prefect_server(tmp_path_factory.mktemp("prefect-server-home")) as url:
        yield url

"""The event consumer under faults, each with a bucket, queue, lake and `newsflow listen`
of its own: killed with SIGKILL mid-batch then restarted; the Prefect API down for a
while then back; an upload storm while a sweep and a backfill run on the session stack.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from newsflow.tasks.settings import DeploymentSettings
from prefect.client.schemas.objects import FlowRun, StateType

from tests.conftest import free_port, running_prefect_server
from tests.deployments.conftest import (
    INPUT_PREFIX,
    Stack,
    notifying_bucket,
    processes_of,
    queued_messages,
    start_newsflow,
    stop_process,
    wait_until,
)
from tests.deployments.test_deployed import (
    article,
    assert_each_input_once,
    event_runs,
    keys_in_lake,
    lake_rows,
    ledger_counts,
    runs_of,
    upload,
    wait_finished,
)


@dataclass(frozen=True, slots=True)
class EventPath:
    """A bucket whose uploads are announced in a queue, a lake, and how to start a
    consumer of that queue writing to that lake."""

    bucket: str
    queue_url: str
    output: Path
    env: dict[str, str]
    log: Path

    def consumer(self) -> subprocess.Popen[bytes]:
        return start_newsflow(["listen", "--queue", self.queue_url], self.env, self.log)

    def upload(self, s3: Any, source: str, count: int) -> list[str]:
        keys = [f"{INPUT_PREFIX}{source}/2026/story-{i}.txt" for i in range(count)]
        for i, key in enumerate(keys):
            s3.put_object(Bucket=self.bucket, Key=key, Body=article(source, i))
        return keys


@pytest.fixture
def event_path(s3: Any, tmp_path: Path) -> EventPath:
    bucket = f"events-{uuid.uuid4().hex[:8]}"
    bucket, queue_url = notifying_bucket(s3, boto3.client("sqs"), bucket)
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "NEWSFLOW_WORKERS": "1",
        "NEWSFLOW_INPUT_URI": f"s3://{bucket}/{INPUT_PREFIX}",
        "NEWSFLOW_OUTPUT_URI": str(tmp_path / "lake"),
        "NEWSFLOW_EVENTS_WAIT_SECONDS": "1",
        # A dead consumer's messages come back after seconds, not minutes.
        "NEWSFLOW_EVENTS_VISIBILITY_SECONDS": "10",
        "NEWSFLOW_EVENTS_RETRY_MAX_SECONDS": "4",
    }
    return EventPath(bucket, queue_url, tmp_path / "lake", env, tmp_path / "listen.log")


@contextmanager
def running(process: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    try:
        yield process
    finally:
        if process.poll() is None:
            stop_process(process)


def overlap(runs: list[FlowRun], others: list[FlowRun]) -> bool:
    """Whether one of `runs` was running while one of `others` was (a run still going
    counts as running now)."""
    now = datetime.now(UTC)
    return any(
        run.start_time < (other.end_time or now) and other.start_time < (run.end_time or now)
        for run in runs
        for other in others
        if run.start_time and other.start_time
    )


def assert_landed_once(path: EventPath, keys: list[str]) -> None:
    counts = ledger_counts(path.output)
    assert {key: counts[key] for key in keys} == dict.fromkeys(keys, 1), "committed twice"
    assert_each_input_once(path.output)
    assert sorted(row["object_key"] for row in lake_rows(path.output)) == sorted(keys)


def test_a_consumer_killed_mid_batch_and_restarted_lands_each_object_once(
    event_path: EventPath, prefect_server: str, s3: Any
) -> None:
    path = event_path
    env = {**path.env, "PREFECT_API_URL": prefect_server, "NEWSFLOW_BATCH_SIZE": "5"}
    path = EventPath(path.bucket, path.queue_url, path.output, env, path.log)
    keys = path.upload(s3, "killed", 60)  # queued before the consumer starts: one micro-batch
    sqs = boto3.client("sqs")

    with running(path.consumer()) as consumer:

        def some_committed() -> bool:
            if not path.output.exists():
                return False
            landed = {row["object_key"] for row in lake_rows(path.output)}
            return 0 < len(landed) < len(keys)

        wait_until(some_committed, 90, f"a first batch in the lake (see {path.log})", every=0.1)
        consumer.kill()
        consumer.wait()
    landed = {row["object_key"] for row in lake_rows(path.output)}
    assert len(landed) < len(keys), "the micro-batch finished before the kill"
    # Every message still there (with the test event S3 sent when notifications were set).
    assert queued_messages(sqs, path.queue_url) == len(keys) + 1, "deleted before the commit"

    with running(path.consumer()):
        # The killed consumer's messages come back after their visibility timeout; on a
        # loaded CI machine the restarted consumer's first run takes a while longer.
        wait_until(lambda: keys_in_lake(path.output, keys), 240, f"every key (see {path.log})")
        wait_until(lambda: queued_messages(sqs, path.queue_url) == 0, 30, "the deletes")
    assert_landed_once(path, keys)


def test_the_prefect_api_down_for_a_while_then_back_loses_nothing(
    event_path: EventPath, s3: Any, tmp_path: Path
) -> None:
    home = tmp_path / "server-home"
    home.mkdir()
    port = free_port()
    env = {**event_path.env, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
    path = EventPath(
        event_path.bucket, event_path.queue_url, event_path.output, env, event_path.log
    )
    sqs = boto3.client("sqs")
    with running(path.consumer()) as consumer:
        with running_prefect_server(home, port):
            before = path.upload(s3, "before", 3)
            wait_until(lambda: keys_in_lake(path.output, before), 90, f"{before} ({path.log})")
            # Their run ends, and only then are their messages deleted: both need the API.
            wait_until(lambda: queued_messages(sqs, path.queue_url) == 0, 60, "the deletes")

        # The server is gone: these wait in the queue, retried, nothing dropped.
        during = path.upload(s3, "during", 10)
        time.sleep(12)
        assert consumer.poll() is None, f"the consumer gave up (see {path.log})"
        assert not {row["object_key"] for row in lake_rows(path.output)} & set(during)
        assert queued_messages(sqs, path.queue_url) == len(during)

        with running_prefect_server(home, port):
            after = path.upload(s3, "after", 3)
            keys = before + during + after
            wait_until(lambda: keys_in_lake(path.output, keys), 120, f"every key ({path.log})")
            wait_until(lambda: queued_messages(sqs, path.queue_url) == 0, 30, "the deletes")
    assert_landed_once(path, keys)


def test_an_upload_storm_while_a_sweep_and_a_backfill_run_lands_each_object_once(
    stack: Stack, s3: Any
) -> None:
    """And a maintenance asked for at the same time: three runs for `newsflow serve`, which
    runs at most `serve_limit` (2) of them at once, each a process."""
    earlier = upload(stack, s3, "storm-backfill", 4)
    wait_until(lambda: keys_in_lake(stack.output, earlier), 60, "the objects to backfill")
    since = datetime.now(UTC)
    serve_processes = [0]
    watching = threading.Event()

    def watch() -> None:
        while not watching.wait(0.2):
            serve_processes[0] = max(serve_processes[0], processes_of(stack.serve_pid))

    watcher = threading.Thread(target=watch)
    watcher.start()
    with stack.client() as client:
        maintenance = client.create_flow_run_from_deployment(
            client.read_deployment_by_name("maintain-lake/daily").id
        )
        sweep_deployment = client.read_deployment_by_name("ingest-articles/sweep").id
        sweeps = [client.create_flow_run_from_deployment(sweep_deployment)]
        backfill = client.create_flow_run_from_deployment(
            client.read_deployment_by_name("backfill-articles/backfill").id,
            parameters={"source": "storm-backfill"},
        )

    def serve_runs() -> list[FlowRun]:
        with stack.client() as client:
            return [client.read_flow_run(run.id) for run in (*sweeps, backfill)]

    # Uploads go on, a wave a second, until a consumer run has run beside a sweep or the
    # backfill, and two waves after. The runner's poll and the runs' processes take
    # seconds, and the consumer's runs can all fall before or after two short runs (its
    # flow start can be held for seconds while `serve` starts their processes on two
    # cores): then another sweep.
    keys: list[str] = []
    waves_after = 2
    for second in range(90):
        keys += upload(stack, s3, f"storm-{second}", 15)
        time.sleep(1)
        if waves_after < 2 or (second >= 3 and overlap(event_runs(stack, since), serve_runs())):
            waves_after -= 1
            if waves_after < 0:
                break
        elif len(sweeps) < 3 and all(run.state and run.state.is_final() for run in serve_runs()):
            with stack.client() as client:
                sweeps.append(client.create_flow_run_from_deployment(sweep_deployment))

    try:
        wait_until(lambda: keys_in_lake(stack.output, keys), 180, "the storm in the lake")
        runs = wait_finished(stack, [maintenance.id, backfill.id, *(r.id for r in sweeps)], 120)
    finally:
        watching.set()
        watcher.join()
    maintenance_run, *serve_ingests = runs
    assert maintenance_run.state.type == StateType.COMPLETED, maintenance_run.state
    # Created together, the three are started by the runner's next poll: without the
    # limit their three processes would be alive together.
    assert serve_processes[0] <= 1 + DeploymentSettings.model_fields["serve_limit"].default
    assert all(run.state.type == StateType.COMPLETED for run in serve_ingests), serve_ingests
    consumer_runs = wait_finished(stack, [r.id for r in event_runs(stack, since)], 60)
    assert all(run.state.type == StateType.COMPLETED for run in consumer_runs)
    assert overlap(consumer_runs, serve_ingests), (
        "the consumer's runs did not overlap a sweep or the backfill; the test proves nothing"
    )
    assert not runs_of(stack, "ingest-articles/on-upload", since)

    assert_each_input_once(stack.output)
    stormed = sorted(r["object_key"] for r in lake_rows(stack.output) if r["object_key"] in keys)
    assert stormed == sorted(keys)
    replaced = [r for r in lake_rows(stack.output) if r["object_key"] in earlier]
    assert sorted(r["object_key"] for r in replaced) == earlier
    assert all(r["ingested_at"] >= since for r in replaced), "the backfill did not replace them"
    wait_until(lambda: queued_messages(boto3.client("sqs"), stack.queue_url) == 0, 30, "deletes")

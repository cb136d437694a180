"""The deployments on a real Prefect server: registration, S3 -> SQS -> the event
consumer's runs, `newsflow emit` -> a triggered run, and backfill through `prefect
deployment run`.

Every test asserts what landed in the lake (rows read back with pyarrow) and in the
ledger, the same files a reader of the lake would see.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from newsflow.deployments.definitions import build_deployments
from newsflow.tasks.lake import Lake, current_versions
from newsflow.tasks.settings import DeploymentSettings, Settings
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import ConcurrencyLimitStrategy, FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort

from tests.conftest import read_table
from tests.deployments.conftest import INPUT_PREFIX, TEST_CRON, Stack, wait_until

TERMINAL = {StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED}


def article(topic: str, number: int) -> bytes:
    return (
        f"Report {number} on {topic}. The harbour authority said on Tuesday that the "
        f"dockworkers' strike over {topic} entered its {number}th day, with ships waiting "
        "outside the port and unions calling for talks with the operators before the weekend."
    ).encode()


def upload(
    stack: Stack, s3: Any, source: str, count: int, extra: dict[str, bytes] | None = None
) -> list[str]:
    objects = {
        f"{INPUT_PREFIX}{source}/2026/story-{i}.txt": article(source, i) for i in range(count)
    }
    objects.update(extra or {})
    for key, body in objects.items():
        s3.put_object(Bucket=stack.bucket, Key=key, Body=body)
    return sorted(objects)


def lake_rows(output: Path) -> list[dict[str, Any]]:
    """Every article and reject row a Delta reader sees: (object_key, line_number,
    ingested_at, kind)."""
    lake = Lake.open(str(output), Settings())
    columns = ["object_key", "line_number", "ingested_at"]
    return [
        {**row, "kind": kind}
        for kind in ("articles", "rejects")
        for row in read_table(lake, kind, columns)
    ]


def ledger_table(output: Path) -> pa.Table:
    return Lake.open(str(output), Settings()).table("ledger").to_pyarrow_table()


def ledger_counts(output: Path) -> Counter[str]:
    """Done commits per object key (a batch's intent rows aside): more than one means the
    object was processed again."""
    table = ledger_table(output)
    done = table.filter(pc.fill_null(table.column("done"), True))
    return Counter(done.column("object_key").to_pylist())


def assert_each_input_once(output: Path) -> None:
    seen = Counter((row["object_key"], row["line_number"]) for row in lake_rows(output))
    doubled = [key for key, count in seen.items() if count > 1]
    assert not doubled, f"rows present twice: {doubled}"


def keys_in_lake(output: Path, keys: list[str]) -> bool:
    return set(keys) <= {row["object_key"] for row in lake_rows(output)}


def runs_since(stack: Stack, since: datetime, **criteria: Any) -> list[FlowRun]:
    """Flow runs created since `since` that match `FlowRunFilter(**criteria)`, oldest
    first, selected by the server: the session's earlier runs cannot crowd them out of
    the page (its default order is by random id)."""
    with stack.client() as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                expected_start_time=FlowRunFilterExpectedStartTime(after_=since), **criteria
            ),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
            limit=200,
        )
    return [r for r in runs if r.created and r.created >= since]


def runs_of(stack: Stack, deployment: str, since: datetime) -> list[FlowRun]:
    with stack.client() as client:
        deployment_id = client.read_deployment_by_name(deployment).id
    return runs_since(stack, since, deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]))


def wait_finished(stack: Stack, run_ids: list, timeout: float) -> list[FlowRun]:
    def finished() -> list[FlowRun] | None:
        with stack.client() as client:
            runs = [client.read_flow_run(run_id) for run_id in run_ids]
        return runs if all(r.state and r.state.type in TERMINAL for r in runs) else None

    return wait_until(finished, timeout, f"flow runs {run_ids} to finish", every=1)


def test_deployments_register_with_schedule_trigger_and_parameters(stack: Stack) -> None:
    parameters = {"input_uri": stack.input_uri, "output_uri": str(stack.output)}
    with stack.client() as client:
        deployed = {
            name: client.read_deployment_by_name(name)
            for name in (
                "ingest-articles/sweep",
                "ingest-articles/on-upload",
                "backfill-articles/backfill",
            )
        }
        automations = client.read_automations()
    for deployment in deployed.values():
        assert deployment.parameters == parameters
    for name in ("ingest-articles/sweep", "backfill-articles/backfill"):
        assert deployed[name].global_concurrency_limit.limit == 1
        assert (
            deployed[name].concurrency_options.collision_strategy
            == ConcurrencyLimitStrategy.ENQUEUE
        )
    assert (
        deployed["ingest-articles/on-upload"].global_concurrency_limit is None
    )  # runs of it may overlap: each batch's commit replaces its objects' rows

    sweep = deployed["ingest-articles/sweep"]
    assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in sweep.schedules] == [
        (TEST_CRON, "UTC", True)
    ]
    assert not deployed["ingest-articles/on-upload"].schedules
    assert not deployed["backfill-articles/backfill"].schedules

    with stack.client() as client:
        compaction = client.read_deployment_by_name("maintain-lake/daily")
    assert compaction.parameters == {"output_uri": str(stack.output)}
    assert [s.schedule.cron for s in compaction.schedules] == ["30 3 * * *"]
    assert compaction.global_concurrency_limit.limit == 1

    triggers = {
        action.deployment_id: automation
        for automation in automations
        for action in automation.actions
        if getattr(action, "deployment_id", None)
    }
    assert set(triggers) == {deployed["ingest-articles/on-upload"].id}
    upload_trigger = triggers[deployed["ingest-articles/on-upload"].id]
    assert upload_trigger.trigger.expect == {"newsflow.objects.created"}
    assert upload_trigger.trigger.match.model_dump() == {
        "prefect.resource.id": f"s3.bucket.{stack.bucket}"
    }
    (action,) = upload_trigger.actions
    assert "event.payload.object_keys" in str(action.parameters["keys"])

    # The default sweep schedule, for when NEWSFLOW_SWEEP_CRON is not set.
    default = build_deployments(DeploymentSettings(input_uri="s3://b/in", output_uri="/lake"))
    assert default[0].schedules[0].schedule.cron == "*/15 * * * *"


def event_runs(stack: Stack, since: datetime) -> list[FlowRun]:
    """The consumer's micro-batch runs (no deployment, tagged `events`) created since."""
    return runs_since(stack, since, tags=FlowRunFilterTags(all_=["events"]))


def test_upload_to_rows_through_sqs_and_the_consumer(stack: Stack, s3: Any) -> None:
    since = datetime.now(UTC)
    started = time.monotonic()
    keys = upload(stack, s3, "e2e-wire", 3)

    wait_until(lambda: keys_in_lake(stack.output, keys), 60, f"{keys} in the lake")
    assert time.monotonic() - started < 60

    rows = [row for row in lake_rows(stack.output) if row["object_key"] in keys]
    assert sorted(row["object_key"] for row in rows) == keys
    assert {row["kind"] for row in rows} == {"articles"}

    # Runs of the consumer, in Prefect, for just the uploaded keys: not a sweep of the
    # prefix, and no run process of the served deployments.
    def announced_in(runs: list[FlowRun]) -> list[dict[str, Any]]:
        return [named for run in runs for named in run.parameters["keys"]]

    def runs_of_the_keys() -> list[FlowRun] | None:
        runs = [r for r in event_runs(stack, since) if r.state and r.state.is_final()]
        return runs if sorted(n["key"] for n in announced_in(runs)) == keys else None

    runs = wait_until(runs_of_the_keys, 30, "the consumer's runs to be recorded")
    assert all(run.state.type == StateType.COMPLETED for run in runs)
    # Each object as its notification announced it: the version (ETag), not just the key.
    assert all(named["etag"] and named["size"] > 0 for named in announced_in(runs))
    assert all(run.deployment_id is None for run in runs)
    assert not runs_of(stack, "ingest-articles/on-upload", since)
    assert not [run for run in runs_of(stack, "ingest-articles/sweep", since) if run.start_time]
    assert_each_input_once(stack.output)

    # The same object announced by hand: `newsflow emit` starts an on-upload run for just
    # that key, which finds it already in the lake.
    again = datetime.now(UTC)
    emitted = subprocess.run(
        [sys.executable, "-m", "newsflow.flows.cli", "emit", f"s3://{stack.bucket}/{keys[0]}"],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert emitted.returncode == 0, emitted.stdout + emitted.stderr
    (rerun,) = wait_until(
        lambda: runs_of(stack, "ingest-articles/on-upload", again), 30, "the emitted event's run"
    )
    (rerun,) = wait_finished(stack, [rerun.id], 60)
    assert rerun.parameters["keys"] == [keys[0]] and rerun.state.type == StateType.COMPLETED
    assert ledger_counts(stack.output)[keys[0]] == 1
    assert_each_input_once(stack.output)


def test_backfill_deployment_run_replaces_rows_without_duplicates(stack: Stack, s3: Any) -> None:
    unreadable = {f"{INPUT_PREFIX}backfill-src/2026/scan.bin": b"\x00\x01 not an article"}
    keys = upload(stack, s3, "backfill-src", 2, unreadable)
    wait_until(lambda: keys_in_lake(stack.output, keys), 60, f"{keys} in the lake")
    before = {(r["object_key"], r["line_number"], r["kind"]): r for r in lake_rows(stack.output)}
    others_before = {k: r for k, r in before.items() if k[0] not in keys}
    started = datetime.now(UTC)

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "prefect",
            "deployment",
            "run",
            "backfill-articles/backfill",
            "--param",
            'source="backfill-src"',
            "--watch",
            "--watch-interval",
            "1",
            "--watch-timeout",
            "90",
        ],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (run,) = runs_of(stack, "backfill-articles/backfill", started)
    assert run.state.type == StateType.COMPLETED

    after = {(r["object_key"], r["line_number"], r["kind"]): r for r in lake_rows(stack.output)}
    assert_each_input_once(stack.output)
    mine = {k: r for k, r in after.items() if k[0] in keys}
    assert set(mine) == {k for k in before if k[0] in keys}, "the same rows, no more, no fewer"
    assert {k[2] for k in mine} == {"articles", "rejects"}
    assert all(r["ingested_at"] >= started for r in mine.values()), "rows were not replaced"
    assert {k: r for k, r in after.items() if k[0] not in keys} == others_before, (
        "backfill touched other sources"
    )
    current = current_versions(ledger_table(stack.output)).to_pylist()
    assert all(row["committed_at"] >= started for row in current if row["object_key"] in keys)

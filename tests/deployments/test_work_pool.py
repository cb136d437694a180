"""`newsflow deploy --pool` and a real Prefect worker: the path where runs are processes
(or pods, or ECS tasks) that a worker starts, instead of `newsflow serve`'s own.

A server of its own: the session's server has the same deployment names served by
`newsflow serve`, whose runner would race the worker for the runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from newsflow.tasks.lake import Lake
from newsflow.tasks.settings import Settings
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import StateType
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests.conftest import read_table, running_prefect_server
from tests.deployments.conftest import wait_until

POOL = "newsflow-test"


@pytest.fixture
def pool_server(tmp_path: Path) -> Iterator[str]:
    home = tmp_path / "server-home"
    home.mkdir()
    with running_prefect_server(home) as url:
        yield url


@contextmanager
def _client(api_url: str) -> Iterator[SyncPrefectClient]:
    with (
        temporary_settings(updates={PREFECT_API_URL: api_url}),
        get_client(sync_client=True) as client,
    ):
        yield client


def _run(command: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{command}: {done.stdout}\n{done.stderr}"


def test_deployed_to_a_process_pool_a_worker_runs_the_sweep(
    pool_server: str, s3: Any, bucket: str, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    env = {
        **os.environ,
        "PREFECT_API_URL": pool_server,
        "PREFECT_HOME": str(tmp_path / "client-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "NEWSFLOW_WORKERS": "1",
        "MALLOC_ARENA_MAX": "1",  # as docs/deployments.md starts workers
    }
    body = b"Dock workers in Rotterdam ended their strike after a night of talks at the port."
    s3.put_object(Bucket=bucket, Key="in/wire/1.txt", Body=body)

    # What docs/deployments.md tells an operator to type.
    _run([sys.executable, "-m", "prefect", "work-pool", "create", POOL, "--type", "process"], env)
    deploy = ["deploy", "--pool", POOL, "--input", f"s3://{bucket}/in/", "--output", str(lake)]
    _run([sys.executable, "-m", "newsflow.flows.cli", *deploy], env)
    with (tmp_path / "worker.log").open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its group holds the flow-run process it starts
        )
        try:
            with _client(pool_server) as client:
                deployment = client.read_deployment_by_name("ingest-articles/sweep")
                assert deployment.work_pool_name == POOL
                flow_run = client.create_flow_run_from_deployment(deployment.id)

                def finished() -> Any:
                    state = client.read_flow_run(flow_run.id).state
                    return state if state and state.is_final() else None

                state = wait_until(finished, 180, f"the worker's run (see {log.name})")
            assert state.type == StateType.COMPLETED, state
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=30)

    opened = Lake.open(str(lake), Settings())
    rows = read_table(opened, "articles", ["object_key", "source"])
    assert rows == [{"object_key": "in/wire/1.txt", "source": "wire"}]

"""The ingest flow gives the same lake wherever its stages run: in the flow's process, in
its pool of worker processes (started early, as the command line does), or on a Dask
cluster."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import newsflow.flows.ingest as ingest_module
import pytest
from newsflow.flows.demo import sample_objects
from newsflow.flows.ingest import ingest_articles
from newsflow.tasks.lake import Lake
from newsflow.tasks.settings import Settings
from newsflow.tasks.stages.batch import start_workers_early

from tests.conftest import SHARED

pytestmark = pytest.mark.usefixtures("prefect_api")

# Differ between two runs over the same objects whatever the runner.
_RUN_COLUMNS = ["ingested_at"]
_SUMMARY_COUNTS = (
    "objects_listed",
    "objects_new",
    "articles",
    "rejects",
    "batches",
    "rejects_by_reason",
    "articles_by_source",
    "articles_by_language",
)


def lake_rows(output: Path, also_drop: tuple[str, ...] = ()) -> dict[str, list[dict]]:
    """Each table's rows as a Delta reader sees them, without `_RUN_COLUMNS`; rows carry
    their batch id, so equal rows mean the same batches too."""
    lake = Lake.open(str(output), Settings())
    tables = {}
    for name in ("articles", "rejects"):
        table = lake.table(name).to_pyarrow_table()
        rows = table.drop_columns([*_RUN_COLUMNS, *also_drop]).to_pylist()
        tables[name] = sorted(rows, key=lambda r: (r["object_key"], r["line_number"] or 0))
    return tables


def test_worker_pool_and_dask_local_cluster_match_the_flow_process(
    s3, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, body in sample_objects(SHARED / "samples" / "seed-article.txt").items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    monkeypatch.setenv("NEWSFLOW_BATCH_SIZE", "3")  # several batches, so several in flight

    default = ingest_articles(input_uri=f"s3://{bucket}/inbox", output_uri=str(tmp_path / "a"))

    monkeypatch.setenv("NEWSFLOW_WORKERS", "2")  # the default on two cores
    start_workers_early(Settings())
    pooled = ingest_articles(input_uri=f"s3://{bucket}/inbox", output_uri=str(tmp_path / "p"))

    monkeypatch.setenv("NEWSFLOW_TASK_RUNNER_ADDRESS", "local")
    monkeypatch.setenv("NEWSFLOW_WORKERS", "2")  # a LocalCluster of two worker processes
    monkeypatch.setenv("NEWSFLOW_BATCHES_IN_FLIGHT", "2")
    on_dask = ingest_articles(input_uri=f"s3://{bucket}/inbox", output_uri=str(tmp_path / "b"))

    assert default["batches"] > 1
    for other, output in ((pooled, "p"), (on_dask, "b")):
        for name in _SUMMARY_COUNTS:
            assert other[name] == default[name], (output, name)
        assert lake_rows(tmp_path / output) == lake_rows(tmp_path / "a")


def test_a_run_with_nothing_new_starts_no_workers(
    s3, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep that finds nothing new costs no worker start-up (seconds of CPU each)."""
    body = b"Dock workers in Rotterdam ended their strike after a night of talks at the port."
    s3.put_object(Bucket=bucket, Key="in/s/1.txt", Body=body)
    monkeypatch.setenv("NEWSFLOW_WORKERS", "2")
    pools: list[Settings] = []
    real_stage_pool = ingest_module.stage_pool

    def counted_stage_pool(settings: Settings, *args: Any, **kwargs: Any) -> Any:
        pools.append(settings)
        return real_stage_pool(settings, *args, **kwargs)

    monkeypatch.setattr(ingest_module, "stage_pool", counted_stage_pool)
    output = str(tmp_path / "lake")
    first = ingest_articles(input_uri=f"s3://{bucket}/in/", output_uri=output)
    again = ingest_articles(input_uri=f"s3://{bucket}/in/", output_uri=output)
    assert (first["articles"], again["objects_listed"], again["objects_new"]) == (1, 1, 0)
    assert len(pools) == 1


def test_a_run_of_a_few_objects_processes_them_without_starting_workers(
    s3, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run an upload triggers has one object or a few: starting workers would cost more
    than it saves. From `workers_min_objects` on, or in a second batch, they start."""
    for n in range(3):
        body = f"Dock workers at pier {n} in Rotterdam ended their strike on Monday after a night of talks."
        s3.put_object(Bucket=bucket, Key=f"in/s/{n}.txt", Body=body.encode())
    monkeypatch.setenv("NEWSFLOW_WORKERS", "2")
    pools: list[bool] = []  # whether each run got workers
    real_stage_pool = ingest_module.stage_pool

    @contextmanager
    def recorded_stage_pool(settings: Settings, **kwargs: Any) -> Iterator[Any]:
        with real_stage_pool(settings, **kwargs) as pool:
            pools.append(pool is not None)
            yield pool

    monkeypatch.setattr(ingest_module, "stage_pool", recorded_stage_pool)
    few = ingest_articles(input_uri=f"s3://{bucket}/in/", output_uri=str(tmp_path / "few"))
    monkeypatch.setenv("NEWSFLOW_WORKERS_MIN_OBJECTS", "3")
    enough = ingest_articles(input_uri=f"s3://{bucket}/in/", output_uri=str(tmp_path / "enough"))
    monkeypatch.setenv("NEWSFLOW_BATCH_SIZE", "2")
    monkeypatch.setenv("NEWSFLOW_WORKERS_MIN_OBJECTS", "100")
    batches = ingest_articles(input_uri=f"s3://{bucket}/in/", output_uri=str(tmp_path / "two"))
    assert pools == [False, True, True]
    assert few["articles"] == enough["articles"] == batches["articles"] == 3
    for output in ("enough", "two"):  # batches of 2 have other batch ids
        assert lake_rows(tmp_path / output, ("batch_id",)) == lake_rows(
            tmp_path / "few", ("batch_id",)
        )

"""Two runs started together over the same prefix: the lease lets one write at a time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest

from tests.faults.conftest import Driver, Run, upload
from tests.faults.corpus import article_objects, reject_objects
from tests.faults.lake import assert_exactly_once


def test_two_runs_together_on_a_local_lake(
    driver: Driver, s3: Any, bucket: str, tmp_path: Path
) -> None:
    """Also after a crash: both runs find the dead run's lease and race to break it."""
    expected = upload(s3, bucket, {**article_objects("in/", 24), **reject_objects("in/")})
    output = tmp_path / "lake"
    run = Run(f"s3://{bucket}/in/", str(output), env={"NEWSFLOW_BATCH_SIZE": "4"})

    results = driver.run(run, run)
    assert [r.returncode for r in results] == [0, 0], results[0].output[-3000:]
    assert_exactly_once(output, expected)

    expected |= upload(s3, bucket, article_objects("in/more/", 12, version=2))
    crash = Run(run.input, run.output, run.env, {"target": "tasks.write.publish_batch", "nth": 2})
    [killed] = driver.run(crash)
    assert killed.killed
    results = driver.run(run, run)
    assert [r.returncode for r in results] == [0, 0], results[1].output[-3000:]
    assert_exactly_once(output, expected)


@pytest.mark.parametrize("runs", [2, 3])
def test_runs_together_on_an_s3_lake(
    driver: Driver, s3: Any, arrow_s3: pafs.S3FileSystem, bucket: str, runs: int
) -> None:
    """On S3 the lease is a conditional PUT (If-None-Match), not a hard link."""
    expected = upload(s3, bucket, article_objects("in/", 16))
    run = Run(f"s3://{bucket}/in/", f"s3://{bucket}/lake", env={"NEWSFLOW_BATCH_SIZE": "4"})
    results = driver.run(*[run] * runs)
    assert all(r.returncode == 0 for r in results), [r.output[-2000:] for r in results]
    table = ds.dataset(
        f"{bucket}/lake/articles", filesystem=arrow_s3, partitioning="hive"
    ).to_table(columns=["object_key", "line_number", "object_etag"])
    units = [(r["object_key"], r["line_number"]) for r in table.to_pylist()]
    assert len(units) == len(set(units)), "doubled rows"
    assert {key for key, _ in units} == set(expected)
    assert {(r["object_key"], r["object_etag"]) for r in table.to_pylist()} == set(expected.items())

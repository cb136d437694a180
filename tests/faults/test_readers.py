"""Readers while the lake changes: runs, replacements, reprocessing and maintenance at once.

A thread of the test reads `articles` and `rejects` over and over, with deltalake and with
Polars, while real `newsflow run` and `newsflow maintain` processes write the lake. Every
read must succeed and show each unit once, and no unit a read showed may be missing from
a later one.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable
from newsflow.tasks.lake import Lake, maintain
from newsflow.tasks.settings import Settings

from tests.faults.conftest import Driver, Run, RunResult, upload
from tests.faults.conftest import maintain as maintenance
from tests.faults.corpus import article_objects, reject_objects, story
from tests.faults.lake import READERS, assert_exactly_once, doubled, glob_rows, table_uri


class Reader(threading.Thread):
    """Reads the lake until stopped; records every read's problems."""

    def __init__(self, output: Path) -> None:
        super().__init__(daemon=True)
        self.output = output
        self.stop = threading.Event()
        self.reads = 0
        self.problems: list[str] = []
        self.seen: dict[str, set[tuple[str, int]]] = {}

    def run(self) -> None:
        while not self.stop.is_set():
            for reader, read in READERS.items():
                for table in ("articles", "rejects"):
                    try:
                        rows = read(self.output, table)
                    except Exception as error:  # any failure to read is what we look for
                        self.problems.append(f"{reader} {table}: {error!r}")
                        continue
                    self.reads += 1
                    if twice := doubled(rows):
                        self.problems.append(f"{reader} {table}: twice {twice}")
                    units = {(key, line) for key, line, _, _ in rows}
                    seen = self.seen.setdefault(f"{reader} {table}", set())
                    if lost := seen - units:
                        self.problems.append(f"{reader} {table}: lost {sorted(lost)}")
                    seen |= units
            time.sleep(0.02)


def succeeded(results: list[RunResult]) -> None:
    for result in results:
        assert result.returncode == 0, result.output[-3000:]


def test_readers_see_every_row_once_while_runs_replace_and_maintain(
    driver: Driver, s3: Any, bucket: str, tmp_path: Path
) -> None:
    output = tmp_path / "lake"
    source = f"s3://{bucket}/in/"
    run = Run(source, str(output), env={"NEWSFLOW_BATCH_SIZE": "3"})
    expected = upload(s3, bucket, {**article_objects("in/", 18), **reject_objects("in/")})
    [first] = driver.run(Run(source, str(output), env=run.env, extra=["--key", "in/src0/0.txt"]))
    succeeded([first])  # the tables exist before the reader starts
    reader = Reader(output)
    reader.start()
    try:
        # Two runs over the same objects: each batch is written twice, replacing itself.
        succeeded(driver.run(run, run))
        # New versions (same partitions) and new objects, while maintenance compacts.
        updated = {
            key: (story(i, version=2) + " Updated.").encode()
            # articles stay articles: a reject turning article leaves `rejects`
            for i, key in enumerate(sorted(k for k in expected if k.endswith("0.txt")))
        }
        expected |= upload(s3, bucket, {**updated, **article_objects("in/more/", 9)})
        succeeded(driver.run(run, maintenance(str(output))))
        # Everything reprocessed while two maintenance runs compact the same partitions.
        reprocess = Run(source, str(output), env=run.env, extra=["--reprocess"])
        succeeded(driver.run(reprocess, maintenance(str(output)), maintenance(str(output))))
        time.sleep(0.5)
    finally:
        reader.stop.set()
        reader.join()
    assert not reader.problems, reader.problems[:10]
    print(f"{reader.reads} reads of a table, none failed or showed a unit twice or lost one")
    assert reader.reads >= 40
    assert_exactly_once(output, expected)


def test_a_plain_glob_and_an_old_version_after_vacuum(
    driver: Driver, s3: Any, bucket: str, tmp_path: Path
) -> None:
    """Not guaranteed, and shown here: a glob of the folders sees the rows commits removed
    until they are vacuumed; a reader of a version whose files were vacuumed fails."""
    output = tmp_path / "lake"
    source = f"s3://{bucket}/in/"
    expected = upload(s3, bucket, article_objects("in/", 9))
    succeeded(driver.run(Run(source, str(output), env={"NEWSFLOW_BATCH_SIZE": "3"})))
    reprocess = Run(source, str(output), env={"NEWSFLOW_BATCH_SIZE": "3"}, extra=["--reprocess"])
    succeeded(driver.run(reprocess))
    rows = len(assert_exactly_once(output, expected).articles)
    assert glob_rows(output, "articles") == 2 * rows  # the first run's files, still there
    old = DeltaTable(table_uri(output, "articles"), version=1)
    assert old.to_pyarrow_table().num_rows < rows  # the first batch only: readable

    maintain(Lake.open(str(output), Settings(vacuum_retention_hours=0)))
    assert glob_rows(output, "articles") == rows
    assert len(assert_exactly_once(output, expected).articles) == rows
    with pytest.raises(OSError):
        old.to_pyarrow_table()

"""SIGKILL the ingest process at every step of the commit protocol, rerun, and check the lake.

Each step uploads new objects and new versions of old ones (so every run has batches to
write and older rows to supersede), then starts a real `newsflow run` that kills itself at
one precise point (see driver.py) or is killed from outside at a random moment. After
every kill DuckDB must read the lake and show only committed rows; after the final clean
run every input object is there exactly once.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.faults.conftest import SOAK, Driver, Run, upload
from tests.faults.corpus import article_objects, reject_objects, story
from tests.faults.lake import (
    assert_exactly_once,
    assert_readable_and_committed,
    duckdb_articles,
    duckdb_rejects,
)

WRITE = "tasks.write"
COMPACT = "tasks.compact"


def at_call(target: str, nth: int = 1) -> dict[str, Any]:
    return {"target": target, "event": "call", "nth": nth}


def at_line(target: str, contains: str, nth: int = 1) -> dict[str, Any]:
    return {"target": target, "event": "line", "contains": contains, "nth": nth}


# (where, fault): the process SIGKILLs itself there. Order matters a little: a kill that
# leaves a committed, unpublished batch makes the next run start with its recovery.
KILL_POINTS: list[tuple[str, dict[str, Any]]] = [
    ("during download", at_call("tasks.fetch.download", 2)),
    ("after a download", {"target": "tasks.fetch.download", "event": "return", "nth": 4}),
    ("between fetch and clean", at_call("tasks.batch.run_stage", 1)),
    ("between clean and language", at_call("tasks.batch.run_stage", 2)),
    ("between language and extract", at_call("tasks.batch.run_stage", 3)),
    ("between extract and enrich", at_call("tasks.batch.run_stage", 4)),
    ("between two batches", at_call("tasks.batch.run_stage", 5)),
    ("staging started, no Parquet yet", at_call(f"{WRITE}._write_parquet", 1)),
    # The first Parquet file a run closes is the snapshot, written (in memory) at its start.
    ("mid-Parquet write (no footer)", at_call("pyarrow.parquet.core.ParquetWriter.close", 2)),
    ("mid-Parquet write, later file", at_call("pyarrow.parquet.core.ParquetWriter.close", 4)),
    ("written, before the ledger rows", at_call(f"{WRITE}._ledger_rows", 1)),
    ("written, before the commit", at_line("tasks.ledger.commit_ledger", "root.move(")),
    ("committed, before publish", at_line(f"{WRITE}.write_batch_files", "publish_batch(")),
    ("publish (or recovery) starts", at_call(f"{WRITE}.publish_batch", 1)),
    ("mid-publish, one file moved", at_line(f"{WRITE}.publish_batch", "root.ensure_dir(", 2)),
    (
        "mid-publish, old rows not yet removed",
        at_line(f"{WRITE}.publish_batch", "rewrite_without("),
    ),
    ("mid-publish, copy staged, not committed", at_line(f"{COMPACT}._swap", "commit_ledger(")),
    ("mid-publish, copy committed, not in place", at_call(f"{COMPACT}._finish", 1)),
    ("mid-publish, marker gone", at_line(f"{WRITE}.publish_batch", "root.delete_tree(staging)")),
    # The first snapshot a run writes is at its start; the second after its first batch.
    ("published, snapshot not yet replaced", at_call("tasks.snapshot.write_snapshot", 2)),
    ("after recovery loaded the ledger", {"target": "tasks.ledger.Ledger.load", "event": "return"}),
    ("lease renewal after a batch", at_call("tasks.ledger.Lease.renew", 1)),
    ("all written, lease still held", at_call("tasks.ledger.Lease.release", 1)),
    ("after the run, artifacts", at_call("flows.ingest._publish_artifacts", 1)),
    # Last: the run before finished, so the objects this step changes were in the lake,
    # and replacing them retires files.
    (
        "snapshot replaced, retention not started",
        at_line("tasks.snapshot.write_snapshot", "record.publish(root)"),
    ),
    ("snapshot replaced, still pending", at_line("tasks.snapshot.write_snapshot", "PENDING_FILE")),
]


def mutate(s3: Any, bucket: str, step: int, expected: dict[str, str]) -> None:
    """New objects for this step, plus a new version of two earlier ones."""
    fresh = article_objects(f"in/step{step:02d}/", 4)
    if step % 4 == 0:
        fresh.update(reject_objects(f"in/step{step:02d}/"))
    plain = sorted(key for key in expected if key.endswith(".txt") and "/bad/" not in key)
    for n, key in enumerate(random.Random(step).sample(plain, min(2, len(plain)))):
        fresh[key] = (story(step * 100 + n, version=step) + " Updated.").encode()
    expected.update(upload(s3, bucket, fresh))


def check_after_kill(
    output: Path, where: str, doubled_seen: dict[str, int], shown: set[str]
) -> None:
    """Readable, committed, nothing twice in the snapshot, and no object it showed before
    missing from it now (the inputs are never deleted); `shown` is updated."""
    units = assert_readable_and_committed(output)
    doubled = sum(1 for n in units.values() if n > 1)
    if doubled:
        doubled_seen[where] = doubled
    keys = {row[0] for row in duckdb_articles(output) + duckdb_rejects(output)}
    assert shown <= keys, f"{where}: the snapshot lost {sorted(shown - keys)}"
    shown |= keys


def test_sigkill_at_every_step_then_rerun(
    driver: Driver, s3: Any, bucket: str, tmp_path: Path
) -> None:
    output = tmp_path / "lake"
    source = f"s3://{bucket}/in/"
    env = {"NEWSFLOW_BATCH_SIZE": "3"}
    expected: dict[str, str] = {}
    doubled_seen: dict[str, int] = {}
    shown: set[str] = set()
    kills = 0
    rng = random.Random(6)
    started = time.monotonic()

    for step, (where, fault) in enumerate(KILL_POINTS):
        mutate(s3, bucket, step, expected)
        [result] = driver.run(Run(source, str(output), env=env, fault=fault))
        assert result.killed, (
            f"{where}: the run was not killed ({result.returncode})\n{result.output[-3000:]}"
        )
        kills += 1
        check_after_kill(output, where, doubled_seen, shown)
        if "no footer" in where:
            torn = [p for p in (output / "_staging").rglob("*.parquet")]
            assert torn, "the kill did not leave a torn file to prove invisible"
            with pytest.raises(Exception):  # noqa: B017 - any Parquet error shows it is torn
                for path in torn:
                    pq.ParquetFile(path)

    # Random moments: the test kills the run from outside after a random delay.
    for round_ in range(4 * SOAK):
        mutate(s3, bucket, len(KILL_POINTS) + round_, expected)
        [pid] = driver.start(Run(source, str(output), env=env))
        time.sleep(rng.uniform(0.3, 2.5))
        with contextlib.suppress(ProcessLookupError):  # it may have finished already
            os.kill(pid, signal.SIGKILL)
        [result] = driver.wait()
        kills += result.killed
        check_after_kill(output, f"random {round_}", doubled_seen, shown)

    [final] = driver.run(Run(source, str(output), env=env))
    assert final.returncode == 0, final.output[-5000:]
    assert_exactly_once(output, expected)
    [again] = driver.run(Run(source, str(output), env=env, extra=["--json"]))
    assert again.returncode == 0 and '"objects_new": 0' in again.output
    assert_exactly_once(output, expected)
    print(
        f"{kills} kills, {len(expected)} objects, {time.monotonic() - started:.0f}s; "
        f"transient doubles a glob saw after: {doubled_seen}"
    )
    assert kills >= 20

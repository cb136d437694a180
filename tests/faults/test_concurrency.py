"""Runs started together: no lease, Delta's optimistic commits, each object once."""

from __future__ import annotations

import json
import multiprocessing
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable
from newsflow.tasks.lake import Lake
from newsflow.tasks.lake import maintain as maintain_tables
from newsflow.tasks.schema import Article
from newsflow.tasks.settings import Settings

from tests.faults.conftest import Driver, Run, RunResult, maintain, upload
from tests.faults.corpus import article_objects, reject_objects, story
from tests.faults.lake import assert_exactly_once, deltalake_rows, doubled

# A commit that lost to a concurrent one waits in `backoff` before it is tried again.
AFTER_A_CONFLICT = {"target": "newsflow.tasks.lake.delta.backoff", "event": "call"}


def test_three_runs_over_one_prefix_then_a_crash_and_two_reruns(
    driver: Driver, s3: Any, bucket: str, tmp_path: Path
) -> None:
    """Three runs list the same objects and write the same batches at once; one of them is
    killed at its first lost commit (if it loses one). Then a run is killed after its
    first batch's articles commit, and two reruns start together."""
    expected = upload(s3, bucket, {**article_objects("in/", 24), **reject_objects("in/")})
    output = tmp_path / "lake"
    run = Run(f"s3://{bucket}/in/", str(output), env={"NEWSFLOW_BATCH_SIZE": "4"})
    conflicted = Run(run.input, run.output, run.env, AFTER_A_CONFLICT)
    results = driver.run(conflicted, run, run)
    assert results[0].returncode in (0, -9), results[0].output[-3000:]
    assert [r.returncode for r in results[1:]] == [0, 0], results[1].output[-3000:]
    assert_exactly_once(output, expected)

    expected |= upload(s3, bucket, article_objects("in/more/", 12, version=2))
    crash = {
        "target": "newsflow.tasks.lake.lake.Lake.write_batch",
        "event": "line",
        "contains": "ledger_rows = _ledger_rows(",
    }
    [killed] = driver.run(Run(run.input, run.output, run.env, crash))
    assert killed.killed
    results = driver.run(run, run)
    assert [r.returncode for r in results] == [0, 0], results[1].output[-3000:]
    assert_exactly_once(output, expected)
    print(f"the run stopped at its first lost commit was killed: {results[0].killed}")


def test_two_runs_together_on_an_s3_lake(driver: Driver, s3: Any, bucket: str) -> None:
    """On S3 a commit is a PUT of the next log entry with If-None-Match: *."""
    expected = upload(s3, bucket, {**article_objects("in/", 16), **reject_objects("in/")})
    output = f"s3://{bucket}/lake"
    run = Run(f"s3://{bucket}/in/", output, env={"NEWSFLOW_BATCH_SIZE": "4"})
    results = driver.run(run, run)
    assert [r.returncode for r in results] == [0, 0], [r.output[-2000:] for r in results]
    assert_exactly_once(output, expected)


def flow_span(result: RunResult) -> tuple[float, float]:
    """When the run's flow began and finished (seconds of the day, from its log)."""
    times = [
        line[:12]
        for line in result.output.splitlines()
        if "Flow run" in line and ("Beginning flow run" in line or "Finished in state" in line)
    ]
    begun, finished = (
        int(t[:2]) * 3600 + int(t[3:5]) * 60 + float(t[6:]) for t in (times[0], times[-1])
    )
    return begun, finished + (86400 if finished < begun else 0)


def test_runs_over_disjoint_prefixes_do_not_wait_for_each_other(
    driver: Driver, s3: Any, bucket: str, tmp_path: Path
) -> None:
    """Each of three runs alone, then the three together, into one lake (each prefix holds
    its own sources, so the runs write disjoint partitions): each object once. The times
    are printed, not asserted: on this rig the three flows start seconds apart, one after
    the other (the one Prefect server they share, measured: flows began 5-15 s apart),
    so the figure says little about the lake; `test_writers_of_disjoint_partitions_...`
    measures the lake's part."""
    prefixes = ["a/", "b/", "c/"]
    env = {"NEWSFLOW_BATCH_SIZE": "3"}
    alone, together = tmp_path / "alone", tmp_path / "together"
    expected = {}
    for prefix in prefixes:
        expected |= upload(s3, bucket, article_objects(f"in/{prefix}", 30, sources=prefix[0]))
    results = [driver.run(Run(f"s3://{bucket}/in/{p}", str(alone), env=env))[0] for p in prefixes]
    concurrent = driver.run(
        *(Run(f"s3://{bucket}/in/{p}", str(together), env=env) for p in prefixes)
    )
    assert all(r.returncode == 0 for r in results + concurrent)
    assert_exactly_once(alone, expected)
    assert_exactly_once(together, expected)
    flows_alone = [end - begin for begin, end in map(flow_span, results)]
    spans = [flow_span(r) for r in concurrent]
    flows_together = max(end for _, end in spans) - min(begin for begin, _ in spans)
    print(
        f"flows alone: {[round(s, 1) for s in flows_alone]} s (sum {sum(flows_alone):.1f}), "
        f"together {flows_together:.1f} s: {flows_together / sum(flows_alone):.2f} of the sum; "
        f"processes alone {[round(r.seconds, 1) for r in results]} s wall, "
        f"{[round(r.cpu_seconds, 1) for r in results]} s CPU; together "
        f"{[round(r.seconds, 1) for r in concurrent]} s wall, "
        f"{[round(r.cpu_seconds, 1) for r in concurrent]} s CPU"
    )
    assert flows_together > 0


@pytest.mark.parametrize("where", ["local", "s3"])
def test_two_maintenance_runs_together_never_double_rows(
    driver: Driver, s3: Any, bucket: str, tmp_path: Path, where: str
) -> None:
    """delta-rs's own `optimize.compact()` started twice from one version doubles every
    row (../shared/DELTA-NOTES.md); newsflow's compaction is a partition replace."""
    expected = upload(s3, bucket, {**article_objects("in/", 20), **reject_objects("in/")})
    output = str(tmp_path / "lake") if where == "local" else f"s3://{bucket}/lake"
    [ingest] = driver.run(Run(f"s3://{bucket}/in/", output, env={"NEWSFLOW_BATCH_SIZE": "2"}))
    assert ingest.returncode == 0, ingest.output[-3000:]
    results = driver.run(maintain(output), maintain(output))
    assert [r.returncode for r in results] == [0, 0], [r.output[-3000:] for r in results]
    assert_exactly_once(output, expected)
    reports = [json.loads(r.output[r.output.index('{\n  "output"') :]) for r in results]
    compacted = sum(r["partitions_compacted"] for r in reports)
    busy = sum(r["partitions_busy"] for r in reports)
    print(f"{where}: {compacted} partitions compacted, {busy} left busy: {reports}")
    assert compacted >= 3


def write_batches(output: str, source: str, batches: int) -> tuple[float, float]:
    """`batches` batches of 3 articles of one source, each its own commits, as a run
    writes them; returns (wall, CPU) seconds. Runs in a spawned process."""
    started, cpu = time.monotonic(), time.process_time()
    lake = Lake.open(output, Settings())
    ledger = lake.ledger()
    for b in range(batches):
        keys = [f"in/{source}/{b}-{i}.txt" for i in range(3)]
        articles = [
            Article(
                object_key=key,
                object_etag="e1",
                source=source,
                last_modified=datetime(2026, 3, 1 + i, tzinfo=UTC),
                content_type="text",
                raw="",
                text=story(b * 3 + i),
            )
            for i, key in enumerate(keys)
        ]
        lake.write_batch(f"{source}-{b}", [(k, "e1") for k in keys], articles, [], ledger, {})
    return time.monotonic() - started, time.process_time() - cpu


def test_writers_of_disjoint_partitions_do_not_wait_for_each_other(tmp_path: Path) -> None:
    """Three processes each commit 15 batches (rejects none, articles, ledger) to their own
    source's partitions, alone and then together. Together, their commits to `articles`
    interleave (a lake-wide lease held by a writer would keep each one's commits in one
    block) and they take less than the sum of their times alone (printed: the fraction
    depends on the machine's load; a lease would make it the sum). The commits to
    `ledger` are blind appends to one table, which delta-rs retries itself."""
    sources = ["a", "b", "c"]
    spawn = multiprocessing.get_context("spawn")  # deltalake's runtime does not survive fork
    with spawn.Pool(3) as pool:
        alone = [pool.apply(write_batches, (str(tmp_path / "alone"), s, 15)) for s in sources]
        pending = [
            pool.apply_async(write_batches, (str(tmp_path / "together"), s, 15)) for s in sources
        ]
        started = time.monotonic()
        together = [p.get() for p in pending]
        span = time.monotonic() - started
    summed = sum(wall for wall, _ in alone)
    rows = deltalake_rows(tmp_path / "together", "articles")
    assert len(rows) == 3 * 15 * 3 and not doubled(rows)
    print(
        f"alone {[round(w, 2) for w, _ in alone]} s wall (sum {summed:.2f}), "
        f"{[round(c, 2) for _, c in alone]} s CPU; together {span:.2f} s wall "
        f"({[round(w, 2) for w, _ in together]}), {[round(c, 2) for _, c in together]} s CPU: "
        f"{span / summed:.2f} of the sum"
    )
    commits = DeltaTable(tmp_path / "together" / "articles").history()
    writers = [
        c["newsflow.batch"].split("-")[0] for c in reversed(commits) if "newsflow.batch" in c
    ]
    assert len(writers) == 3 * 15
    for source in sources:
        own = [i for i, writer in enumerate(writers) if writer == source]
        assert set(writers[own[0] : own[-1] + 1]) != {source}, f"{source}'s commits in one block"
    assert span < summed


def maintain_lake(output: str) -> dict[str, int]:
    """`newsflow.tasks.lake.maintain` in a spawned process: what it compacted and found busy."""
    report = maintain_tables(Lake.open(output, Settings()))
    return {"compacted": report.partitions_compacted, "busy": report.partitions_busy}


def test_two_maintenance_processes_started_together_never_double_rows(tmp_path: Path) -> None:
    """Without Prefect in between, so the two start within milliseconds of each other:
    they race for the same partitions, and the loser of each leaves it."""
    output = str(tmp_path / "lake")
    spawn = multiprocessing.get_context("spawn")
    with spawn.Pool(2) as pool:
        pool.apply(write_batches, (output, "a", 15))
        pending = [pool.apply_async(maintain_lake, (output,)) for _ in range(2)]
        reports = [r.get() for r in pending]
    rows = deltalake_rows(output, "articles")
    assert len(rows) == 15 * 3 and not doubled(rows)
    print(f"two maintenance processes: {reports}")
    assert sum(r["compacted"] for r in reports) >= 3

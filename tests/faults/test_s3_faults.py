"""S3 misbehaving under a real run: ~10 % failed requests, then an outage."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable

from tests.faults.conftest import SOAK_ENABLED, Driver, Run, upload
from tests.faults.corpus import article_objects, reject_objects
from tests.faults.lake import (
    assert_exactly_once,
    assert_readable,
    current_ledger,
    deltalake_rows,
    options,
    table_uri,
)
from tests.faults.proxy import FaultProxy


def lake_content(output: str | Path) -> tuple[list[str], list[str]]:
    """Sorted (key, line, text) of articles and (key, line, reason) of rejects."""

    def read(name: str, columns: list[str]) -> list[str]:
        table = DeltaTable(table_uri(output, name), storage_options=options(output))
        return sorted(map(str, table.to_pyarrow_table(columns=columns).to_pylist()))

    return (
        read("articles", ["object_key", "line_number", "text"]),
        read("rejects", ["object_key", "line_number", "reason"]),
    )


def test_flaky_s3_still_gives_exactly_once(
    driver: Driver,
    s3: Any,
    s3_endpoint: str,
    bucket: str,
    tmp_path: Path,
) -> None:
    """500, 503 SlowDown, dropped connections and cut bodies on ~10 % of requests, on the
    input reads (boto3) and on the S3 lake's reads and commits (delta-rs, whose endpoint is
    the proxy too): boto3's retries, delta-rs's own and the task retries absorb them all."""
    expected = upload(s3, bucket, {**article_objects("in/", 30), **reject_objects("in/")})
    local = tmp_path / "lake"
    baseline = tmp_path / "baseline"
    [clean] = driver.run(Run(f"s3://{bucket}/in/", str(baseline)))
    assert clean.returncode == 0
    with FaultProxy(s3_endpoint, rate=0.1, seed=1) as proxy:
        env = {"AWS_ENDPOINT_URL": proxy.url, "NEWSFLOW_BATCH_SIZE": "8"}
        results = driver.run(
            Run(f"s3://{bucket}/in/", str(local), env=env),
            Run(f"s3://{bucket}/in/", f"s3://{bucket}/lake", env=env),
        )
    for result in results:
        assert result.returncode == 0, result.output[-5000:]
    assert_exactly_once(local, expected)
    assert_exactly_once(f"s3://{bucket}/lake", expected)
    assert lake_content(f"s3://{bucket}/lake") == lake_content(local)
    assert lake_content(local) == lake_content(baseline), "faults changed what was written"
    injected = sum(n for fault, n in proxy.counts.items() if fault != "requests")
    on_lake = sum(n for fault, n in proxy.lake_counts.items() if fault != "requests")
    retried = [r.output.count("Retrying") for r in results]
    print(
        f"proxy: {dict(proxy.counts)}; of them on the S3 lake (delta-rs): "
        f"{dict(proxy.lake_counts)}; task retries logged per run: {retried}"
    )
    assert injected >= 10, f"too few faults injected to prove anything: {proxy.counts}"
    assert on_lake >= 5, f"too few faults on the lake's requests: {proxy.lake_counts}"


def test_s3_down_from_the_start_fails_clearly(
    driver: Driver, s3: Any, s3_endpoint: str, bucket: str, tmp_path: Path
) -> None:
    """Every request fails: the run ends with S3's own error and records nothing."""
    upload(s3, bucket, article_objects("in/", 4))
    output = tmp_path / "lake"
    with FaultProxy(s3_endpoint, rate=0.0) as proxy:
        proxy.down = True
        env = {"AWS_ENDPOINT_URL": proxy.url, "NEWSFLOW_S3_MAX_ATTEMPTS": "3"}
        [result] = driver.run(Run(f"s3://{bucket}/in/", str(output), env=env))
    assert result.returncode == 1
    last_line = result.output.strip().splitlines()[-1]
    # S3's own error ends the output: a 503 after boto3's retries, or the dropped connection.
    assert "ListObjectsV2" in last_line or proxy.url in last_line, last_line
    assert current_ledger(output) == {}
    assert deltalake_rows(output, "articles") == deltalake_rows(output, "rejects") == []


@pytest.mark.skipif(not SOAK_ENABLED, reason="~90 s of task retry delays: NEWSFLOW_FAULT_SOAK=1")
def test_s3_down_mid_run_records_only_what_was_written(
    driver: Driver, s3: Any, s3_endpoint: str, bucket: str, tmp_path: Path
) -> None:
    """S3 goes down after the first commit: the fetch task exhausts its retries (2 + 10 +
    30 s), the run fails, the ledger holds only objects whose rows are in the lake, and
    the run after the outage completes the rest exactly once."""
    expected = upload(s3, bucket, {**article_objects("in/", 20), **reject_objects("in/")})
    output = tmp_path / "lake"
    with FaultProxy(s3_endpoint, rate=0.0) as proxy:
        env = {
            "AWS_ENDPOINT_URL": proxy.url,
            "NEWSFLOW_BATCH_SIZE": "4",
            "NEWSFLOW_S3_MAX_ATTEMPTS": "3",
        }

        def outage_after_first_commit() -> None:
            deadline = time.monotonic() + 60
            while not list((output / "ledger").glob("*.parquet")):
                if time.monotonic() > deadline:
                    return
                time.sleep(0.02)
            proxy.down = True

        watcher = threading.Thread(target=outage_after_first_commit)
        watcher.start()
        [result] = driver.run(Run(f"s3://{bucket}/in/", str(output), env=env))
        watcher.join()
        assert result.returncode == 1, result.output[-3000:]
        # S3's error is in the log; the run's final exception is Prefect's UnfinishedRun
        # (flows/ingest.py surfaces the last stage's future, not the failed fetch).
        assert "GetObject" in result.output and "Retries are exhausted" in result.output

        done = current_ledger(output)
        assert 0 < len(done) < len(expected)
        visible = assert_readable(output).keys
        assert set(done) <= visible, "the ledger names objects the lake does not hold"

        proxy.down = False
        [result] = driver.run(Run(f"s3://{bucket}/in/", str(output), env=env))
        assert result.returncode == 0, result.output[-3000:]
    assert_exactly_once(output, expected)

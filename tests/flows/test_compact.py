"""Compaction end to end: real flow runs on a lake the ingest flow wrote."""

from __future__ import annotations

import threading
from pathlib import Path

import duckdb
import pytest

import tasks.compact as compact_module
from flows.compact import compact_lake
from flows.ingest import ingest_articles
from tasks.ledger import Ledger, current_versions
from tasks.settings import Settings
from tasks.storage import OutputRoot

pytestmark = pytest.mark.usefixtures("prefect_api")

BODY = "Story {n} about the harbour strike in Rotterdam, long enough to be kept as an article."


def article_rows(output: Path) -> list[tuple[str, str]]:
    return sorted(
        duckdb.sql(
            f"SELECT object_key, text FROM read_parquet('{output}/articles/**/*.parquet')"
        ).fetchall()
    )


def article_files(output: Path) -> set[str]:
    return {str(p.relative_to(output)) for p in (output / "articles").rglob("*.parquet")}


def assert_ledger_truthful(output: Path) -> None:
    """Every file the ledger names for a current object exists and holds its rows, and
    every article file is named by the ledger."""
    ledger = Ledger.load(OutputRoot.open(str(output), Settings()))
    named: set[str] = set()
    current = current_versions(ledger.table)
    for key, paths in zip(
        current.column("object_key").to_pylist(), current.column("paths").to_pylist(), strict=True
    ):
        for path in paths:
            named.add(path)
            held = duckdb.sql(
                f"SELECT count(*) FROM read_parquet('{output / path}') WHERE object_key = '{key}'"
            ).fetchall()
            assert held[0][0] > 0, f"{path} does not hold {key}"
    assert article_files(output) <= named


@pytest.fixture
def small_files_lake(s3, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Eight articles of one source and day, one batch (and so one file) each."""
    for n in range(8):
        s3.put_object(Bucket=bucket, Key=f"in/s/{n}.txt", Body=BODY.format(n=n).encode())
    monkeypatch.setenv("NEWSFLOW_BATCH_SIZE", "1")
    output = tmp_path / "lake"
    ingest_articles(input_uri=f"s3://{bucket}/in/", output_uri=str(output))
    assert len(article_files(output)) == 8
    return output


def test_compaction_merges_files_keeps_rows_and_ledger_paths(
    s3, bucket: str, small_files_lake: Path
) -> None:
    before = article_rows(small_files_lake)
    summary = compact_lake(output_uri=str(small_files_lake))

    assert (summary["files_merged"], summary["files_written"]) == (8, 1)
    assert len(article_files(small_files_lake)) == 1
    assert article_rows(small_files_lake) == before
    assert not list((small_files_lake / "_compacting").iterdir())
    assert_ledger_truthful(small_files_lake)

    # A new version of one object replaces its row inside the merged file.
    s3.put_object(Bucket=bucket, Key="in/s/3.txt", Body=BODY.format(n="three").encode())
    ingest_articles(input_uri=f"s3://{bucket}/in/", output_uri=str(small_files_lake))
    after = article_rows(small_files_lake)
    assert len(after) == 8
    assert [text for key, text in after if key == "in/s/3.txt"] == [BODY.format(n="three")]
    assert_ledger_truthful(small_files_lake)

    again = compact_lake(output_uri=str(small_files_lake))
    assert len(article_files(small_files_lake)) == 1 and again["files_merged"] == 2
    assert article_rows(small_files_lake) == after


def test_target_size_splits_a_partition(small_files_lake: Path, monkeypatch) -> None:
    size = max(p.stat().st_size for p in (small_files_lake / "articles").rglob("*.parquet"))
    monkeypatch.setenv("NEWSFLOW_COMPACT_TARGET_BYTES", str(size * 3))
    before = article_rows(small_files_lake)
    compact_lake(output_uri=str(small_files_lake))
    assert 2 <= len(article_files(small_files_lake)) <= 4
    assert article_rows(small_files_lake) == before
    assert_ledger_truthful(small_files_lake)


def test_crash_after_commit_is_finished_by_the_next_ingest(
    s3, bucket: str, small_files_lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = article_rows(small_files_lake)

    def die(*args, **kwargs):
        raise KeyboardInterrupt("simulated kill between commit and swap")

    monkeypatch.setattr(compact_module, "_finish", die)
    with pytest.raises(BaseException):  # noqa: B017 - the "kill" surfaces as whatever Prefect raises
        compact_lake(output_uri=str(small_files_lake))
    monkeypatch.undo()
    (small_files_lake / "_lease.json").unlink(missing_ok=True)  # a killed process keeps it
    assert article_rows(small_files_lake) == before, "nothing visible changed before the swap"

    summary = ingest_articles(input_uri=f"s3://{bucket}/in/", output_uri=str(small_files_lake))
    assert summary["recovered_batches"] == 1 and summary["objects_new"] == 0
    assert len(article_files(small_files_lake)) == 1
    assert article_rows(small_files_lake) == before
    assert_ledger_truthful(small_files_lake)


def test_a_reader_never_misses_a_row_during_compaction(small_files_lake: Path) -> None:
    expected = len(article_rows(small_files_lake))
    counts: list[int] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                counts.append(len(article_rows(small_files_lake)))
            except duckdb.IOException:
                continue  # a file listed, then deleted before it was opened: a retry sees it

    reader = threading.Thread(target=read)
    reader.start()
    try:
        compact_lake(output_uri=str(small_files_lake))
    finally:
        done.set()
        reader.join()
    assert counts and min(counts) >= expected
    assert len(article_rows(small_files_lake)) == expected

"""Compaction end to end: real flow runs on a lake the ingest flow wrote, read by DuckDB
the two ways analysts read it: through the snapshot, and by globbing the folders."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest

import tasks.compact as compact_module
import tasks.write as write_module
from flows.compact import compact_lake
from flows.ingest import ingest_articles
from tasks.ledger import Ledger, current_versions
from tasks.settings import Settings
from tasks.snapshot import RETIRED_DIR
from tasks.storage import OutputRoot

pytestmark = pytest.mark.usefixtures("prefect_api")

BODY = "Story {n} about the harbour strike in Rotterdam, long enough to be kept as an article."


def snapshot_rows(output: Path) -> list[tuple[str, str]]:
    """What a reader of the snapshot sees: the README's two DuckDB statements."""
    connection = duckdb.connect()
    connection.execute(
        "SET VARIABLE articles = (SELECT list(path) FROM read_parquet(?) "
        "WHERE dataset = 'articles')",
        [str(output / "_snapshot.parquet")],
    )
    return sorted(
        connection.sql(
            "SELECT object_key, text FROM read_parquet(getvariable('articles'))"
        ).fetchall()
    )


def globbed_rows(output: Path) -> list[tuple[str, str]]:
    return sorted(
        duckdb.sql(
            f"SELECT object_key, text FROM read_parquet('{output}/articles/**/*.parquet')"
        ).fetchall()
    )


def snapshot_files(output: Path) -> set[str]:
    paths = duckdb.sql(f"SELECT path FROM read_parquet('{output}/_snapshot.parquet')").fetchall()
    return {str(Path(path).relative_to(output)) for (path,) in paths}


def files_on_disk(output: Path) -> set[str]:
    return {str(p.relative_to(output)) for p in (output / "articles").rglob("*.parquet")}


def assert_ledger_truthful(output: Path) -> None:
    """Every file the ledger names for a current object is in the snapshot and holds its
    rows, and every file in the snapshot is named by the ledger."""
    ledger = Ledger.load(OutputRoot.open(str(output), Settings()))
    named: set[str] = set()
    current = current_versions(ledger.table)
    in_snapshot = snapshot_files(output)
    for key, paths in zip(
        current.column("object_key").to_pylist(), current.column("paths").to_pylist(), strict=True
    ):
        for path in paths:
            named.add(path)
            assert path in in_snapshot, f"{path} is not in the snapshot"
            held = duckdb.sql(
                f"SELECT count(*) FROM read_parquet('{output / path}') WHERE object_key = '{key}'"
            ).fetchall()
            assert held[0][0] > 0, f"{path} does not hold {key}"
    assert in_snapshot <= named


@pytest.fixture
def small_files_lake(s3, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Eight articles of one source and day, one batch (and so one file) each."""
    for n in range(8):
        s3.put_object(Bucket=bucket, Key=f"in/s/{n}.txt", Body=BODY.format(n=n).encode())
    monkeypatch.setenv("NEWSFLOW_BATCH_SIZE", "1")
    output = tmp_path / "lake"
    ingest_articles(input_uri=f"s3://{bucket}/in/", output_uri=str(output))
    assert len(files_on_disk(output)) == 8
    assert snapshot_rows(output) == globbed_rows(output)
    return output


def test_compaction_merges_files_keeps_rows_and_ledger_paths(
    s3, bucket: str, small_files_lake: Path
) -> None:
    before = snapshot_rows(small_files_lake)
    sources = snapshot_files(small_files_lake)
    summary = compact_lake(output_uri=str(small_files_lake))

    assert (summary["files_merged"], summary["files_written"]) == (8, 1)
    (merged,) = snapshot_files(small_files_lake)
    assert snapshot_rows(small_files_lake) == before
    # The replaced files wait out their retention on disk, outside the snapshot.
    assert files_on_disk(small_files_lake) == sources | {merged}
    assert summary["retired_files_deleted"] == 0
    assert not list((small_files_lake / "_compacting").iterdir())
    assert_ledger_truthful(small_files_lake)

    # A new version of one object replaces its row inside the merged file.
    s3.put_object(Bucket=bucket, Key="in/s/3.txt", Body=BODY.format(n="three").encode())
    ingest_articles(input_uri=f"s3://{bucket}/in/", output_uri=str(small_files_lake))
    after = snapshot_rows(small_files_lake)
    assert len(after) == 8
    assert [text for key, text in after if key == "in/s/3.txt"] == [BODY.format(n="three")]
    assert_ledger_truthful(small_files_lake)

    again = compact_lake(output_uri=str(small_files_lake))
    assert len(snapshot_files(small_files_lake)) == 1 and again["files_merged"] == 2
    assert snapshot_rows(small_files_lake) == after


def test_retired_files_are_deleted_once_their_retention_has_passed(
    small_files_lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = snapshot_rows(small_files_lake)
    compact_lake(output_uri=str(small_files_lake))
    assert len(files_on_disk(small_files_lake)) == 9

    monkeypatch.setenv("NEWSFLOW_RETIRED_FILE_SECONDS", "0")
    summary = compact_lake(output_uri=str(small_files_lake))
    assert summary["retired_files_deleted"] == 8 and summary["files_merged"] == 0
    assert files_on_disk(small_files_lake) == snapshot_files(small_files_lake)
    assert not list((small_files_lake / RETIRED_DIR).iterdir())
    assert snapshot_rows(small_files_lake) == globbed_rows(small_files_lake) == before


def test_target_size_splits_a_partition(small_files_lake: Path, monkeypatch) -> None:
    size = max(p.stat().st_size for p in (small_files_lake / "articles").rglob("*.parquet"))
    monkeypatch.setenv("NEWSFLOW_COMPACT_TARGET_BYTES", str(size * 3))
    before = snapshot_rows(small_files_lake)
    compact_lake(output_uri=str(small_files_lake))
    assert 2 <= len(snapshot_files(small_files_lake)) <= 4
    assert snapshot_rows(small_files_lake) == before
    assert_ledger_truthful(small_files_lake)


def test_rejects_are_compacted_too(
    s3, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(3):
        s3.put_object(Bucket=bucket, Key=f"in/s/bad-{n}.json", Body=b"{not json")
    monkeypatch.setenv("NEWSFLOW_BATCH_SIZE", "1")
    output = tmp_path / "lake"
    ingest_articles(input_uri=f"s3://{bucket}/in/", output_uri=str(output))
    before = sorted(
        duckdb.sql(f"SELECT object_key, reason FROM '{output}/rejects/*.parquet'").fetchall()
    )

    assert compact_lake(output_uri=str(output))["files_merged"] == 3
    (merged,) = snapshot_files(output)
    assert merged.startswith("rejects/part-compact-")
    assert (
        sorted(duckdb.sql(f"SELECT object_key, reason FROM '{output / merged}'").fetchall())
        == before
    )
    assert_ledger_truthful(output)


def test_crash_after_commit_is_finished_by_the_next_ingest(
    s3, bucket: str, small_files_lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = snapshot_rows(small_files_lake)

    def die(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt("simulated kill between commit and swap")

    monkeypatch.setattr(compact_module, "_finish", die)
    with pytest.raises(BaseException):  # noqa: B017 - the "kill" surfaces as whatever Prefect raises
        compact_lake(output_uri=str(small_files_lake))
    monkeypatch.undo()
    (small_files_lake / "_lease.json").unlink(missing_ok=True)  # a killed process keeps it
    assert snapshot_rows(small_files_lake) == globbed_rows(small_files_lake) == before

    summary = ingest_articles(input_uri=f"s3://{bucket}/in/", output_uri=str(small_files_lake))
    assert summary["recovered_batches"] == 1 and summary["objects_new"] == 0
    assert len(snapshot_files(small_files_lake)) == 1
    assert snapshot_rows(small_files_lake) == before
    assert_ledger_truthful(small_files_lake)


def while_reading(read: Callable[[], None], action: Callable[[], Any]) -> None:
    """Run `action` while another thread calls `read` over and over; a read that raises
    fails the test."""
    done = threading.Event()
    errors: list[BaseException] = []

    def keep_reading() -> None:
        try:
            while not done.is_set():
                read()
        except BaseException as error:
            errors.append(error)

    reader = threading.Thread(target=keep_reading)
    reader.start()
    try:
        action()
    finally:
        done.set()
        reader.join()
    if errors:
        raise errors[0]


def compact_while_reading(lake: Path, read: Callable[[], None]) -> None:
    """Compact the lake while another thread calls `read` over and over."""
    while_reading(read, lambda: compact_lake(output_uri=str(lake)))


def _reading_at(
    output: Path, step: Callable[..., Any], seen: list[tuple[str, list[tuple[str, str]]]]
) -> Callable[..., Any]:
    """`step`, with a snapshot read just before and just after it."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        seen.append((f"before {step.__name__}", snapshot_rows(output)))
        result = step(*args, **kwargs)
        seen.append((f"after {step.__name__}", snapshot_rows(output)))
        return result

    return wrapped


def test_a_snapshot_reader_sees_every_row_exactly_once_during_compaction(
    small_files_lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At each step of the swap (merged file in place, sources retired, snapshot replaced)
    and at random moments from another thread: the same rows, never twice, never an error."""
    expected = snapshot_rows(small_files_lake)
    seen: list[tuple[str, list[tuple[str, str]]]] = []
    for name in ("retire", "write_snapshot"):
        monkeypatch.setattr(
            compact_module, name, _reading_at(small_files_lake, getattr(compact_module, name), seen)
        )
    compact_while_reading(
        small_files_lake,
        lambda: seen.append(("from another thread", snapshot_rows(small_files_lake))),
    )
    steps = {moment for moment, _ in seen}
    assert {"before retire", "after write_snapshot", "from another thread"} <= steps
    for moment, rows in seen:
        assert rows == expected, f"{moment}: {len(rows)} rows instead of {len(expected)}"
    assert len(snapshot_files(small_files_lake)) == 1


def test_a_snapshot_reader_sees_each_object_once_while_a_batch_replaces_versions(
    s3, bucket: str, small_files_lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new version whose old row is alone in its file (the file is retired), then one
    whose old row shares a merged file (a copy without it is made): before and after each
    step of the publish, and at random moments from another thread, each object once, in
    its old or its new version, never an error."""
    old = dict(snapshot_rows(small_files_lake))
    seen: list[tuple[str, list[tuple[str, str]]]] = []
    for module, name in (
        (write_module, "rewrite_without"),
        (write_module, "write_snapshot"),
        (compact_module, "retire"),
        (compact_module, "_finish"),
    ):
        step = _reading_at(small_files_lake, getattr(module, name), seen)
        monkeypatch.setattr(module, name, step)

    def replace(key: str, text: str) -> None:
        s3.put_object(Bucket=bucket, Key=key, Body=text.encode())
        while_reading(
            lambda: seen.append(("from another thread", snapshot_rows(small_files_lake))),
            lambda: ingest_articles(
                input_uri=f"s3://{bucket}/in/", output_uri=str(small_files_lake)
            ),
        )

    new = {"in/s/3.txt": BODY.format(n="three"), "in/s/5.txt": BODY.format(n="five")}
    replace("in/s/3.txt", new["in/s/3.txt"])
    compact_lake(output_uri=str(small_files_lake))  # in/s/5.txt now shares a merged file
    replace("in/s/5.txt", new["in/s/5.txt"])

    steps = {moment for moment, _ in seen}
    assert {"before retire", "before _finish", "after write_snapshot"} <= steps
    assert "from another thread" in steps
    for moment, rows in seen:
        keys = [key for key, _ in rows]
        assert sorted(keys) == sorted(old), f"{moment}: {keys}"
        for key, text in rows:
            assert text in (old[key], new.get(key)), f"{moment}: {key} has {text!r}"
    assert dict(snapshot_rows(small_files_lake)) == old | new
    assert_ledger_truthful(small_files_lake)


def test_a_glob_reader_never_misses_a_row_during_compaction(small_files_lake: Path) -> None:
    expected = len(globbed_rows(small_files_lake))
    counts: list[int] = []
    compact_while_reading(
        small_files_lake, lambda: counts.append(len(globbed_rows(small_files_lake)))
    )
    assert counts and min(counts) >= expected
    # Until the retired files are deleted a glob also sees the merged copy of each row.
    assert len(globbed_rows(small_files_lake)) == 2 * expected


def test_the_ledger_is_merged_into_one_file_and_answers_as_before(
    s3, bucket: str, small_files_lake: Path
) -> None:
    ledger_dir = small_files_lake / "_ledger"
    batch_files = sorted(ledger_dir.glob("*.parquet"))
    assert len(batch_files) == 8
    root = OutputRoot.open(str(small_files_lake), Settings())
    before = Ledger.load(root)
    a_batch_file = batch_files[0].read_bytes()

    summary = compact_lake(output_uri=str(small_files_lake))
    assert summary["ledger_files_merged"] == 9  # 8 batches and the compaction's commit
    assert len(list(ledger_dir.glob("*.parquet"))) == 1
    after = Ledger.load(root)
    assert after.table.num_rows == before.table.num_rows + 8  # the compaction's 8 rows
    assert len(after) == len(before) == 8
    batch_ids = set(before.table.column("batch_id").to_pylist())
    assert all(after.is_committed(batch_id) for batch_id in batch_ids)

    # A merge that died before deleting its sources leaves rows twice: still one answer,
    # and the next merge keeps one copy.
    batch_files[0].write_bytes(a_batch_file)
    assert len(Ledger.load(root)) == 8
    assert (
        ingest_articles(input_uri=f"s3://{bucket}/in/", output_uri=str(small_files_lake))[
            "objects_new"
        ]
        == 0
    )
    assert compact_lake(output_uri=str(small_files_lake))["ledger_files_merged"] == 2
    assert Ledger.load(root).table.num_rows == after.table.num_rows
    assert_ledger_truthful(small_files_lake)

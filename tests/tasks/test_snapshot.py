"""The snapshot's file list and retirement, on a local lake (and one round trip on S3)."""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from tasks.settings import Settings
from tasks.snapshot import (
    FileStat,
    LakeChange,
    RetiredFile,
    collect_retired,
    data_files,
    expect_change,
    retire,
    snapshot_paths,
    write_snapshot,
)
from tasks.storage import OutputRoot

PARTITION = "articles/source=s/date=2026-11-29"


def _write(root: OutputRoot, relative: str, rows: int) -> None:
    Path(root.path(relative)).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"n": list(range(rows))}), root.path(relative))


def _current(root: OutputRoot) -> set[str]:
    return {f.relative for f in data_files(root)}


def test_retired_files_leave_the_snapshot_at_once_and_storage_after_retention(
    tmp_path: Path,
) -> None:
    root = OutputRoot.open(str(tmp_path), Settings())
    old, merged = f"{PARTITION}/part-a.parquet", f"{PARTITION}/part-compact-1.parquet"
    _write(root, old, 2)
    _write(root, merged, 2)
    retire(root, "compact-1", [old])
    write_snapshot(root)
    assert _current(root) == {merged}
    assert snapshot_paths(root) == [root.path(merged)]

    assert collect_retired(root, retention_seconds=3600) == 0
    assert Path(root.path(old)).exists(), "a read begun from the old snapshot still needs it"
    assert collect_retired(root, retention_seconds=0) == 1
    assert not Path(root.path(old)).exists()
    assert _current(root) == {merged}


def test_a_retired_name_written_again_is_current_and_never_deleted(tmp_path: Path) -> None:
    """Batch ids are deterministic: an object reverted to an earlier version is written
    under the same name as a file a compaction retired."""
    root = OutputRoot.open(str(tmp_path), Settings())
    reused = f"{PARTITION}/part-b.parquet"
    _write(root, reused, 1)
    retire(root, "compact-2", [reused])
    assert reused not in _current(root)

    time.sleep(0.05)
    _write(root, reused, 3)
    assert reused in _current(root)
    assert collect_retired(root, retention_seconds=0) == 0
    assert pq.read_table(root.path(reused)).num_rows == 3


def test_retention_starts_with_the_first_snapshot_without_the_file(tmp_path: Path) -> None:
    """A run that dies between a retirement and its snapshot leaves a snapshot that still
    names the file: however long ago it was retired, it stays until a snapshot without it
    has been out for the retention."""
    root = OutputRoot.open(str(tmp_path), Settings())
    old, merged = f"{PARTITION}/part-c.parquet", f"{PARTITION}/part-compact-3.parquet"
    _write(root, old, 2)
    write_snapshot(root)
    expect_change(root)  # what a compaction does first
    _write(root, merged, 2)
    retire(root, "compact-3", [old])  # ... and the process is killed here

    assert collect_retired(root, retention_seconds=0) == 0
    assert root.path(old) in snapshot_paths(root) and Path(root.path(old)).exists()
    write_snapshot(root)
    assert snapshot_paths(root) == [root.path(merged)]
    assert collect_retired(root, retention_seconds=0) == 1
    assert not Path(root.path(old)).exists()


def test_a_name_retired_twice_counts_from_its_latest_retirement(tmp_path: Path) -> None:
    """Written, retired, written again, retired again: retired, whichever record is
    listed first."""
    root = OutputRoot.open(str(tmp_path), Settings())
    reused = f"{PARTITION}/part-d.parquet"
    _write(root, reused, 1)
    retire(root, "z-first", [reused])
    time.sleep(0.05)
    _write(root, reused, 2)
    time.sleep(0.05)
    retire(root, "a-second", [reused])
    assert reused not in _current(root)


def test_a_change_is_applied_to_the_previous_snapshot_without_listing_the_lake(
    tmp_path: Path,
) -> None:
    """A publish names what it wrote and retired; the lake is not listed again, so a
    file nobody reported (here written behind the lease's back) stays out until a run
    starts after a crash and lists it."""
    root = OutputRoot.open(str(tmp_path), Settings())
    old, kept = f"{PARTITION}/part-e.parquet", f"{PARTITION}/part-f.parquet"
    _write(root, old, 1)
    _write(root, kept, 1)
    write_snapshot(root)
    new, unreported = f"{PARTITION}/part-g.parquet", f"{PARTITION}/part-h.parquet"
    _write(root, new, 2)
    _write(root, unreported, 2)

    written = write_snapshot(root, LakeChange([new], [retire(root, "rewrite-e", [old])]))
    assert [f.relative for f in written] == [kept, new]
    assert snapshot_paths(root) == [root.path(kept), root.path(new)]
    assert written == [f for f in data_files(root) if f.relative != unreported]
    assert collect_retired(root, retention_seconds=0) == 1, "the retention has started"
    assert not Path(root.path(old)).exists()

    write_snapshot(root)  # a run's start: nothing pending, nothing listed
    assert snapshot_paths(root) == [root.path(kept), root.path(new)]
    expect_change(root)  # a change that a crash cut short
    write_snapshot(root)
    assert snapshot_paths(root) == [root.path(p) for p in (kept, new, unreported)]


def test_a_snapshot_of_a_moved_lake_is_rebuilt_from_a_listing(tmp_path: Path) -> None:
    """The snapshot names absolute paths; a lake copied elsewhere must not inherit them."""
    first = OutputRoot.open(str(tmp_path / "first"), Settings())
    relative = f"{PARTITION}/part-i.parquet"
    _write(first, relative, 1)
    write_snapshot(first)
    shutil.copytree(first.base, tmp_path / "second")
    second = OutputRoot.open(str(tmp_path / "second"), Settings())

    write_snapshot(second, LakeChange())
    assert snapshot_paths(second) == [second.path(relative)]


def _set_mtime(root: OutputRoot, relative: str, mtime_ns: int) -> None:
    os.utime(root.path(relative), ns=(mtime_ns, mtime_ns))


def test_a_name_written_again_is_current_whatever_time_the_store_gives_it(
    tmp_path: Path,
) -> None:
    """The same batch written again (same size), with a time no later than the
    retirement's on the writer's clock: what S3's whole seconds or a store's clock behind
    the writer's give. It is a new file, so it is current."""
    root = OutputRoot.open(str(tmp_path), Settings())
    reused = f"{PARTITION}/part-j.parquet"
    _write(root, reused, 2)
    first_mtime = Path(root.path(reused)).stat().st_mtime_ns
    retirement = retire(root, "rewrite-j", [reused])
    _write(root, reused, 2)
    before_retirement = retirement.retired_at - timedelta(milliseconds=500)
    _set_mtime(root, reused, int(before_retirement.timestamp() * 1e9) + 1)
    assert Path(root.path(reused)).stat().st_mtime_ns != first_mtime

    assert reused in _current(root)
    write_snapshot(root, LakeChange([reused], [retirement]))
    assert snapshot_paths(root) == [root.path(reused)]
    assert collect_retired(root, retention_seconds=0) == 0
    assert Path(root.path(reused)).exists()


def test_a_retired_file_stamped_later_than_its_retirement_is_still_retired(
    tmp_path: Path,
) -> None:
    """A store whose clock runs ahead of the writer's stamps a file with a time after the
    retirement that follows it on the writer's clock: still the retired file."""
    root = OutputRoot.open(str(tmp_path), Settings())
    old, merged = f"{PARTITION}/part-k.parquet", f"{PARTITION}/part-compact-k.parquet"
    _write(root, old, 2)
    _write(root, merged, 2)
    _set_mtime(root, old, time.time_ns() + 60 * 10**9)
    write_snapshot(root, LakeChange([merged], [retire(root, "compact-k", [old])]))

    assert _current(root) == {merged}
    assert snapshot_paths(root) == [root.path(merged)]
    assert collect_retired(root, retention_seconds=0) == 1
    assert not Path(root.path(old)).exists()


def test_a_retirement_recorded_by_an_older_version_keeps_its_time_rule(tmp_path: Path) -> None:
    """Records written before sizes and times were kept name paths only: the file there
    is retired if its time is no later than the retirement's."""
    root = OutputRoot.open(str(tmp_path), Settings())
    old, rewritten = f"{PARTITION}/part-l.parquet", f"{PARTITION}/part-m.parquet"
    _write(root, old, 1)
    _write(root, rewritten, 1)
    record = Path(root.path("_retired", "old-version.json"))
    record.parent.mkdir(parents=True)
    record.write_text(
        json.dumps({"retired_at": "2026-11-29T12:00:00+00:00", "files": [old, rewritten]})
    )
    _set_mtime(root, old, 1_795_000_000 * 10**9)  # 2026-11-18, before the retirement
    assert _current(root) == {rewritten}

    write_snapshot(root)
    assert collect_retired(root, retention_seconds=0) == 1
    assert not Path(root.path(old)).exists() and Path(root.path(rewritten)).exists()


@pytest.mark.parametrize(
    ("recorded", "found", "retired"),
    [
        (1_796_000_000_000_000_000, 1_796_000_000_000_000_000, True),  # S3 HEAD and listing
        (1_796_000_000_000_000_000, 1_796_000_000_250_000_000, True),  # listing in ms
        (1_796_000_000_000_000_000, 1_796_000_001_000_000_000, False),  # a second later
        (1_796_000_000_123_456_789, 1_796_000_000_123_456_789, True),  # local, same file
        (1_796_000_000_123_456_789, 1_796_000_000_123_456_790, False),  # local, written again
    ],
)
def test_retired_files_are_told_apart_at_the_precision_the_store_has(
    recorded: int, found: int, retired: bool
) -> None:
    retired_file = RetiredFile(
        "a.parquet", FileStat(100, recorded), datetime(2026, 11, 30, tzinfo=UTC)
    )
    info = pafs.FileInfo("root/a.parquet", pafs.FileType.File, mtime_ns=found, size=100)
    assert retired_file.is_at(info) is retired
    assert not retired_file.is_at(
        pafs.FileInfo("root/a.parquet", pafs.FileType.File, mtime_ns=found, size=101)
    )


def test_a_name_written_again_that_looks_retired_is_never_deleted_while_named(
    tmp_path: Path,
) -> None:
    """On a store with whole-second times, the same content written again within the
    second of the file it replaces has the retired file's size and time: a later change
    puts it in the snapshot, and the retention must not delete it from under readers."""
    root = OutputRoot.open(str(tmp_path), Settings())
    reused = f"{PARTITION}/part-n.parquet"
    _write(root, reused, 2)
    whole_second = 1_796_000_000 * 10**9
    _set_mtime(root, reused, whole_second)
    write_snapshot(root, LakeChange([], [retire(root, "rewrite-n", [reused])]))
    assert snapshot_paths(root) == []

    _write(root, reused, 2)
    _set_mtime(root, reused, whole_second + 400_000_000)
    write_snapshot(root, LakeChange([reused], []))
    assert snapshot_paths(root) == [root.path(reused)]
    assert collect_retired(root, retention_seconds=0) == 0
    assert Path(root.path(reused)).exists()


def test_a_retirement_names_its_paths_as_older_versions_read_them(tmp_path: Path) -> None:
    """A version rolled back reads `files` as paths, with its time rule."""
    root = OutputRoot.open(str(tmp_path), Settings())
    old = f"{PARTITION}/part-o.parquet"
    _write(root, old, 1)
    retire(root, "rewrite-o", [old, f"{PARTITION}/gone.parquet"])
    record = json.loads(Path(root.path("_retired", "rewrite-o.json")).read_text())
    assert record["files"] == [f"{PARTITION}/gone.parquet", old]
    assert set(record["stats"]) == {old}


def test_a_path_with_nothing_left_to_retire_still_leaves_the_snapshot(tmp_path: Path) -> None:
    """A file the snapshot named but that is gone when retired (deleted by hand, a lost
    response) leaves with the retirement, like any other."""
    root = OutputRoot.open(str(tmp_path), Settings())
    gone, kept = f"{PARTITION}/part-p.parquet", f"{PARTITION}/part-q.parquet"
    _write(root, gone, 1)
    _write(root, kept, 1)
    write_snapshot(root)
    Path(root.path(gone)).unlink()
    write_snapshot(root, LakeChange([], [retire(root, "rewrite-p", [gone])]))
    assert snapshot_paths(root) == [root.path(kept)]


def test_retirement_on_s3_where_heads_and_listings_give_whole_seconds(bucket: str) -> None:
    """`retire` reads a file's time with a HEAD request, a listing with LIST: the
    retired file is out of the listing and deleted after the retention; the same name
    written again a second later is current and stays."""
    root = OutputRoot.open(f"s3://{bucket}/lake", Settings())
    reused, kept = f"{PARTITION}/part-r.parquet", f"{PARTITION}/part-s.parquet"
    for relative in (reused, kept):
        pq.write_table(pa.table({"n": [1, 2]}), root.path(relative), filesystem=root.filesystem)
    write_snapshot(root, LakeChange([], [retire(root, "rewrite-r", [reused])]))
    assert _current(root) == {kept}
    assert collect_retired(root, retention_seconds=0) == 1
    assert _current(root) == {kept}

    pq.write_table(pa.table({"n": [1, 2]}), root.path(reused), filesystem=root.filesystem)
    write_snapshot(root, LakeChange([], [retire(root, "rewrite-r2", [reused])]))
    time.sleep(1.1)  # the next whole second
    pq.write_table(pa.table({"n": [1, 2]}), root.path(reused), filesystem=root.filesystem)
    write_snapshot(root, LakeChange([reused], []))
    assert _current(root) == {kept, reused}
    assert collect_retired(root, retention_seconds=0) == 0
    assert root.filesystem.get_file_info(root.path(reused)).type == pafs.FileType.File

"""The commit protocol and the ledger: replace, recover, lease; locally and on the S3 server."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

import tasks.snapshot as snapshot_module
import tasks.write as write_module
from tasks.batch import Batch
from tasks.fetch import ObjectRef, batch_id_for
from tasks.ledger import LEASE_FILE, Lease, LeaseUnavailable, Ledger, current_versions, hold_lease
from tasks.schema import Article, Reject
from tasks.settings import Settings
from tasks.snapshot import collect_retired, data_files, snapshot_paths, write_snapshot
from tasks.storage import OutputRoot
from tasks.write import recover_output, write_batch_files
from tests.conftest import read_snapshot

MODIFIED = datetime(2026, 11, 1, tzinfo=UTC)


def make_batch(*versions: tuple[str, str, str]) -> tuple[Batch, list[ObjectRef]]:
    """(key, etag, text) per object; a text starting with 'REJECT' becomes a reject."""
    refs = [ObjectRef(key, etag, len(text), MODIFIED) for key, etag, text in versions]
    articles, rejects = [], []
    for key, etag, text in versions:
        if text.startswith("REJECT"):
            rejects.append(Reject(key, etag, "clean", text))
        else:
            source = key.split("/")[1]
            articles.append(
                Article(key, etag, source, MODIFIED, "text", text, text=text, title=text)
            )
    return Batch(batch_id_for(refs), articles, rejects), refs


def commit(root: OutputRoot, *versions: tuple[str, str, str]) -> None:
    """What the write task does: write the batch, then the snapshot from the previous one
    and the batch's changes, which must name the files a listing of the lake finds."""
    batch, refs = make_batch(*versions)
    report = write_batch_files(root, batch, refs, Ledger.load(root))
    assert write_snapshot(root, report.change) == data_files(root)


def recover(root: OutputRoot) -> list[str]:
    """What a run does first: finish or discard what a crash left, then the snapshot,
    which must name the files a listing of the lake finds."""
    recovered = recover_output(root, Ledger.load(root))
    assert write_snapshot(root) == data_files(root)
    return recovered


def commit_killed_in(
    owner: object, name: str, root: OutputRoot, *versions: tuple[str, str, str]
) -> None:
    """`commit`, with the process killed where it calls `owner.name`."""

    def crash(*args: object, **kwargs: object) -> None:
        raise SystemExit(f"killed in {name}")

    with pytest.MonkeyPatch.context() as patch, pytest.raises(SystemExit):
        patch.setattr(owner, name, crash)
        commit(root, *versions)


def staged_files(root: OutputRoot) -> list[str]:
    selector = pafs.FileSelector(root.path("_staging"), recursive=True, allow_not_found=True)
    return [info.path for info in root.filesystem.get_file_info(selector)]


def snapshot_files(root: OutputRoot, dataset: str = "articles") -> list[str]:
    """The files of `dataset` a reader of the snapshot opens, as the root's filesystem names them."""
    return [path.removeprefix("s3://") for path in snapshot_paths(root, dataset)]


def rows(root: OutputRoot) -> dict[str, str]:
    """object_key -> text of every article a reader of the snapshot sees, failing on any
    duplicate key."""
    found = read_snapshot(root, "articles", ["object_key", "text"])
    keys = [row["object_key"] for row in found]
    assert len(keys) == len(set(keys)), f"duplicate rows: {sorted(keys)}"
    return {row["object_key"]: row["text"] for row in found}


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> OutputRoot:
    if request.param == "local":
        return OutputRoot.open(str(tmp_path / "lake"), Settings())
    bucket = request.getfixturevalue("bucket")
    return OutputRoot.open(f"s3://{bucket}/lake", Settings())


def test_batch_writes_hive_partitions_and_a_ledger(root: OutputRoot) -> None:
    commit(
        root,
        ("in/a/1.txt", "e1", "one"),
        ("in/b/2.txt", "e2", "two"),
        ("in/b/3.txt", "e3", "REJECT bad"),
    )
    assert rows(root) == {"in/a/1.txt": "one", "in/b/2.txt": "two"}
    ledger = Ledger.load(root)
    assert len(ledger) == 3
    fingerprints = [
        ObjectRef(k, e, 0, MODIFIED).fingerprint
        for k, e in [("in/a/1.txt", "e1"), ("in/a/1.txt", "e9")]
    ]
    assert ledger.contains(fingerprints).tolist() == [True, False]
    assert staged_files(root) == []


def test_new_version_replaces_the_old_row_across_partitions(root: OutputRoot) -> None:
    commit(root, ("in/a/1.txt", "e1", "first version"), ("in/a/2.txt", "e2", "kept"))
    commit(root, ("in/a/1.txt", "e1b", "second version"))
    assert rows(root) == {"in/a/1.txt": "second version", "in/a/2.txt": "kept"}
    commit(root, ("in/a/1.txt", "e1c", "REJECT now broken"))
    assert rows(root) == {"in/a/2.txt": "kept"}
    rejects = read_snapshot(root, "rejects", ["object_key", "reason"])
    assert [(r["object_key"], r["reason"]) for r in rejects] == [
        ("in/a/1.txt", "REJECT now broken")
    ]
    ledger = Ledger.load(root)
    assert len(ledger) == 2  # current versions
    if root.s3 is not None:
        listed = root.client.list_objects_v2(Bucket=root.s3.bucket)["Contents"]
        assert not [o["Key"] for o in listed if o["Key"].endswith("/")], "directory markers"
    assert ledger.contains([ObjectRef("in/a/1.txt", "e1c", 0, MODIFIED).fingerprint]).tolist() == [
        True
    ]


def test_replaced_rows_leave_with_their_file_and_the_rest_moves_to_a_copy(
    root: OutputRoot,
) -> None:
    """No file a snapshot names is changed: the other rows of a file holding a replaced
    version move to a copy under a new name, and the file is retired, in one snapshot."""
    commit(root, ("in/a/1.txt", "e1", "first version"), ("in/a/2.txt", "e2", "kept"))
    [original] = snapshot_files(root)
    commit(root, ("in/a/1.txt", "e1b", "second version"))

    files = snapshot_files(root)
    assert original not in files and len(files) == 2
    current = current_versions(Ledger.load(root).table)
    paths = dict(zip(current["object_key"].to_pylist(), current["paths"].to_pylist(), strict=True))
    [copy] = [root.path(path) for path in paths["in/a/2.txt"]]
    assert copy in files and copy != original
    copied = pq.read_table(copy, filesystem=root.filesystem, columns=["object_key"])
    assert copied.column("object_key").to_pylist() == ["in/a/2.txt"]
    # The original waits out its retention for reads that began before the swap.
    assert root.filesystem.get_file_info(original).type == pafs.FileType.File
    assert collect_retired(root, retention_seconds=0) == 1
    assert root.filesystem.get_file_info(original).type == pafs.FileType.NotFound
    assert rows(root) == {"in/a/1.txt": "second version", "in/a/2.txt": "kept"}


def test_versions_that_come_back_reuse_batch_ids_and_lose_no_row(tmp_path: Path) -> None:
    """Batch ids and file names repeat when objects go back to earlier versions: a batch
    met again copies the file as it is now, not as it was the first time. (On a local
    lake: S3's LastModified has whole seconds, too coarse to tell apart two writes of a
    name within one, which this test makes and real runs do not.)"""
    root = OutputRoot.open(str(tmp_path / "lake"), Settings())
    first = (("in/a/1.txt", "x1", "X one"), ("in/a/2.txt", "y1", "Y one"))
    commit(root, *first)
    commit(root, ("in/a/1.txt", "x2", "X two"))  # copies Y out of the first file
    commit(root, ("in/a/2.txt", "y2", "Y two"))
    commit(root, *first)  # both back: the first batch's id and file name again
    assert rows(root) == {"in/a/1.txt": "X one", "in/a/2.txt": "Y one"}
    commit(root, ("in/a/1.txt", "x2", "X two"))  # the second batch's id again
    assert rows(root) == {"in/a/1.txt": "X two", "in/a/2.txt": "Y one"}


def test_crash_before_commit_is_discarded_and_redone(root: OutputRoot) -> None:
    commit(root, ("in/a/1.txt", "e1", "one"))

    commit_killed_in(write_module, "_ledger_rows", root, ("in/a/2.txt", "e2", "two"))
    assert rows(root) == {"in/a/1.txt": "one"}  # staged files are invisible
    ledger = Ledger.load(root)
    assert recover_output(root, ledger) != []
    assert not ledger.contains([ObjectRef("in/a/2.txt", "e2", 0, MODIFIED).fingerprint]).any()
    commit(root, ("in/a/2.txt", "e2", "two"), ("in/a/3.txt", "e3", "three"))
    assert rows(root) == {"in/a/1.txt": "one", "in/a/2.txt": "two", "in/a/3.txt": "three"}


def test_crash_after_commit_is_published_by_recovery(root: OutputRoot) -> None:
    commit(root, ("in/a/1.txt", "e1", "old"))

    commit_killed_in(
        write_module,
        "publish_batch",
        root,
        ("in/a/1.txt", "e2", "new"),
        ("in/a/2.txt", "e3", "other"),
    )
    assert rows(root) == {"in/a/1.txt": "old"}
    assert len(recover(root)) == 1
    assert rows(root) == {"in/a/1.txt": "new", "in/a/2.txt": "other"}
    assert recover(root) == []


def test_duckdb_reads_the_local_lake_with_partitions(tmp_path: Path) -> None:
    root = OutputRoot.open(str(tmp_path / "lake"), Settings())
    commit(root, ("in/a/1.txt", "e1", "one"), ("in/b/2.txt", "e2", "two"))
    commit(root, ("in/a/1.txt", "e1b", "uno"))
    query = "SELECT source, CAST(date AS VARCHAR), text FROM read_parquet({}, hive_partitioning = true) ORDER BY ALL"
    snapshot = "getvariable('articles')"
    duckdb.execute(
        f"SET VARIABLE articles = (SELECT list(path) FROM '{root.base}/_snapshot.parquet' WHERE dataset = 'articles')"
    )
    assert duckdb.sql(query.format(snapshot)).fetchall() == [
        ("a", "2026-11-01", "uno"),
        ("b", "2026-11-01", "two"),
    ]
    # A glob also sees the replaced row until its retired file's retention has passed.
    glob = f"'{root.base}/articles/**/*.parquet'"
    assert duckdb.sql(query.format(glob)).fetchall() == [
        ("a", "2026-11-01", "one"),
        ("a", "2026-11-01", "uno"),
        ("b", "2026-11-01", "two"),
    ]
    assert collect_retired(root, retention_seconds=0) == 1
    assert (
        duckdb.sql(query.format(glob)).fetchall() == duckdb.sql(query.format(snapshot)).fetchall()
    )


def test_lease_is_exclusive_and_expires(root: OutputRoot) -> None:
    settings = Settings(lease_wait_seconds=0, lease_seconds=60)
    with hold_lease(root, settings, owner="first") as lease:
        with pytest.raises(LeaseUnavailable), hold_lease(root, settings, owner="second"):
            pass
        lease.renew()
    with hold_lease(root, settings, owner="third"):
        pass

    stale = {"owner": "dead", "expires_at": (datetime.now(UTC) - timedelta(seconds=1)).isoformat()}
    with root.filesystem.open_output_stream(root.path(LEASE_FILE)) as stream:
        stream.write(json.dumps(stale).encode())
    taker = Lease(root, settings, "taker")
    taker.acquire()
    with pytest.raises(LeaseUnavailable):
        Lease(root, settings, "dead").renew()
    taker.release()


def test_reprocessing_into_another_partition_leaves_no_stale_rows(root: OutputRoot) -> None:
    """A reprocessed batch has the same objects as the one it replaces; salted with the run
    id, it gets its own id and ledger entry, so the old partition's file is cleaned."""
    batch, refs = make_batch(("in/a/1.txt", "e1", "one"), ("in/a/2.txt", "e2", "two"))
    write_batch_files(root, batch, refs, Ledger.load(root))
    again, _ = make_batch(("in/a/1.txt", "e1", "one, improved"), ("in/a/2.txt", "e2", "two"))
    for article in again.articles:
        article.published_at = datetime(2025, 1, 2, tzinfo=UTC)  # now lands in date=2025-01-02
    again.batch_id = batch_id_for(refs, salt="reprocess-run")
    assert again.batch_id != batch.batch_id
    write_batch_files(root, again, refs, Ledger.load(root))
    write_snapshot(root)
    assert rows(root) == {"in/a/1.txt": "one, improved", "in/a/2.txt": "two"}
    dates = {row["date"] for row in read_snapshot(root, "articles", ["date"])}
    assert dates == {"2025-01-02"}


def test_a_foreign_or_torn_lease_file_is_waited_on_not_fatal(root: OutputRoot) -> None:
    with root.filesystem.open_output_stream(root.path(LEASE_FILE)) as stream:
        stream.write(b'{"owner": "someone else, another format"}')
    with pytest.raises(LeaseUnavailable, match="waited 0s"):
        Lease(root, Settings(lease_wait_seconds=0), "me").acquire()


def test_a_run_lists_the_lake_only_when_a_crash_cut_a_publish_short(root: OutputRoot) -> None:
    """A run's start keeps the snapshot as it is (a file written behind the lease's back
    stays out: nothing was listed), unless a publish left `_snapshot.pending` behind."""
    commit(root, ("in/a/1.txt", "e1", "one"))
    stray = "articles/source=a/date=2026-11-01/part-stray.parquet"
    pq.write_table(
        pq.read_table(snapshot_files(root)[0], filesystem=root.filesystem),
        root.path(stray),
        filesystem=root.filesystem,
    )
    write_snapshot(root)
    assert root.path(stray) not in snapshot_files(root)

    commit_killed_in(write_module, "publish_batch", root, ("in/a/2.txt", "e2", "two"))
    assert len(recover(root)) == 1
    assert root.path(stray) in snapshot_files(root)


def test_a_crash_in_the_publish_of_a_batch_met_again_is_listed_after(tmp_path: Path) -> None:
    """Objects back at earlier versions commit a batch id (and ledger file name) again;
    a crash in that publish still makes the next run list the lake. (Local, like the
    test of versions coming back.)"""
    root = OutputRoot.open(str(tmp_path / "lake"), Settings())
    commit(root, ("in/a/1.txt", "x1", "X one"))
    commit(root, ("in/a/1.txt", "x2", "X two"))

    commit_killed_in(write_module, "publish_batch", root, ("in/a/1.txt", "x1", "X one"))
    assert rows(root) == {"in/a/1.txt": "X two"}
    assert len(recover(root)) == 1
    assert rows(root) == {"in/a/1.txt": "X one"}


def test_the_retention_a_crash_left_unstarted_starts_with_the_next_snapshot(
    root: OutputRoot,
) -> None:
    """Killed between writing a snapshot and starting the retention of the files it
    left out: the next run's first snapshot starts it."""
    commit(root, ("in/a/1.txt", "e1", "first version"), ("in/a/2.txt", "e2", "kept"))
    [original] = snapshot_files(root)

    commit_killed_in(
        snapshot_module.Retirement, "publish", root, ("in/a/1.txt", "e1b", "second version")
    )
    assert original not in snapshot_files(root)
    assert collect_retired(root, retention_seconds=0) == 0, "retention not started"

    recover(root)
    assert collect_retired(root, retention_seconds=0) == 1
    assert rows(root) == {"in/a/1.txt": "second version", "in/a/2.txt": "kept"}

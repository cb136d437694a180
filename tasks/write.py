"""Write: a batch's Parquet files, committed through the ledger so nothing is lost or doubled.

The protocol, per batch (file names carry the deterministic batch id, so a retry
overwrites its own files instead of adding new ones):

1. **stage**: write the batch's article and reject files under `_staging/<batch_id>/`,
   beside a `_PUBLISHING` marker. Readers never look there.
2. **commit**: write `_ledger/<batch_id>.parquet` (one atomic object). From this moment
   the batch is done, whatever happens next.
3. **publish**: move the staged files to `articles/source=…/date=…/` and `rejects/`;
   replace older files that still hold earlier versions of the same objects by copies
   without those rows, under new names (`tasks/compact.py`: `rewrite_without`), retiring
   the older files; then delete the staging folder, marker last.

After 3, `write_batch` replaces the lake's snapshot (`tasks/snapshot.py`): the moment
readers of the snapshot see the whole batch at once, replaced rows gone in the same step.

A run that dies before 2 leaves staging that the next run deletes (its objects are not
in the ledger, so they are processed again). A run that dies during 3 leaves the marker,
and the next run finishes the publish before doing anything else (`recover_output`).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.batch import Batch
from tasks.compact import rewrite_without
from tasks.fetch import ObjectRef
from tasks.ledger import Ledger, commit_ledger
from tasks.schema import LEDGER_SCHEMA, PARTITION_SCHEMA, articles_table, rejects_table
from tasks.snapshot import ARTICLES_DIR, REJECTS_DIR, LakeChange, expect_change, write_snapshot
from tasks.storage import OutputRoot

STAGING_DIR = "_staging"
PUBLISHING_MARKER = "_PUBLISHING"
PARTITION_COLUMNS = PARTITION_SCHEMA.names


@dataclass(slots=True)
class WriteReport:
    batch_id: str
    objects: int
    articles: int
    rejects: int
    files: list[str] = field(default_factory=list)
    change: LakeChange = field(default_factory=LakeChange)  # for the snapshot


def _write_parquet(root: OutputRoot, table: pa.Table, path: str) -> None:
    root.ensure_dir(posixpath.dirname(path))
    pq.write_table(table, path, filesystem=root.filesystem, compression="zstd")


def _partition_files(articles: pa.Table, batch_id: str) -> list[tuple[str, pa.Table]]:
    """One file per (source, date) partition, partition values in the path (Hive style)."""
    files = []
    groups = articles.select(PARTITION_COLUMNS).group_by(PARTITION_COLUMNS).aggregate([])
    for source, date in zip(
        groups.column("source").to_pylist(), groups.column("date").to_pylist(), strict=True
    ):
        mask = pc.and_(
            pc.equal(articles.column("source"), source), pc.equal(articles.column("date"), date)
        )
        relative = f"{ARTICLES_DIR}/source={source}/date={date}/part-{batch_id}.parquet"
        files.append((relative, articles.filter(mask).drop_columns(PARTITION_COLUMNS)))
    return files


def _ledger_rows(
    refs: list[ObjectRef], batch: Batch, files: dict[str, list[str]], committed_at: datetime
) -> pa.Table:
    article_counts: dict[str, int] = {}
    reject_counts: dict[str, int] = {}
    for article in batch.articles:
        article_counts[article.object_key] = article_counts.get(article.object_key, 0) + 1
    for reject in batch.rejects:
        reject_counts[reject.object_key] = reject_counts.get(reject.object_key, 0) + 1
    accounted = [ref for ref in refs if ref.key in article_counts or ref.key in reject_counts]
    return pa.Table.from_pydict(
        {
            "object_fingerprint": [ref.fingerprint for ref in accounted],
            "object_key": [ref.key for ref in accounted],
            "object_etag": [ref.etag for ref in accounted],
            "batch_id": [batch.batch_id] * len(accounted),
            "committed_at": [committed_at] * len(accounted),
            "articles": [article_counts.get(ref.key, 0) for ref in accounted],
            "rejects": [reject_counts.get(ref.key, 0) for ref in accounted],
            "paths": [sorted(files.get(ref.key, [])) for ref in accounted],
        },
        schema=LEDGER_SCHEMA,
    )


def publish_batch(root: OutputRoot, batch_id: str, ledger: Ledger) -> LakeChange:
    """Step 3; idempotent, so recovery can run it again after a crash at any point.
    Returns what it changed, for the snapshot: complete when staging was. After a crash
    some files may have moved already, so recovery ignores it, and the run's first
    snapshot lists the lake (the crash left `_snapshot.pending`)."""
    staging = root.path(STAGING_DIR, batch_id)
    selector = pafs.FileSelector(staging, recursive=True, allow_not_found=True)
    change = LakeChange()
    for info in root.filesystem.get_file_info(selector):
        if info.type != pafs.FileType.File or info.base_name == PUBLISHING_MARKER:
            continue
        relative = posixpath.relpath(info.path, staging)
        root.ensure_dir(posixpath.dirname(root.path(relative)))
        root.move(info.path, root.path(relative))
        change.added.append(relative)
    for relative, keys in ledger.superseded_paths(batch_id).items():
        change.include(rewrite_without(root, relative, keys, batch_id, ledger))
    # A crash between these two leaves staging without its marker: tolerated on rerun.
    root.delete_file(posixpath.join(staging, PUBLISHING_MARKER))
    root.delete_tree(staging)
    return change


def recover_output(root: OutputRoot, ledger: Ledger) -> list[str]:
    """Finish publishing committed batches and discard uncommitted ones; returns their ids."""
    selector = pafs.FileSelector(root.path(STAGING_DIR), allow_not_found=True)
    recovered = []
    for info in root.filesystem.get_file_info(selector):
        if info.type != pafs.FileType.Directory:
            continue
        if ledger.is_committed(info.base_name):
            publish_batch(root, info.base_name, ledger)  # its change: see publish_batch
        else:
            root.delete_tree(info.path)
        recovered.append(info.base_name)
    return recovered


def write_batch_files(
    root: OutputRoot, batch: Batch, refs: list[ObjectRef], ledger: Ledger
) -> WriteReport:
    """Stage, commit and publish one batch (see the module docstring)."""
    expect_change(root)  # before the commit: a batch committed is a batch published
    now = datetime.now(UTC)
    staging = root.path(STAGING_DIR, batch.batch_id)
    root.delete_tree(staging)
    root.ensure_dir(staging)
    with root.filesystem.open_output_stream(posixpath.join(staging, PUBLISHING_MARKER)) as marker:
        marker.write(b"")

    files_of_key: dict[str, list[str]] = {}
    written: list[str] = []
    if batch.articles:
        table = articles_table(batch.articles, batch_id=batch.batch_id, ingested_at=now)
        for relative, part in _partition_files(table, batch.batch_id):
            _write_parquet(root, part, posixpath.join(staging, relative))
            written.append(relative)
            for key in set(part.column("object_key").to_pylist()):
                files_of_key.setdefault(key, []).append(relative)
    if batch.rejects:
        relative = f"{REJECTS_DIR}/part-{batch.batch_id}.parquet"
        _write_parquet(
            root,
            rejects_table(batch.rejects, batch_id=batch.batch_id, ingested_at=now),
            posixpath.join(staging, relative),
        )
        written.append(relative)
        for reject in batch.rejects:
            if relative not in files_of_key.setdefault(reject.object_key, []):
                files_of_key[reject.object_key].append(relative)

    rows = _ledger_rows(refs, batch, files_of_key, now)
    commit_ledger(root, ledger, batch.batch_id, rows, posixpath.join(staging, "ledger.parquet"))
    change = publish_batch(root, batch.batch_id, ledger)
    return WriteReport(
        batch.batch_id, rows.num_rows, len(batch.articles), len(batch.rejects), written, change
    )


@task(name="write", retries=3, retry_delay_seconds=[2, 10, 30], cache_policy=NO_CACHE)
def write_batch(
    root: OutputRoot, batch: Batch, refs: list[ObjectRef], ledger: Ledger
) -> WriteReport:
    """Write and commit one batch, then show it to snapshot readers; retried because S3
    writes fail transiently."""
    report = write_batch_files(root, batch, refs, ledger)
    write_snapshot(root, report.change)
    get_run_logger().info(
        "batch %s: committed %d objects as %d articles and %d rejects in %d files",
        report.batch_id,
        report.objects,
        report.articles,
        report.rejects,
        len(report.files),
    )
    return report

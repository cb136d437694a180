"""Compaction: merge a directory's small Parquet files into files of about a target size;
and the same swap for a batch that replaces rows of earlier versions (`rewrite_without`).

Every batch writes one file per partition it touches and one rejects file, so a busy
partition collects many small files (slow to list and to read). One compaction of a
group of files `G` of one directory (an `articles/source=…/date=…` partition, or
`rejects/`) into `M`:

1. **journal**: `_compacting/<id>.json` names `M` and `G`. Readers never look there.
2. **stage**: write `M`'s rows to `_compacting/<id>.parquet`.
3. **commit**: write `_ledger/<id>.parquet`, one row per object whose rows moved, copied
   from its current row with the files of `G` replaced by `M` (so `paths` stays truthful
   and a later replacement takes its rows out of `M`, not out of the retired files).
4. **swap**: rename the staged file to `M` (one atomic rename, or one S3 copy), retire
   `G`, then delete the journal; writing the snapshot without `G` and with `M` (one
   atomic object) is the moment readers switch.

A run that dies before 3 leaves a journal whose id is not in the ledger: the next holder
of the lease deletes the staged file. One that dies after 3 is finished by the next
holder (`recover_compactions`, which the ingest flow also runs before it writes).

What readers see: a reader of the snapshot (`tasks/snapshot.py`) sees the rows in `G`
before the swap and in `M` after it, each exactly once, and the files of `G` stay on
storage for `retired_file_seconds` so a read begun before the swap can finish. A reader
that globs the directory instead sees `M`'s rows twice until the retired files are
deleted (`article_id` is unique per row, so it can deduplicate): no multi-file change can
be atomic for a reader that lists files one by one.

A batch that replaces an object's rows (a new version, a reprocess) removes the old rows
the same way, one older file `F` at a time: a copy of `F` without them under a new name
(steps 1-4 with `G` = {`F`}), or, when nothing else is left in `F`, `F` retired alone.
Its publish writes the snapshot once, after all of them: the new version and the copies
appear, and the old rows disappear, in the same step.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from tasks.ledger import Ledger, commit_ledger, current_versions
from tasks.schema import LEDGER_SCHEMA
from tasks.snapshot import DataFile, LakeChange, expect_change, retire, write_snapshot
from tasks.storage import OutputRoot, write_atomically

COMPACTING_DIR = "_compacting"


@dataclass(frozen=True, slots=True)
class Compaction:
    """One group of a directory's files (relative paths) to merge into `merged`; or one
    file to copy into `merged` without the rows a batch replaced (`rewrite`)."""

    compaction_id: str
    merged: str
    sources: tuple[str, ...]

    @classmethod
    def of(cls, partition: str, sources: list[str]) -> Compaction:
        """Same files, same id: a retried compaction redoes its own work."""
        digest = hashlib.blake2b(digest_size=8)
        for source in sorted(sources):
            digest.update(source.encode() + b"\0")
        compaction_id = f"compact-{digest.hexdigest()}"
        merged = posixpath.join(partition, f"part-{compaction_id}.parquet")
        return cls(compaction_id, merged, tuple(sorted(sources)))

    @classmethod
    def rewrite(cls, relative: str, version: str, batch_id: str) -> Compaction:
        """The copy of one file without the rows batch `batch_id` replaced. Named after
        the batch and the file's name and `version` (size and modification time): a retry
        redoes its own copy, and a batch id and a file name met again (batch ids are
        deterministic, and an object can go back to an earlier version) make a new one."""
        digest = hashlib.blake2b(f"{batch_id}\0{relative}\0{version}".encode(), digest_size=8)
        compaction_id = f"rewrite-{digest.hexdigest()}"
        merged = posixpath.join(posixpath.dirname(relative), f"part-{compaction_id}.parquet")
        return cls(compaction_id, merged, (relative,))


def plan(files: list[DataFile], target_bytes: int) -> list[Compaction]:
    """Per directory, groups of its files smaller than `target_bytes`, packed in name
    order until a group reaches the target; a group of one file is left alone."""
    small: dict[str, list[DataFile]] = {}
    for data_file in sorted(files, key=lambda f: f.relative):
        if data_file.bytes < target_bytes:
            small.setdefault(posixpath.dirname(data_file.relative), []).append(data_file)
    compactions = []
    for directory, candidates in small.items():
        groups: list[list[str]] = [[]]
        filled = 0
        for data_file in candidates:
            if filled >= target_bytes:
                groups.append([])
                filled = 0
            groups[-1].append(data_file.relative)
            filled += data_file.bytes
        compactions += [Compaction.of(directory, group) for group in groups if len(group) > 1]
    return compactions


def _journal_path(root: OutputRoot, compaction_id: str) -> str:
    return root.path(COMPACTING_DIR, f"{compaction_id}.json")


def _staged_path(root: OutputRoot, compaction_id: str) -> str:
    return root.path(COMPACTING_DIR, f"{compaction_id}.parquet")


def _ledger_rows(ledger: Ledger, compaction: Compaction, keys: pa.Array) -> pa.Table:
    """Each moved object's current row, re-committed with `G`'s files replaced by `M`."""
    # The keys' rows first, then their newest: the same rows as sorting the whole ledger.
    table = ledger.table
    moved = current_versions(table.filter(pc.is_in(table.column("object_key"), value_set=keys)))
    sources = set(compaction.sources)
    paths = [
        sorted({compaction.merged if path in sources else path for path in row or []})
        for row in moved.column("paths").to_pylist()
    ]
    now = datetime.now(UTC)
    return (
        moved.set_column(
            moved.schema.get_field_index("batch_id"),
            "batch_id",
            pa.array([compaction.compaction_id] * moved.num_rows, pa.string()),
        )
        .set_column(
            moved.schema.get_field_index("committed_at"),
            "committed_at",
            pa.array([now] * moved.num_rows, LEDGER_SCHEMA.field("committed_at").type),
        )
        .set_column(
            moved.schema.get_field_index("paths"),
            "paths",
            pa.array(paths, LEDGER_SCHEMA.field("paths").type),
        )
    )


def _finish(root: OutputRoot, compaction: Compaction) -> LakeChange:
    """Step 4 up to the snapshot, which the caller writes with the change returned;
    idempotent, so recovery can run it again after a crash at any point."""
    staged = _staged_path(root, compaction.compaction_id)
    if root.filesystem.get_file_info(staged).type == pafs.FileType.File:
        root.move(staged, root.path(compaction.merged))
    retirement = retire(root, compaction.compaction_id, list(compaction.sources))
    root.delete_file(_journal_path(root, compaction.compaction_id))
    return LakeChange([compaction.merged], [retirement])


def _swap(root: OutputRoot, compaction: Compaction, rows: pa.Table, ledger: Ledger) -> LakeChange:
    """Steps 1-4 with `rows` as the merged file's content, all but the snapshot."""
    journal = {"merged": compaction.merged, "sources": list(compaction.sources)}
    root.ensure_dir(root.path(COMPACTING_DIR))
    write_atomically(
        root, _journal_path(root, compaction.compaction_id), json.dumps(journal).encode()
    )
    pq.write_table(
        rows,
        _staged_path(root, compaction.compaction_id),
        filesystem=root.filesystem,
        compression="zstd",
    )
    moved = _ledger_rows(ledger, compaction, pc.unique(rows.column("object_key")))
    staged_ledger = root.path(COMPACTING_DIR, f"{compaction.compaction_id}.ledger.parquet")
    commit_ledger(root, ledger, compaction.compaction_id, moved, staged_ledger)
    return _finish(root, compaction)


def compact(root: OutputRoot, compaction: Compaction, ledger: Ledger) -> int:
    """Merge one group and show it to snapshot readers; the caller holds the lease.
    Returns the rows moved."""
    table = pa.concat_tables(
        [
            pq.read_table(root.path(source), filesystem=root.filesystem)
            for source in compaction.sources
        ]
    )
    expect_change(root)
    write_snapshot(root, _swap(root, compaction, table, ledger))
    return table.num_rows


def rewrite_without(
    root: OutputRoot, relative: str, keys: set[str], batch_id: str, ledger: Ledger
) -> LakeChange:
    """Take the rows of `keys` out of one published file for the next snapshot: a copy
    without them under a new name, or the file retired alone when nothing else is in it.
    The caller (a batch's publish, under the lease) writes the snapshot after all of its
    files, with the changes returned. Idempotent: a publish finished after a crash runs
    it again."""
    info = root.filesystem.get_file_info(root.path(relative))
    if info.type != pafs.FileType.File:  # retired by an earlier attempt, and deleted since
        return LakeChange()
    rewrite = Compaction.rewrite(relative, f"{info.size}:{info.mtime_ns}", batch_id)
    if ledger.is_committed(rewrite.compaction_id):
        return _finish(root, rewrite)
    table = pq.read_table(root.path(relative), filesystem=root.filesystem)
    keep = pc.invert(pc.is_in(table.column("object_key"), value_set=pa.array(sorted(keys))))
    remaining = table.filter(keep)
    if remaining.num_rows == table.num_rows:
        return LakeChange()
    if remaining.num_rows == 0:
        return LakeChange([], [retire(root, rewrite.compaction_id, [relative])])
    return _swap(root, rewrite, remaining, ledger)


def recover_compactions(root: OutputRoot, ledger: Ledger) -> list[str]:
    """Finish committed compactions and rewrites, and discard uncommitted ones; returns
    their ids. The caller writes the snapshot afterwards.

    Must run under the lease before anything else writes: until it has, the ledger may
    name a merged file that is not yet in place.
    """
    selector = pafs.FileSelector(root.path(COMPACTING_DIR), allow_not_found=True)
    recovered = []
    for info in root.filesystem.get_file_info(selector):
        if not info.base_name.endswith(".json"):
            continue
        compaction_id = info.base_name.removesuffix(".json")
        with root.filesystem.open_input_stream(info.path) as stream:
            journal = json.loads(stream.read())
        compaction = Compaction(compaction_id, journal["merged"], tuple(journal["sources"]))
        if ledger.is_committed(compaction_id):
            _finish(root, compaction)
        else:
            for leftover in (".parquet", ".ledger.parquet", ".json"):
                root.delete_file(root.path(COMPACTING_DIR, compaction_id + leftover))
        recovered.append(compaction_id)
    return recovered

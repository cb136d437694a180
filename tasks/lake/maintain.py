"""Maintenance: compact small files, checkpoint the log, vacuum what no reader needs.

Compaction rewrites one partition at a time (a partition of `articles`, or a whole
unpartitioned table) as a Delta replace of that partition, read and written from the
same snapshot; the ledger's rewrite leaves out the intents of batches that finished.
It is not `optimize.compact()`: delta-rs 1.6.6 commits a compaction's file
removals as `dataChange=false`, which its conflict checker does not test against another
compaction, and two compactions started from the same version both commit and double
every row (../shared/DELTA-NOTES.md; `tests/lake/test_maintain.py` shows it). A replace
reads its partition, so a second compaction, or a writer's commit to the same partition,
makes the later commit fail with `CommitFailedError`; the compaction then leaves that
partition for the next run. Any number of them can start together: rows never double.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError
from newsflow.tasks.lake import delta
from newsflow.tasks.lake.lake import LEDGER, TABLES, Lake


@dataclass(slots=True)
class MaintenanceReport:
    partitions_compacted: int = 0
    files_merged: int = 0
    partitions_busy: int = 0  # a concurrent commit won: left for the next maintenance
    files_vacuumed: int = 0
    tables: dict[str, int] = field(default_factory=dict)  # version after maintenance


def _small_file_groups(table: DeltaTable, target_bytes: int) -> dict[tuple[str, ...], int]:
    """Partition values -> number of files under `target_bytes`, where there are two or more."""
    actions = pa.table(table.get_add_actions(flatten=True))
    partition_names = [n for n in actions.column_names if n.startswith("partition.")]
    small = actions.filter(pc.less(actions.column("size_bytes"), target_bytes))
    groups: dict[tuple[str, ...], int] = {}
    for row in small.select(partition_names).to_pylist():
        values = tuple(str(row[name]) for name in partition_names)
        groups[values] = groups.get(values, 0) + 1
    return {values: count for values, count in groups.items() if count > 1}


def settled_intents_removed(rows: pa.Table) -> pa.Table:
    """The ledger without the intents whose batch committed them as done: they say
    nothing the done rows do not. A killed batch's intents stay: they say where rows
    may be that no done row names."""
    done = rows.filter(pc.fill_null(rows.column("done"), True))
    settled = set(
        zip(done.column("batch_id").to_pylist(), done.column("object_key").to_pylist(), strict=True)
    )
    keep = [
        bool(flag is not False) or (batch, key) not in settled
        for batch, key, flag in zip(
            rows.column("batch_id").to_pylist(),
            rows.column("object_key").to_pylist(),
            rows.column("done").to_pylist(),
            strict=True,
        )
    ]
    return rows.filter(pa.array(keep))


def compact_partition(lake: Lake, name: str, values: tuple[str, ...]) -> bool:
    """Rewrite one partition's rows as few files, in one commit based on the snapshot the
    rows were read from; False if a concurrent commit to the partition won."""
    snapshot = lake.table(name)
    _, partition_by = TABLES[name]
    conditions = [
        f"{column} = {delta.sql_list([value])}"
        for column, value in zip(partition_by, values, strict=True)
    ]
    rows = delta.read(snapshot, " AND ".join(conditions) or None)
    if name == LEDGER:
        rows = settled_intents_removed(rows)
    try:
        write_deltalake(
            snapshot,  # the snapshot the rows came from: later commits are conflicts
            rows,
            mode="overwrite",
            predicate=" AND ".join(conditions) if conditions else None,
            target_file_size=lake.settings.compact_target_bytes,
            writer_properties=delta.WRITER_PROPERTIES,
            commit_properties=delta.commit_properties(
                {"operation": "compact", "rows": str(rows.num_rows)}
            ),
        )
    except CommitFailedError:
        return False
    return True


def maintain(lake: Lake) -> MaintenanceReport:
    """Compact every table's small files, write a checkpoint, and vacuum files that left
    the table more than `vacuum_retention_hours` ago (reads under way keep theirs)."""
    settings = lake.settings
    report = MaintenanceReport()
    for name in TABLES:
        groups = _small_file_groups(lake.table(name), settings.compact_target_bytes)
        for values, files in groups.items():
            if compact_partition(lake, name, values):
                report.partitions_compacted += 1
                report.files_merged += files
            else:
                report.partitions_busy += 1
        table = lake.table(name)
        table.create_checkpoint()
        table.cleanup_metadata()
        report.files_vacuumed += len(
            table.vacuum(
                retention_hours=settings.vacuum_retention_hours,
                dry_run=False,
                enforce_retention_duration=False,
                full=True,
            )
        )
        report.tables[name] = lake.table(name).version()
    return report

"""The compaction flow: merge each partition's small Parquet files into larger ones.

Run daily (see `deployments/`); the protocol and what readers see while it runs are in
`tasks/compact.py`. It holds the output's lease, so it never overlaps an ingest run.
"""

from __future__ import annotations

import posixpath
from itertools import groupby
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.compact import Compaction, compact, plan, recover_compactions
from tasks.ledger import Ledger, hold_lease, merge_ledger_files
from tasks.settings import Settings
from tasks.snapshot import collect_retired, write_snapshot
from tasks.storage import OutputRoot
from tasks.write import recover_output


@task(name="compact-partition", cache_policy=NO_CACHE)
def compact_partition(
    root: OutputRoot, partition: str, compactions: list[Compaction], ledger: Ledger
) -> int:
    """Not retried: a failed compaction is finished or undone by the next lease holder."""
    moved = sum(compact(root, compaction, ledger) for compaction in compactions)
    get_run_logger().info(
        "%s: merged %d files into %d (%d rows)",
        partition,
        sum(len(c.sources) for c in compactions),
        len(compactions),
        moved,
    )
    return moved


@flow(name="compact-lake")
def compact_lake(output_uri: str) -> dict[str, Any]:
    """Merge the small files of every partition (and of the rejects) at `output_uri`,
    delete the files earlier compactions retired once their retention has passed, and
    merge the ledger's per-batch files so that the next run loads it quickly."""
    settings = Settings()
    root = OutputRoot.open(output_uri, settings)
    summary: dict[str, Any] = {"output": root.uri, "files_merged": 0, "files_written": 0}
    with hold_lease(root, settings) as lease:
        ledger = Ledger.load(root)
        summary["recovered_compactions"] = len(recover_compactions(root, ledger))
        summary["recovered_batches"] = len(recover_output(root, ledger))
        summary["rows_moved"] = 0
        # The snapshot is refreshed first: a crashed run may have left it behind the lake.
        planned = plan(write_snapshot(root), settings.compact_target_bytes)
        for partition, group in groupby(planned, key=lambda c: posixpath.dirname(c.merged)):
            compactions = list(group)
            summary["rows_moved"] += compact_partition(root, partition, compactions, ledger)
            summary["files_merged"] += sum(len(c.sources) for c in compactions)
            summary["files_written"] += len(compactions)
            lease.renew()
        summary["retired_files_deleted"] = collect_retired(root, settings.retired_file_seconds)
        lease.renew()
        summary["ledger_files_merged"] = merge_ledger_files(root)
    return summary

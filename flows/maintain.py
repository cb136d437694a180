"""The maintenance flow: compact each table's small files, checkpoint, vacuum.

Run daily (see `deployments/`). Safe beside ingest runs and beside another maintenance
run: every step is a Delta commit that fails, rather than doubling rows, when a
concurrent commit touched the same partition (`tasks/lake/maintain.py`).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from newsflow.tasks.lake import Lake, maintain
from newsflow.tasks.settings import Settings
from prefect import flow, get_run_logger


@flow(name="maintain-lake")
def maintain_lake(output_uri: str) -> dict[str, Any]:
    """Compact, checkpoint and vacuum the lake at `output_uri`."""
    lake = Lake.open(output_uri, Settings())
    report = maintain(lake)
    get_run_logger().info(
        "compacted %d partitions (%d files), %d busy (left for the next run); "
        "vacuumed %d files; versions %s",
        report.partitions_compacted,
        report.files_merged,
        report.partitions_busy,
        report.files_vacuumed,
        report.tables,
    )
    return {"output": lake.uri, **asdict(report)}

"""What an operator asks first: what is in the lake, what changed it last, what went wrong.

`lake_status` reads the Delta tables and returns Markdown, which `newsflow status` prints
(no Prefect involved) and the `lake-status` flow publishes as an artifact.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from newsflow.tasks.lake import ARTICLES, REJECTS, TABLES, Lake
from newsflow.tasks.settings import Settings
from prefect import flow
from prefect.artifacts import create_markdown_artifact

HISTORY_ROWS = 10
RECENT_DAYS = 7


def _when(milliseconds: int) -> str:
    return datetime.fromtimestamp(milliseconds / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def history_rows(lake: Lake, name: str, limit: int) -> list[dict[str, Any]]:
    """The table's newest commits as `newsflow history` and the status show them."""
    rows = []
    for commit in lake.history(name, limit):
        metrics = commit.get("operationMetrics") or {}
        rows.append(
            {
                "version": commit["version"],
                "when": _when(int(commit["timestamp"])),
                "operation": commit.get("newsflow.operation") or commit.get("operation", ""),
                "run": commit.get("newsflow.run", ""),
                "batch": commit.get("newsflow.batch", ""),
                "rows added": metrics.get("num_added_rows", ""),
                "files +/-": f"{metrics.get('num_added_files', 0)}/"
                f"{metrics.get('num_removed_files', 0)}",
            }
        )
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(none)\n"
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(row[c]) for c in header) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _counts(values: list[str], total: int | None = None) -> list[dict[str, Any]]:
    counted = Counter(values)
    rows = [{"value": value, "count": count} for value, count in counted.most_common()]
    if total:
        for row in rows:
            row["share"] = f"{row['count'] / total:.1%}"
    return rows


def lake_status(lake: Lake, now: datetime | None = None) -> str:
    """The lake's state as Markdown: versions, last changes, recent articles, rejects."""
    now = now or datetime.now(UTC)
    since = (now - timedelta(days=RECENT_DAYS)).strftime("%Y-%m-%d")
    tables = {name: lake.table(name) for name in TABLES}
    parts = [f"# Lake {lake.uri}\n"]
    parts.append(
        markdown_table(
            [
                {"table": name, "version": table.version(), "files": len(table.file_uris())}
                for name, table in tables.items()
            ]
        )
    )
    parts.append(f"\n## Last commits to `{ARTICLES}`\n")
    parts.append(markdown_table(history_rows(lake, ARTICLES, HISTORY_ROWS)))

    recent = lake.read(ARTICLES, f"\"date\" >= '{since}'", columns=["source", "language"])
    objects = len(lake.ledger())
    rejects = lake.read(REJECTS, columns=["stage", "reason"])
    parts.append(f"\n## Articles per source, dates since {since}\n")
    parts.append(markdown_table(_counts(recent.column("source").to_pylist())))
    parts.append("\n## Languages, same articles\n")
    parts.append(markdown_table(_counts(recent.column("language").to_pylist(), recent.num_rows)))
    parts.append(
        f"\n## Rejects by reason ({rejects.num_rows} rejects; {objects} objects in the lake)\n"
    )
    reasons = [
        f"{stage}: {reason.split(':')[0]}"
        for stage, reason in zip(
            rejects.column("stage").to_pylist(), rejects.column("reason").to_pylist(), strict=True
        )
    ]
    parts.append(markdown_table(_counts(reasons, max(objects, 1))))
    return "".join(parts)


@flow(name="lake-status")
def lake_status_flow(output_uri: str) -> str:
    """The status as a Prefect markdown artifact (`lake-status`), and as the return value."""
    text = lake_status(Lake.open(output_uri, Settings()))
    create_markdown_artifact(key="lake-status", markdown=text, description="newsflow status")
    return text

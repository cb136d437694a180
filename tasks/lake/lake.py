"""The lake: three Delta tables under one output root, and the one way a batch enters it.

    <output>/articles   partitioned by source and date (Hive folders source=…/date=…)
    <output>/rejects    what could not be an article, and why
    <output>/ledger     which object versions are done (tasks/lake/ledger.py)

A batch commits, in this order: its ledger rows as an **intent** (the partitions its
article rows go to), its reject rows, its article rows, its ledger rows as **done**. The
data commits **replace by object key**: one Delta commit deletes whatever rows the
batch's objects have in the table and adds the new ones. So:

- a re-uploaded or reprocessed object's old rows go and its new rows come in one commit;
- a batch written again (a retried task, a run killed before its done commit, two runs
  that processed the same objects) replaces its own rows instead of adding a copy;
- concurrent writers need no lease: a commit whose snapshot went stale fails with
  `CommitFailedError` when another commit touched the same partitions, and is redone
  from the new snapshot (`delta.replace_rows`).

Where an object's old rows are comes from the ledger: its done row and every intent of
it, brought up to date right before the data commits (`Ledger.refresh`), so a version
written by a killed batch, or by another run a moment ago, is replaced even when the new
version goes to another date partition.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable
from newsflow.tasks.lake import delta
from newsflow.tasks.lake.ledger import Ledger, Previous
from newsflow.tasks.schema import (
    ARTICLE_SCHEMA,
    LEDGER_SCHEMA,
    PARTITION_COLUMNS,
    REJECT_SCHEMA,
    Article,
    Reject,
    articles_table,
    object_fingerprint,
    rejects_table,
)
from newsflow.tasks.settings import Settings

ARTICLES = "articles"
REJECTS = "rejects"
LEDGER = "ledger"
TABLES: dict[str, tuple[pa.Schema, list[str]]] = {
    ARTICLES: (ARTICLE_SCHEMA, PARTITION_COLUMNS),
    REJECTS: (REJECT_SCHEMA, []),
    LEDGER: (LEDGER_SCHEMA, []),
}


@dataclass(slots=True)
class WriteReport:
    """What one batch's commits did, for the run summary and the benchmark."""

    batch_id: str
    objects: int
    articles: int
    rejects: int
    replaced: int  # objects whose earlier rows the batch replaced
    commit_seconds: dict[str, float] = field(default_factory=dict)


def _partition(source: str, date: str) -> str:
    return f"source={source}/date={date}"


def _partition_values(partitions: set[str]) -> tuple[set[str], set[str]]:
    sources, dates = set(), set()
    for partition in partitions:
        source, date = (part.split("=", 1)[1] for part in partition.split("/"))
        sources.add(source)
        dates.add(date)
    return sources, dates


@dataclass(frozen=True, slots=True)
class Lake:
    """An opened output root: a local folder or s3://BUCKET/PREFIX."""

    uri: str
    settings: Settings = field(repr=False)
    options: dict[str, str] | None = field(default=None, repr=False)  # holds credentials

    @classmethod
    def open(cls, uri: str, settings: Settings) -> Lake:
        """Open the lake at `uri`, creating its tables if they do not exist yet."""
        if uri.startswith("s3://"):
            root = uri.rstrip("/")
        elif "://" in uri:
            raise ValueError(f"output must be a local path or s3://BUCKET/PREFIX, got {uri!r}")
        else:
            path = Path(uri).expanduser().resolve()
            path.mkdir(parents=True, exist_ok=True)
            root = path.as_posix()
        lake = cls(root, settings, delta.storage_options(root, settings))
        for name, (schema, partition_by) in TABLES.items():
            delta.with_retries(
                lambda name=name, schema=schema, partition_by=partition_by: delta.create_table(
                    lake.table_uri(name), schema, partition_by, lake.options
                ),
                settings.s3_max_attempts,
            )
        return lake

    def table_uri(self, name: str) -> str:
        return posixpath.join(self.uri, name)

    def table(self, name: str, version: int | None = None) -> DeltaTable:
        return DeltaTable(self.table_uri(name), version=version, storage_options=self.options)

    def read(
        self, name: str, where: str | None = None, columns: list[str] | None = None
    ) -> pa.Table:
        """The current rows of a table matching the SQL condition `where` (for example
        `"date" >= '2026-12-01'`), only `columns` if given."""
        return delta.read(self.table(name), where, columns)

    def ledger(self, keys: list[str] | None = None) -> Ledger:
        """The ledger as it is now, or only its rows of `keys` (a run for named objects,
        as the event path starts, need not read a million rows): load once per run."""
        return delta.with_retries(
            lambda: Ledger.load(self.table(LEDGER), self.options, keys),
            self.settings.s3_max_attempts,
            on=delta.READ_ERRORS,
        )

    def write_batch(
        self,
        batch_id: str,
        objects: Sequence[tuple[str, str]],
        articles: list[Article],
        rejects: list[Reject],
        ledger: Ledger,
        metadata: dict[str, str],
    ) -> WriteReport:
        """Commit one batch: its ledger intent, its rejects, its articles, then its ledger
        rows as done (module docstring). `objects` are the (key, ETag) the batch
        processed; `metadata` goes into each commit for `newsflow history` (run id,
        operation)."""
        now = datetime.now(UTC)
        keys = {key for key, _ in objects}
        meta = {**metadata, "batch": batch_id, "objects": str(len(objects))}
        rows = articles_table(articles, batch_id=batch_id, ingested_at=now)
        partitions_of = _article_partitions(rows)
        ledger_rows = _ledger_rows(batch_id, objects, articles, rejects, partitions_of, now)
        # Objects the lake held before this batch: re-uploads, reprocessing.
        replaced = len(ledger.previous(keys))
        report = WriteReport(batch_id, ledger_rows.num_rows, len(articles), len(rejects), replaced)

        started = datetime.now(UTC)
        intent = ledger_rows.set_column(
            ledger_rows.schema.get_field_index("done"), "done", pa.array([False] * len(ledger_rows))
        )
        delta.append_rows(
            self.table_uri(LEDGER),
            intent,
            {**meta, "step": "intent"},
            self.options,
            self.settings.commit_attempts,
        )
        delta.with_retries(ledger.refresh, self.settings.s3_max_attempts)
        report.commit_seconds["intent"] = (datetime.now(UTC) - started).total_seconds()
        previous = ledger.previous(keys)

        reject_keys = {r.object_key for r in rejects} | {
            key for key, p in previous.items() if p.rejects
        }
        if reject_keys:
            started = datetime.now(UTC)
            delta.replace_rows(
                self.table_uri(REJECTS),
                rejects_table(rejects, batch_id=batch_id, ingested_at=now),
                f"object_key IN ({delta.sql_list(reject_keys)})",
                {**meta, "rows": str(len(rejects))},
                self.options,
                self.settings.commit_attempts,
            )
            report.commit_seconds[REJECTS] = (datetime.now(UTC) - started).total_seconds()

        article_keys = set(partitions_of) | {key for key, p in previous.items() if p.articles}
        if article_keys:
            started = datetime.now(UTC)
            delta.replace_rows(
                self.table_uri(ARTICLES),
                rows,
                _replace_predicate(article_keys, partitions_of, previous),
                {**meta, "rows": str(len(articles))},
                self.options,
                self.settings.commit_attempts,
            )
            report.commit_seconds[ARTICLES] = (datetime.now(UTC) - started).total_seconds()

        started = datetime.now(UTC)
        done = {**meta, "step": "done"}
        attempts = self.settings.commit_attempts
        delta.append_rows(self.table_uri(LEDGER), ledger_rows, done, self.options, attempts)
        report.commit_seconds[LEDGER] = (datetime.now(UTC) - started).total_seconds()
        ledger.record(ledger_rows)
        return report

    def history(self, name: str = ARTICLES, limit: int = 20) -> list[dict[str, Any]]:
        """The table's newest commits, newest first, with what newsflow recorded in them."""
        return delta.history(self.table_uri(name), self.options, limit)

    def restore(self, version: int) -> dict[str, int]:
        """Put the lake back as it was when `articles` was at `version`: every table to its
        newest version committed before the first commit of the batch (or maintenance)
        that came next, so the three tables agree. A restore is itself a new commit in
        each table, so it can be undone the same way. Returns the versions restored to."""
        articles = self.table(ARTICLES)
        later = articles.version() - version
        if later < 0:
            raise ValueError(f"{self.table_uri(ARTICLES)} has no version {version}")
        if later == 0:
            return {}
        following = next(c for c in articles.history(later) if c["version"] == version + 1)
        tables = {name: self.table(name) for name in TABLES}
        batch = following.get("newsflow.batch")
        starts = [
            int(c["timestamp"])
            for table in tables.values()
            for c in _commits_since(table, int(following["timestamp"]) - 600_000)
            if batch is not None and c.get("newsflow.batch") == batch
        ]
        moment = min([int(following["timestamp"]), *starts]) - 1
        restored = {}
        for name, table in tables.items():
            target = max(
                (
                    int(c["version"])
                    for c in _commits_since(table, moment)
                    if int(c["timestamp"]) <= moment
                ),
                default=None,
            )
            if target is not None and target < table.version():
                table.restore(target)
                restored[name] = target
        return restored


def _commits_since(table: DeltaTable, moment_ms: int) -> list[dict[str, Any]]:
    """The table's commits from `moment_ms` on, and at least one before it (newest first)."""
    limit = 32
    while True:
        commits = table.history(limit)
        if len(commits) < limit or int(commits[-1]["timestamp"]) < moment_ms:
            return commits
        limit *= 4


def _article_partitions(rows: pa.Table) -> dict[str, set[str]]:
    """Object key -> the partitions its new article rows go to."""
    found: dict[str, set[str]] = {}
    for key, source, date in zip(
        rows.column("object_key").to_pylist(),
        rows.column("source").to_pylist(),
        rows.column("date").to_pylist(),
        strict=True,
    ):
        found.setdefault(key, set()).add(_partition(source, date))
    return found


def _replace_predicate(
    keys: set[str], partitions_of: dict[str, set[str]], previous: dict[str, Previous]
) -> str:
    """The rows a batch's article commit replaces: its keys, in the partitions where their
    old rows are (from the ledger) and their new rows go. Naming the partitions as
    literals lets Delta skip every other file and lets writers of other partitions commit
    without conflicting. An object not in the ledger can only have rows from an earlier
    attempt at the same version, which went to the same partitions as now."""
    partitions: set[str] = set()
    for key in keys:
        partitions |= partitions_of.get(key, set())
        if key in previous:
            partitions |= set(previous[key].partitions)
    sources, dates = _partition_values(partitions)
    if not partitions:  # only deletions of rows whose partitions the ledger names
        return f"object_key IN ({delta.sql_list(keys)})"
    return (
        f"source IN ({delta.sql_list(sources)}) AND date IN ({delta.sql_list(dates)}) "
        f"AND object_key IN ({delta.sql_list(keys)})"
    )


def _ledger_rows(
    batch_id: str,
    objects: Sequence[tuple[str, str]],
    articles: list[Article],
    rejects: list[Reject],
    partitions_of: dict[str, set[str]],
    committed_at: datetime,
) -> pa.Table:
    """One row per object the batch accounted for (an object deleted before it could be
    read has no rows and no ledger row: the next run does not see it either)."""
    article_counts: dict[str, int] = {}
    reject_counts: dict[str, int] = {}
    for article in articles:
        article_counts[article.object_key] = article_counts.get(article.object_key, 0) + 1
    for reject in rejects:
        reject_counts[reject.object_key] = reject_counts.get(reject.object_key, 0) + 1
    accounted = [(k, e) for k, e in objects if k in article_counts or k in reject_counts]
    return pa.Table.from_pydict(
        {
            "object_fingerprint": [object_fingerprint(k, e) for k, e in accounted],
            "object_key": [k for k, _ in accounted],
            "object_etag": [e for _, e in accounted],
            "batch_id": [batch_id] * len(accounted),
            "committed_at": [committed_at] * len(accounted),
            "articles": [article_counts.get(k, 0) for k, _ in accounted],
            "rejects": [reject_counts.get(k, 0) for k, _ in accounted],
            "partitions": [sorted(partitions_of.get(k, ())) for k, _ in accounted],
            "done": [True] * len(accounted),
        },
        schema=LEDGER_SCHEMA,
    )

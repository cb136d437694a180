"""Reprocess part of the lake (a source, a date range, a key prefix) after a pipeline
improvement, replacing the affected rows instead of adding to them.

The affected objects come from the ledger, not from a scan of the data files: each
object's current ledger row lists the partitions (`source=…/date=…`) its article rows are
in. The keys are then ingested again with `reprocess=True`, and each batch's commit
replaces their earlier rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from newsflow.flows.ingest import ingest_articles
from newsflow.tasks.lake import Lake, current_versions
from newsflow.tasks.s3 import S3Location
from newsflow.tasks.settings import Settings
from newsflow.tasks.stages.fetch import source_from_key
from prefect import flow, get_run_logger

# Keys per ingest subflow: keeps each run's `keys` parameter well under Prefect's 512 KB.
KEYS_PER_RUN = 2000


@dataclass(frozen=True, slots=True)
class Selection:
    """Which objects to reprocess; every given criterion must hold."""

    source: str | None = None
    date_from: date | None = None
    date_to: date | None = None
    prefix: str | None = None

    def __post_init__(self) -> None:
        if not (self.source or self.date_from or self.date_to or self.prefix):
            raise ValueError(
                "select a source, a date range or a prefix; to reprocess everything, run "
                "the ingest flow with reprocess=True"
            )
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise ValueError(f"date_from {self.date_from} is after date_to {self.date_to}")

    def matches_partition(self, source: str, day: str) -> bool:
        return (
            (self.source is None or source == self.source)
            and (self.date_from is None or day >= self.date_from.isoformat())
            and (self.date_to is None or day <= self.date_to.isoformat())
        )


def article_partitions(partitions: list[str]) -> list[tuple[str, str]]:
    """(source, date) of each `source=…/date=…` partition a ledger row names."""
    found = []
    for partition in partitions:
        values = dict(part.split("=", 1) for part in partition.split("/") if "=" in part)
        if "source" in values and "date" in values:
            found.append((values["source"], values["date"]))
    return found


def select_keys(ledger: pa.Table, selection: Selection, input_prefix: str) -> list[str]:
    """Keys of the objects whose current rows fall in `selection`, sorted.

    An object that produced only rejects has no partition: it matches a source through
    the source its key implies, and never matches a date range (it has no date).
    """
    current = current_versions(ledger)
    if selection.prefix:
        current = current.filter(pc.starts_with(current.column("object_key"), selection.prefix))
    keys = []
    for key, named in zip(
        current.column("object_key").to_pylist(),
        current.column("partitions").to_pylist(),
        strict=True,
    ):
        partitions = article_partitions(named or [])
        if partitions:
            selected = any(selection.matches_partition(s, d) for s, d in partitions)
        else:
            selected = (
                selection.date_from is None
                and selection.date_to is None
                and (
                    selection.source is None
                    or source_from_key(key, input_prefix) == selection.source
                )
            )
        if selected:
            keys.append(key)
    return sorted(keys)


def _chunks(keys: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(keys), size):
        yield keys[start : start + size]


@flow(name="backfill-articles")
def backfill_articles(
    input_uri: str,
    output_uri: str,
    source: str | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
    prefix: str | None = None,
) -> dict[str, Any]:
    """Reprocess the objects of `source`, of partition dates `date_from`..`date_to`
    (inclusive) and/or with keys starting with `prefix`, replacing their rows."""
    logger = get_run_logger()
    selection = Selection(source, date_from, date_to, prefix)
    lake = Lake.open(output_uri, Settings())
    keys = select_keys(lake.ledger().current, selection, S3Location.parse(input_uri).prefix)
    logger.info("%d objects in the lake match %s", len(keys), selection)
    runs = [
        ingest_articles(input_uri, output_uri, keys=chunk, reprocess=True)
        for chunk in _chunks(keys, KEYS_PER_RUN)
    ]
    return {
        "selected": len(keys),
        "runs": len(runs),
        "objects": sum(run["objects_new"] for run in runs),
        "articles": sum(run["articles"] for run in runs),
        "rejects": sum(run["rejects"] for run in runs),
        "output": lake.uri,
    }

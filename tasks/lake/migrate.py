"""Convert a lake of newsflow's pre-Delta format, in place, into Delta tables.

That format named its live data files in `_snapshot.parquet`; files it had replaced
(compactions, new object versions) stayed on storage, recorded under `_retired/`, until
their retention passed. The conversion keeps exactly the files the snapshot names: every
other Parquet file under `articles/` and `rejects/` is deleted first, so nothing retired
comes back. The live files then become the tables' first version as they are (no
rewrite: `convert_to_deltalake` reads their footers), and the newest ledger row of each
object becomes its row in the new `ledger` table. The old bookkeeping goes last.

A lake left mid-change by a crash (`_staging/`, `_compacting/` or `_snapshot.pending`
present) is refused: finish it with the release that wrote it (one `newsflow run`).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import Schema, convert_to_deltalake
from newsflow.tasks.lake import delta
from newsflow.tasks.lake.lake import ARTICLES, LEDGER, REJECTS, TABLES, Lake
from newsflow.tasks.lake.ledger import current_versions
from newsflow.tasks.schema import LEDGER_SCHEMA
from newsflow.tasks.settings import Settings

SNAPSHOT = "_snapshot.parquet"
UNFINISHED = ("_staging", "_compacting", "_snapshot.pending")
BOOKKEEPING = ("_snapshot.parquet", "_ledger", "_retired", "_lease.json", *UNFINISHED)


class NotMigratable(RuntimeError):
    """The output root is not a finished lake of the pre-Delta format."""


@dataclass(slots=True)
class MigrationReport:
    articles_files: int = 0
    rejects_files: int = 0
    stale_files_deleted: int = 0
    ledger_objects: int = 0


def _filesystem(uri: str, settings: Settings) -> tuple[pafs.FileSystem, str]:
    """pyarrow's filesystem for the root, configured like the lake's delta-rs options."""
    options = delta.storage_options(uri, settings)
    if options is None:
        return pafs.LocalFileSystem(), uri
    endpoint = options.get("AWS_ENDPOINT_URL")
    filesystem = pafs.S3FileSystem(
        access_key=options.get("AWS_ACCESS_KEY_ID"),
        secret_key=options.get("AWS_SECRET_ACCESS_KEY"),
        session_token=options.get("AWS_SESSION_TOKEN"),
        region=options["AWS_REGION"],
        endpoint_override=endpoint.split("://", 1)[1] if endpoint else None,
        scheme=endpoint.split("://", 1)[0] if endpoint else "https",
    )
    return filesystem, uri.removeprefix("s3://")


def _exists(filesystem: pafs.FileSystem, path: str) -> bool:
    return filesystem.get_file_info(path).type != pafs.FileType.NotFound


def _holds_anything(filesystem: pafs.FileSystem, path: str) -> bool:
    """A file, or a folder with a file in it (the old release left empty folders behind)."""
    info = filesystem.get_file_info(path)
    if info.type != pafs.FileType.Directory:
        return info.type == pafs.FileType.File
    selector = pafs.FileSelector(path, recursive=True)
    return any(i.type == pafs.FileType.File for i in filesystem.get_file_info(selector))


def _live_files(filesystem: pafs.FileSystem, base: str) -> dict[str, set[str]]:
    """Dataset -> paths relative to the root that the snapshot names."""
    snapshot = pq.read_table(posixpath.join(base, SNAPSHOT), filesystem=filesystem)
    live: dict[str, set[str]] = {ARTICLES: set(), REJECTS: set()}
    for path, dataset in zip(
        snapshot.column("path").to_pylist(), snapshot.column("dataset").to_pylist(), strict=True
    ):
        # Paths were absolute where the lake was written; the root may have moved since.
        marker = f"/{dataset}/"
        relative = path[path.rindex(marker) + 1 :] if marker in path else path
        live[dataset].add(relative)
    return live


def _parquet_files(filesystem: pafs.FileSystem, base: str, dataset: str) -> list[str]:
    selector = pafs.FileSelector(
        posixpath.join(base, dataset), recursive=True, allow_not_found=True
    )
    return [
        posixpath.relpath(info.path, base)
        for info in filesystem.get_file_info(selector)
        if info.type == pafs.FileType.File and info.path.endswith(".parquet")
    ]


def _ledger_rows(filesystem: pafs.FileSystem, base: str) -> pa.Table:
    """Each object's newest old-format ledger row, as a row of the new ledger."""
    old = ds.dataset(posixpath.join(base, "_ledger"), filesystem=filesystem, format="parquet")
    current = current_versions(old.to_table())
    partitions = [
        sorted(
            {
                "/".join(path.split("/")[1:3])
                for path in paths or []
                if path.startswith(f"{ARTICLES}/")
            }
        )
        for paths in current.column("paths").to_pylist()
    ]
    columns = {
        name: current.column(name)
        for name in LEDGER_SCHEMA.names
        if name not in {"partitions", "object_fingerprint", "done"}
    }
    fingerprints = pc.cast(current.column("object_fingerprint"), pa.binary())
    return (
        pa.Table.from_pydict(
            {
                **columns,
                "object_fingerprint": fingerprints,
                "partitions": partitions,
                "done": [True] * current.num_rows,
            }
        )
        .select(LEDGER_SCHEMA.names)
        .cast(LEDGER_SCHEMA)
    )


def migrate_legacy(uri: str, settings: Settings) -> MigrationReport:
    """Convert the pre-Delta lake at `uri` in place (module docstring)."""
    filesystem, base = _filesystem(uri, settings)
    if not _exists(filesystem, posixpath.join(base, SNAPSHOT)):
        raise NotMigratable(f"{uri} has no {SNAPSHOT}: not a lake of the pre-Delta format")
    unfinished = [n for n in UNFINISHED if _holds_anything(filesystem, posixpath.join(base, n))]
    if unfinished:
        raise NotMigratable(
            f"{uri} holds an unfinished change ({', '.join(unfinished)}): run the release "
            "that wrote it once (newsflow run) to finish it, then migrate"
        )
    for name in TABLES:
        if _exists(filesystem, posixpath.join(base, name, "_delta_log")):
            raise NotMigratable(f"{uri}/{name} is a Delta table already")
    report = MigrationReport()
    live = _live_files(filesystem, base)
    ledger = _ledger_rows(filesystem, base)
    options = delta.storage_options(uri, settings)
    for dataset in (ARTICLES, REJECTS):
        for relative in _parquet_files(filesystem, base, dataset):
            if relative not in live[dataset]:
                filesystem.delete_file(posixpath.join(base, relative))
                report.stale_files_deleted += 1
        schema, partition_by = TABLES[dataset]
        table_uri = posixpath.join(uri.rstrip("/"), dataset)
        if live[dataset]:
            convert_to_deltalake(
                table_uri,
                partition_by=Schema.from_arrow(pa.schema([schema.field(c) for c in partition_by]))
                if partition_by
                else None,
                partition_strategy="hive" if partition_by else None,
                storage_options=options,
            )
        setattr(report, f"{dataset}_files", len(live[dataset]))
    lake = Lake.open(uri, settings)  # creates whichever table had no live file
    if ledger.num_rows:
        delta.append_rows(lake.table_uri(LEDGER), ledger, {"operation": "migrate"}, lake.options, 1)
    report.ledger_objects = ledger.num_rows
    for name in BOOKKEEPING:
        path = posixpath.join(base, name)
        info = filesystem.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            filesystem.delete_dir(path)
        elif info.type == pafs.FileType.File:
            filesystem.delete_file(path)
    return report

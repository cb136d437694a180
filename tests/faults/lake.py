"""Reading a lake back the way its users do, and checking the exactly-once invariants."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import duckdb
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import tasks.snapshot
from tasks.storage import OutputRoot

from tasks.settings import Settings

Unit = tuple[str, int]  # (object_key, line_number or 0): one accounted piece of input


def snapshot_paths(output: Path, dataset: str) -> list[str]:
    """The files of `dataset` that the lake's snapshot names: what a reader opens."""
    return tasks.snapshot.snapshot_paths(OutputRoot.open(str(output), Settings()), dataset)


def _read(files: str | list[str], columns: str) -> list[tuple]:
    return duckdb.execute(
        f"SELECT {columns} FROM read_parquet(?, hive_partitioning = true)", [files]
    ).fetchall()


_ARTICLE_COLUMNS = "object_key, coalesce(line_number, 0), object_etag, batch_id"
_REJECT_COLUMNS = f"{_ARTICLE_COLUMNS}, reason"


def duckdb_articles(output: Path) -> list[tuple[str, int, str, str]]:
    """(object_key, line, object_etag, batch_id) of every article a reader of the snapshot
    sees, read by DuckDB. Raises whatever DuckDB raises on a torn or missing file."""
    paths = snapshot_paths(output, "articles")
    return _read(paths, _ARTICLE_COLUMNS) if paths else []


def duckdb_rejects(output: Path) -> list[tuple[str, int, str, str, str]]:
    """(object_key, line, object_etag, batch_id, reason) of every reject the snapshot shows."""
    paths = snapshot_paths(output, "rejects")
    return _read(paths, _REJECT_COLUMNS) if paths else []


def globbed_units(output: Path) -> list[tuple[str, int, str, str]]:
    """What a reader that globs the folders sees, articles and rejects."""
    rows = []
    for dataset, pattern in (("articles", "**/*.parquet"), ("rejects", "*.parquet")):
        if any((output / dataset).glob(pattern)):
            rows += _read(str(output / dataset / pattern), _ARTICLE_COLUMNS)
    return rows


def ledger_rows(output: Path) -> list[dict]:
    if not (output / "_ledger").exists():
        return []
    return ds.dataset(output / "_ledger", format="parquet").to_table().to_pylist()


def committed_batches(output: Path) -> set[str]:
    return {row["batch_id"] for row in ledger_rows(output)}


def current_ledger(output: Path) -> dict[str, str]:
    """object_key -> ETag of the newest committed version, as the ledger says."""
    newest: dict[str, dict] = {}
    for row in ledger_rows(output):
        known = newest.get(row["object_key"])
        if known is None or row["committed_at"] > known["committed_at"]:
            newest[row["object_key"]] = row
    return {key: row["object_etag"] for key, row in newest.items()}


def assert_readable_and_committed(output: Path) -> Counter[Unit]:
    """What a reader may see at any instant, even right after a SIGKILL.

    DuckDB reads every file the snapshot names, and every file a glob finds; every row
    either sees belongs to a committed batch (nothing staged or half-written is visible
    as data), and the snapshot shows each unit at most once. Returns the units a glob
    sees, with counts (a glob may see a replaced version beside the new one).
    """
    committed = committed_batches(output)
    snapshot = duckdb_articles(output) + duckdb_rejects(output)
    globbed = globbed_units(output)
    uncommitted = {row[3] for row in snapshot + globbed} - committed
    assert not uncommitted, f"rows of uncommitted batches are visible: {uncommitted}"
    units = Counter((row[0], row[1]) for row in snapshot)
    doubled = {unit: n for unit, n in units.items() if n > 1}
    assert not doubled, f"the snapshot shows units twice: {doubled}"
    return Counter((row[0], row[1]) for row in globbed)


def assert_exactly_once(output: Path, expected: dict[str, str]) -> None:
    """Every input object (key -> current ETag) is in the lake exactly once, nothing else is.

    Exactly once: each (key, line) appears once across articles and rejects, every key of
    the input appears, every row carries the object's current ETag, and the ledger agrees.
    """
    articles = duckdb_articles(output)
    rejects = duckdb_rejects(output)
    units = Counter((row[0], row[1]) for row in articles + rejects)
    doubled = {unit: n for unit, n in units.items() if n > 1}
    assert not doubled, f"doubled: {doubled}"
    keys = {key for key, _ in units}
    assert keys == set(expected), (
        f"lost: {sorted(set(expected) - keys)}; unexpected: {sorted(keys - set(expected))}"
    )
    stale = {row[0] for row in articles + rejects if row[2] != expected[row[0]]}
    assert not stale, f"rows of replaced versions still visible: {sorted(stale)}"
    assert current_ledger(output) == expected
    assert not list((output / "_staging").rglob("*")), "staging left behind"
    # On disk beside the snapshot's files: only the retired ones (replaced rows), until
    # their retention passes.
    on_disk = {p for d in ("articles", "rejects") for p in (output / d).rglob("*.parquet")}
    named = {Path(p) for d in ("articles", "rejects") for p in snapshot_paths(output, d)}
    retired = {
        output / relative
        for record in (output / "_retired").glob("*.json")
        for relative in json.loads(record.read_text())["files"]
    }
    assert named <= on_disk, f"the snapshot names missing files: {named - on_disk}"
    assert on_disk - named <= retired, f"files neither current nor retired: {on_disk - named}"
    for path in output.rglob("*.parquet"):
        pq.ParquetFile(path)  # every Parquet file on disk has a valid footer

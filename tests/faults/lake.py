"""Reading a lake back the way its users do, and checking the exactly-once invariants."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import duckdb
import pyarrow.dataset as ds
import pyarrow.parquet as pq

Unit = tuple[str, int]  # (object_key, line_number or 0): one accounted piece of input


def duckdb_articles(output: Path) -> list[tuple[str, int, str, str]]:
    """(object_key, line, object_etag, batch_id) of every visible article, read by DuckDB.

    Raises whatever DuckDB raises on a torn or foreign file under `articles/`.
    """
    if not any((output / "articles").rglob("*.parquet")):
        return []
    return duckdb.sql(
        "SELECT object_key, coalesce(line_number, 0), object_etag, batch_id "
        f"FROM read_parquet('{output}/articles/**/*.parquet', hive_partitioning = true)"
    ).fetchall()


def duckdb_rejects(output: Path) -> list[tuple[str, int, str, str, str]]:
    """(object_key, line, object_etag, batch_id, reason) of every visible reject."""
    if not any((output / "rejects").rglob("*.parquet")):
        return []
    return duckdb.sql(
        "SELECT object_key, coalesce(line_number, 0), object_etag, batch_id, reason "
        f"FROM read_parquet('{output}/rejects/*.parquet')"
    ).fetchall()


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

    DuckDB reads every visible file, and every visible row belongs to a committed batch
    (nothing staged or half-written is visible as data). Returns visible units with counts.
    """
    articles = duckdb_articles(output)
    rejects = duckdb_rejects(output)
    committed = committed_batches(output)
    uncommitted = {row[3] for row in articles + rejects} - committed
    assert not uncommitted, f"rows of uncommitted batches are visible: {uncommitted}"
    return Counter((row[0], row[1]) for row in articles + rejects)


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
    # No compaction here, so nothing is retired: the snapshot names exactly the files a
    # glob finds, and a reader of either sees the same rows.
    data_files = {p for d in ("articles", "rejects") for p in (output / d).rglob("*.parquet")}
    snapshot = pq.read_table(output / "_snapshot.parquet").column("path").to_pylist()
    assert sorted(map(Path, snapshot)) == sorted(data_files), "snapshot and lake disagree"
    for path in output.rglob("*.parquet"):
        pq.ParquetFile(path)  # every visible Parquet file has a valid footer

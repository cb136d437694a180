"""Reading the lake the way its users do, and checking the exactly-once invariants.

A lake is three Delta tables. Users read them through a Delta reader: deltalake
(`DeltaTable(uri).to_pyarrow_table()`) or Polars (`pl.read_delta(uri)`), and so does this
module, through both. A plain glob of the folders is not a reader of the table: it sees
files that commits removed until maintenance vacuums them (`glob_rows`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
from deltalake import DeltaTable
from newsflow.tasks.lake import current_versions
from newsflow.tasks.lake.delta import storage_options
from newsflow.tasks.settings import Settings

Unit = tuple[str, int]  # (object_key, line_number or 0): one accounted piece of input
Row = tuple[str, int, str, str]  # (object_key, line, object_etag, batch_id)
COLUMNS = ["object_key", "line_number", "object_etag", "batch_id"]


def table_uri(output: str | Path, name: str) -> str:
    return f"{str(output).rstrip('/')}/{name}"


def options(output: str | Path) -> dict[str, str] | None:
    """The storage options a reader of this lake passes (credentials of the test server)."""
    return storage_options(str(output), Settings())


def _rows(table: pa.Table) -> list[Row]:
    return [
        (key, line or 0, etag, batch)
        for key, line, etag, batch in zip(
            *(table.column(name).to_pylist() for name in COLUMNS), strict=True
        )
    ]


def exists(output: str | Path, name: str) -> bool:
    """Whether table `name` was created (a run creates all three before it writes)."""
    return DeltaTable.is_deltatable(table_uri(output, name), storage_options=options(output))


def deltalake_rows(output: str | Path, name: str) -> list[Row]:
    """The rows of table `name` as deltalake reads its newest version."""
    if not exists(output, name):
        return []
    table = DeltaTable(table_uri(output, name), storage_options=options(output))
    return _rows(table.to_pyarrow_table(columns=COLUMNS))


def polars_rows(output: str | Path, name: str) -> list[Row]:
    """The rows of table `name` as Polars reads its newest version (its own Parquet reader
    over the files the Delta log names)."""
    if not exists(output, name):
        return []
    frame = pl.read_delta(table_uri(output, name), columns=COLUMNS, storage_options=options(output))
    return _rows(frame.to_arrow())


READERS: dict[str, Callable[[str | Path, str], list[Row]]] = {
    "deltalake": deltalake_rows,
    "polars": polars_rows,
}


def reject_reasons(output: str | Path) -> dict[Unit, str]:
    """(object_key, line) -> reason of every reject, as deltalake reads them."""
    if not exists(output, "rejects"):
        return {}
    table = DeltaTable(table_uri(output, "rejects"), storage_options=options(output))
    rows = table.to_pyarrow_table(columns=["object_key", "line_number", "reason"]).to_pylist()
    return {(row["object_key"], row["line_number"] or 0): row["reason"] for row in rows}


def doubled(rows: list[Row]) -> dict[Unit, int]:
    units = Counter((key, line) for key, line, _, _ in rows)
    return {unit: n for unit, n in units.items() if n > 1}


def ledger_table(output: str | Path) -> pa.Table:
    if not exists(output, "ledger"):
        return pa.table({"object_key": pa.array([], pa.string())})
    return DeltaTable(
        table_uri(output, "ledger"), storage_options=options(output)
    ).to_pyarrow_table()


def current_ledger(output: str | Path) -> dict[str, str]:
    """object_key -> ETag of the newest committed version, as the ledger says."""
    table = ledger_table(output)
    if table.num_rows == 0:
        return {}
    current = current_versions(table)
    return dict(
        zip(
            current.column("object_key").to_pylist(),
            current.column("object_etag").to_pylist(),
            strict=True,
        )
    )


@dataclass(frozen=True, slots=True)
class View:
    """What a reader sees of the data tables (every reader saw the same)."""

    articles: list[Row]
    rejects: list[Row]

    @property
    def keys(self) -> set[str]:
        return {row[0] for row in self.articles + self.rejects}


def assert_readable(output: str | Path) -> View:
    """What a reader may see at any instant while nothing writes, even right after a SIGKILL.

    deltalake and Polars both read every table without an error and see the same rows;
    no unit is in the lake twice (across articles and rejects); every object the ledger
    names as done has its rows in the lake (the ledger is committed last).
    """
    views = {
        reader: View(read(output, "articles"), read(output, "rejects"))
        for reader, read in READERS.items()
    }
    view = views["deltalake"]
    for reader, other in views.items():
        assert sorted(other.articles) == sorted(view.articles), f"{reader} sees other articles"
        assert sorted(other.rejects) == sorted(view.rejects), f"{reader} sees other rejects"
    twice = doubled(view.articles + view.rejects)
    assert not twice, f"units in the lake twice: {twice}"
    missing = set(current_ledger(output)) - view.keys
    assert not missing, f"the ledger names objects the lake does not hold: {sorted(missing)}"
    return view


def assert_exactly_once(output: str | Path, expected: dict[str, str]) -> View:
    """Every input object (key -> current ETag) is in the lake exactly once, nothing else is.

    Exactly once: each (key, line) appears once across articles and rejects, for both
    readers; every key of the input appears, every row carries the object's current ETag,
    and the ledger's current versions are exactly the input's.
    """
    view = assert_readable(output)
    keys = view.keys
    assert keys == set(expected), (
        f"lost: {sorted(set(expected) - keys)}; unexpected: {sorted(keys - set(expected))}"
    )
    stale = sorted({row[0] for row in view.articles + view.rejects if row[2] != expected[row[0]]})
    assert not stale, f"rows of replaced versions still visible: {stale}"
    assert current_ledger(output) == expected
    return view


def glob_rows(output: Path, name: str) -> int:
    """How many rows a plain glob of a local table's folders sees (every Parquet file under
    it, the Delta log aside): what a reader that ignores the log reads."""
    files = [
        str(path)
        for path in (output / name).rglob("*.parquet")
        if "_delta_log" not in path.relative_to(output / name).parts
    ]
    return ds.dataset(files, format="parquet").count_rows() if files else 0

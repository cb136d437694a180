"""The ledger: which object versions the lake holds, and where their rows may be.

A Delta table beside the data (`<output>/ledger`). A batch appends its objects' rows
twice: as an **intent** (`done` false) before its data commits, naming the partitions its
article rows go to, and as **done** after them. Because it lives with the data, a rerun on
a new machine with a new Prefect database still knows what is done, and a person can read
it (`newsflow status`, or any Delta reader).

- "Already in the lake?" asks the done rows: the newest per key is the object's current
  version. A batch killed before its done commit is processed again.
- "Where may this object's rows be?" asks both: a killed batch's rows are in the
  partitions its intent names, so the batch that processes the object again replaces
  them there, even when its new version has another date.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable
from newsflow.tasks.lake import delta


@dataclass(frozen=True, slots=True)
class Previous:
    """Where an object's rows may be now: counts and article partitions, taken over its
    current done row and every intent of it."""

    articles: int
    rejects: int
    partitions: tuple[str, ...]

    def merge(self, other: Previous) -> Previous:
        return Previous(
            max(self.articles, other.articles),
            max(self.rejects, other.rejects),
            tuple(sorted({*self.partitions, *other.partitions})),
        )


def current_versions(ledger: pa.Table) -> pa.Table:
    """The newest done row per object key: what the lake holds for it now."""
    if "done" in ledger.column_names:
        ledger = ledger.filter(pc.fill_null(ledger.column("done"), True))
    if ledger.num_rows == 0:
        return ledger
    ordered = ledger.sort_by([("object_key", "ascending"), ("committed_at", "descending")])
    keys = ordered.column("object_key").combine_chunks()
    first_of_key = pc.not_equal(keys.slice(1), keys.slice(0, len(keys) - 1))
    return ordered.filter(pa.concat_arrays([pa.array([True]), first_of_key]))


def _sorted_fingerprints(table: pa.Table) -> np.ndarray:
    column = table.column("object_fingerprint").combine_chunks().cast(pa.binary(16))
    if len(column) == 0:
        return np.empty(0, dtype="S16")
    buffer = column.buffers()[1]
    return np.sort(np.frombuffer(buffer, dtype="S16", count=len(column), offset=column.offset * 16))


def _previous_by_key(rows: pa.Table) -> dict[str, Previous]:
    found: dict[str, Previous] = {}
    for key, articles, rejects, partitions in zip(
        rows.column("object_key").to_pylist(),
        rows.column("articles").to_pylist(),
        rows.column("rejects").to_pylist(),
        rows.column("partitions").to_pylist(),
        strict=True,
    ):
        entry = Previous(articles, rejects, tuple(partitions or ()))
        found[key] = found[key].merge(entry) if key in found else entry
    return found


class Ledger:
    """The ledger as one run sees it: loaded once, then brought up to date before each
    batch's data commits with what other runs have committed since (`refresh`)."""

    def __init__(
        self,
        table: pa.Table,
        source: DeltaTable | None = None,
        options: dict[str, str] | None = None,
    ) -> None:
        self.current = current_versions(table)
        # Sorted 16-byte fingerprints of each key's current version: binary search answers
        # "which listed objects are new" at O(log n) each.
        self._fingerprints = _sorted_fingerprints(self.current)
        intents = table.filter(pc.invert(pc.fill_null(table.column("done"), True)))
        self._intents = _previous_by_key(intents)
        self._recorded: dict[str, Previous] = {}
        self._source = source
        self._options = options
        self._files = set(source.file_uris()) if source is not None else set()

    @classmethod
    def load(
        cls, table: DeltaTable, options: dict[str, str] | None, keys: list[str] | None = None
    ) -> Ledger:
        if keys is None:
            return cls(delta.read(table), table, options)
        if not keys:
            return cls(delta.arrow_schema(table).empty_table(), table, options)
        rows = delta.read(table, f"object_key IN ({delta.sql_list(keys)})")
        return cls(rows, table, options)

    def __len__(self) -> int:
        return self.current.num_rows

    def contains(self, fingerprints: list[bytes]) -> np.ndarray:
        """For each fingerprint: is that exact object version already in the lake?"""
        probe = np.array(fingerprints, dtype="S16")
        if len(self._fingerprints) == 0 or len(probe) == 0:
            return np.zeros(len(probe), dtype=bool)
        last = len(self._fingerprints) - 1
        positions = np.minimum(np.searchsorted(self._fingerprints, probe), last)
        return self._fingerprints[positions] == probe

    def refresh(self) -> None:
        """Take in the ledger rows committed since the last look (other runs' intents and
        done rows): reads only the files added since."""
        if self._source is None:
            return
        self._source.update_incremental()
        files = set(self._source.file_uris())
        if added := files - self._files:
            self.record(delta.read_files(self._source, sorted(added), self._options))
        # Only now: a read cut short above leaves the files to be read again on a retry.
        self._files = files

    def previous(self, keys: set[str]) -> dict[str, Previous]:
        """Where the rows of those of `keys` the lake may hold are: their current done
        rows, merged with every intent of them (a killed batch's, another run's)."""
        found: dict[str, Previous] = {}
        if keys and self.current.num_rows:
            rows = self.current.filter(
                pc.is_in(self.current.column("object_key"), value_set=pa.array(sorted(keys)))
            )
            found = _previous_by_key(rows)
        for source in (self._intents, self._recorded):
            for key in keys & source.keys():
                found[key] = found[key].merge(source[key]) if key in found else source[key]
        return found

    def record(self, rows: pa.Table) -> None:
        """Remember ledger rows committed after the load (this run's, others')."""
        for key, entry in _previous_by_key(rows).items():
            known = self._recorded.get(key)
            self._recorded[key] = known.merge(entry) if known else entry

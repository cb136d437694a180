"""The ledger: which object versions the lake holds, and where their article rows are.

A Delta table beside the data (`<output>/ledger`), one row per object version a batch
committed, appended after the batch's article and reject rows. Because it lives with the
data, a rerun on a new machine with a new Prefect database still knows what is done, and
a person can read it (`newsflow status`, or any Delta reader).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True, slots=True)
class Previous:
    """What the lake holds for an object now: its rows' counts and article partitions."""

    articles: int
    rejects: int
    partitions: tuple[str, ...]


def current_versions(ledger: pa.Table) -> pa.Table:
    """The newest committed row per object key: what the lake holds for it now."""
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
    values = np.frombuffer(
        column.buffers()[1], dtype="S16", count=len(column), offset=column.offset
    )
    return np.sort(values)


class Ledger:
    """The current row of every object key, and the questions a run asks of them."""

    def __init__(self, table: pa.Table) -> None:
        self.current = current_versions(table)
        # Sorted 16-byte fingerprints of each key's current version: binary search answers
        # "which listed objects are new" at O(log n) each.
        self._fingerprints = _sorted_fingerprints(self.current)
        self._recorded: dict[str, Previous] = {}

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

    def previous(self, keys: set[str]) -> dict[str, Previous]:
        """The lake's current rows for those of `keys` it holds, this run's commits included."""
        found: dict[str, Previous] = {}
        if keys and self.current.num_rows:
            rows = self.current.filter(
                pc.is_in(self.current.column("object_key"), value_set=pa.array(sorted(keys)))
            )
            for key, articles, rejects, partitions in zip(
                rows.column("object_key").to_pylist(),
                rows.column("articles").to_pylist(),
                rows.column("rejects").to_pylist(),
                rows.column("partitions").to_pylist(),
                strict=True,
            ):
                found[key] = Previous(articles, rejects, tuple(partitions or ()))
        found.update({key: self._recorded[key] for key in keys if key in self._recorded})
        return found

    def record(self, rows: pa.Table) -> None:
        """Remember what this run committed, for a later batch of the same run that meets
        the same key again (a key named twice, a backfill's chunks)."""
        for key, articles, rejects, partitions in zip(
            rows.column("object_key").to_pylist(),
            rows.column("articles").to_pylist(),
            rows.column("rejects").to_pylist(),
            rows.column("partitions").to_pylist(),
            strict=True,
        ):
            self._recorded[key] = Previous(articles, rejects, tuple(partitions))

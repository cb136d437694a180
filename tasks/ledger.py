"""The ledger: which object versions are already in the lake, stored beside the output.

`<output>/_ledger/<batch_id>.parquet` holds one row per object committed by that batch
(key, ETag, the files its rows went to). Writing that file is a batch's commit point:
see `tasks/write.py` for the protocol. Because the ledger lives with the data, a rerun on
a new machine, with a new Prefect database, still knows what is done.

`<output>/_lease.json` is held by the one run allowed to write at a time, so a scheduled
sweep and an event-triggered run can overlap without claiming the same objects.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from botocore.exceptions import ClientError

from tasks.schema import LEDGER_SCHEMA
from tasks.settings import Settings
from tasks.storage import OutputRoot, write_atomically

LEDGER_DIR = "_ledger"
LEASE_FILE = "_lease.json"


def _ledger_files(root: OutputRoot) -> list[str]:
    selector = pafs.FileSelector(root.path(LEDGER_DIR), allow_not_found=True)
    return sorted(
        info.path
        for info in root.filesystem.get_file_info(selector)
        if info.type == pafs.FileType.File and info.path.endswith(".parquet")
    )


def _read_ledger_files(root: OutputRoot, paths: list[str]) -> pa.Table:
    if not paths:
        return LEDGER_SCHEMA.empty_table()
    tables = [
        pq.read_table(path, filesystem=root.filesystem, schema=LEDGER_SCHEMA) for path in paths
    ]
    return pa.concat_tables(tables)


def merge_ledger_files(root: OutputRoot) -> int:
    """Merge the ledger's files (one per commit) into one; returns how many were merged.

    Loading reads every file, so a ledger of 5,000 batch files took 5.0 s to load at
    1,000,000 keys against 0.9 s for one file. Every row is kept, history included, so
    the ledger answers exactly as before. The merged file is in place before any source
    is deleted: a crash in between leaves rows twice, which every reader of the ledger
    tolerates (the newest row per key decides) and the next merge removes. Run it under
    the lease, like every ledger write.
    """
    paths = _ledger_files(root)
    if len(paths) < 2:
        return 0
    table = _read_ledger_files(root, paths)
    # One row per commit of an object version: drop the copies an interrupted merge left
    # (the same batch can commit the same version twice, at two times: keep both).
    identity = ["batch_id", "object_fingerprint", "committed_at"]
    ordered = table.sort_by([(name, "ascending") for name in identity])
    repeated = pa.array([True] * max(ordered.num_rows - 1, 0))
    for name in identity:
        column = ordered.column(name).combine_chunks()
        repeated = pc.and_(repeated, pc.equal(column.slice(1), column.slice(0, len(column) - 1)))
    keep = pa.concat_arrays([pa.array([True]), pc.invert(repeated)])
    distinct = ordered.filter(keep.slice(0, ordered.num_rows))
    digest = hashlib.blake2b(digest_size=8)
    for path in paths:
        digest.update(posixpath.basename(path).encode() + b"\0")
    merged = root.path(LEDGER_DIR, f"merged-{digest.hexdigest()}.parquet")
    staged = root.path(LEDGER_DIR, f".merged-{digest.hexdigest()}.tmp")
    pq.write_table(distinct, staged, filesystem=root.filesystem, compression="zstd")
    root.move(staged, merged)
    for path in paths:
        if path != merged:
            root.delete_file(path)
    return len(paths)


def current_versions(ledger: pa.Table) -> pa.Table:
    """The newest committed row per object key: what the lake holds for it now."""
    if ledger.num_rows == 0:
        return ledger
    ordered = ledger.sort_by([("object_key", "ascending"), ("committed_at", "descending")])
    keys = ordered.column("object_key").combine_chunks()
    first_of_key = pc.not_equal(keys.slice(1), keys.slice(0, len(keys) - 1))
    keep = pa.concat_arrays([pa.array([True]), first_of_key])
    return ordered.filter(keep)


def sorted_fingerprints(table: pa.Table) -> np.ndarray:
    column = table.column("object_fingerprint").combine_chunks()
    if len(column) == 0:
        return np.empty(0, dtype="S16")
    values = np.frombuffer(
        column.buffers()[1], dtype="S16", count=len(column), offset=column.offset
    )
    return np.sort(values)


class Ledger:
    """All committed ledger rows of one output root, and the questions a run asks of them."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        # Sorted 16-byte fingerprints of each key's current version: binary search answers
        # "which listed objects are new" at O(log n) each, with 16 bytes per recorded object.
        self._current = sorted_fingerprints(current_versions(table))
        self._batches = set(table.column("batch_id").to_pylist())

    @classmethod
    def load(cls, root: OutputRoot) -> Ledger:
        return cls(_read_ledger_files(root, _ledger_files(root)))

    def __len__(self) -> int:
        return len(self._current)

    def is_committed(self, batch_id: str) -> bool:
        return batch_id in self._batches

    def contains(self, fingerprints: list[bytes]) -> np.ndarray:
        """For each fingerprint: is that exact object version already in the lake?"""
        probe = np.array(fingerprints, dtype="S16")
        if len(self._current) == 0 or len(probe) == 0:
            return np.zeros(len(probe), dtype=bool)
        positions = np.minimum(np.searchsorted(self._current, probe), len(self._current) - 1)
        return self._current[positions] == probe

    def superseded_paths(self, batch_id: str) -> dict[str, set[str]]:
        """Files holding earlier rows of the objects this batch committed: path -> keys.

        Only each object's previous version counts: versions before it lost their rows when
        it was published (recovery finishes any publish a crash cut short).
        """
        mine = self.table.filter(pc.equal(self.table.column("batch_id"), batch_id))
        keys = pc.unique(mine.column("object_key").combine_chunks())
        older = current_versions(
            self.table.filter(
                pc.and_(
                    pc.is_in(self.table.column("object_key"), value_set=keys),
                    pc.not_equal(self.table.column("batch_id"), batch_id),
                )
            )
        )
        found: dict[str, set[str]] = {}
        for key, paths in zip(
            older.column("object_key").to_pylist(), older.column("paths").to_pylist(), strict=True
        ):
            for path in paths or []:
                found.setdefault(path, set()).add(key)
        return found

    def record(self, rows: pa.Table) -> None:
        """Add rows this run committed. The fingerprint index is left as loaded: a run lists
        each key once, so its own commits never need to be looked up as 'already done'."""
        self.table = pa.concat_tables([self.table, rows])
        self._batches.update(rows.column("batch_id").to_pylist())


def commit_ledger(
    root: OutputRoot, ledger: Ledger, commit_id: str, rows: pa.Table, staged_path: str
) -> None:
    """The commit point of a batch or a compaction: its ledger rows, written aside, then
    moved into `_ledger/<commit_id>.parquet` in one step."""
    root.ensure_dir(posixpath.dirname(staged_path))
    pq.write_table(rows, staged_path, filesystem=root.filesystem, compression="zstd")
    root.ensure_dir(root.path(LEDGER_DIR))
    root.move(staged_path, root.path(LEDGER_DIR, f"{commit_id}.parquet"))
    ledger.record(rows)


class LeaseUnavailable(RuntimeError):
    """Another run holds the output's lease for longer than this run is willing to wait."""


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return None


def _process_start(pid: int) -> str | None:
    """The start time of `pid` in clock ticks since boot (Linux), None if it is not running.

    With the pid it names one process uniquely: a recycled pid has another start time.
    """
    stat = _read_text(f"/proc/{pid}/stat")
    if stat is None:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def process_identity() -> dict[str, str]:
    """Where and which process this is, precisely enough to tell later that it has died.

    Empty where /proc is missing (not Linux): such holders are only ever seen to expire.
    The boot id and pid namespace stop a container with the same host name (or a reboot)
    from mistaking a live holder elsewhere for a dead local one.
    """
    boot = _read_text("/proc/sys/kernel/random/boot_id")
    started = _process_start(os.getpid())
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return {}
    if boot is None or started is None:
        return {}
    return {"boot_id": boot, "pid_ns": namespace, "pid": str(os.getpid()), "started": started}


def holder_is_dead(holder: dict[str, Any]) -> bool:
    """True only when the holder provably ran on this machine and no longer runs.

    Lets the next run take over at once after a crash on the same machine (a killed CLI,
    a restarted worker) instead of waiting out `lease_seconds`.
    """
    mine = process_identity()
    if not mine or holder.get("host") != socket.gethostname():
        return False
    if holder.get("boot_id") != mine["boot_id"] or holder.get("pid_ns") != mine["pid_ns"]:
        return False
    try:
        pid = int(holder["pid"])
    except (KeyError, TypeError, ValueError):
        return False
    return _process_start(pid) != holder.get("started")


@dataclass(slots=True)
class Lease:
    """Exclusive right to write to one output root, renewed by its holder as it works.

    Created with a conditional write (S3 `If-None-Match: *`, or O_EXCL locally), so two
    runs can never both believe they hold it. A holder that dies stops renewing; the lease
    expires after `lease_seconds` and the next run takes it over and recovers.
    """

    root: OutputRoot
    settings: Settings
    owner: str

    def _body(self) -> bytes:
        expires = datetime.now(UTC) + timedelta(seconds=self.settings.lease_seconds)
        return json.dumps(
            {
                "owner": self.owner,
                "host": socket.gethostname(),
                "expires_at": expires.isoformat(),
                **process_identity(),
            }
        ).encode()

    def _try_create(self) -> bool:
        if self.root.s3 is not None:
            try:
                self.root.client.put_object(
                    Bucket=self.root.s3.bucket,
                    Key=self._s3_key(),
                    Body=self._body(),
                    IfNoneMatch="*",
                )
                return True
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") in {
                    "PreconditionFailed",
                    "412",
                    "ConditionalRequestConflict",
                }:
                    return False
                raise
        # Write a private file, then hard-link it into place: link() fails if the lease
        # exists, and a crash can never leave a half-written lease behind.
        path = self.root.path(LEASE_FILE)
        private = f"{path}.{self.owner}.tmp"
        with open(private, "wb") as handle:
            handle.write(self._body())
        try:
            os.link(private, path)
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(private)

    def _read(self) -> dict[str, Any] | None:
        """The holder's record, with `expires_at` parsed; None when there is no readable one."""
        try:
            with self.root.filesystem.open_input_stream(self.root.path(LEASE_FILE)) as stream:
                holder = json.loads(stream.read())
            holder["expires_at"] = datetime.fromisoformat(holder["expires_at"])
            return dict(holder)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return None  # being replaced this instant, or not ours: look again

    def _delete_if_owner(self, owner: str | None) -> None:
        holder = self._read()
        if holder is not None and holder.get("owner") == owner:
            self._delete()

    def _delete(self) -> None:
        self.root.delete_file(self.root.path(LEASE_FILE))

    def _s3_key(self) -> str:
        assert self.root.s3 is not None
        return f"{self.root.s3.prefix}{LEASE_FILE}"

    def acquire(self) -> None:
        deadline = time.monotonic() + self.settings.lease_wait_seconds
        while not self._try_create():
            holder = self._read()
            if holder is not None and (
                holder["expires_at"] < datetime.now(UTC) or holder_is_dead(holder)
            ):
                # Its holder died. Delete only that holder's lease: another waiter may have
                # taken it over since we read it. The next _try_create races fairly.
                self._delete_if_owner(holder.get("owner"))
                continue
            if time.monotonic() > deadline:
                raise LeaseUnavailable(
                    f"{self.root.uri} is being written by run {holder and holder.get('owner')!r}; "
                    f"waited {self.settings.lease_wait_seconds}s (NEWSFLOW_LEASE_WAIT_SECONDS)"
                )
            time.sleep(1.0)

    def renew(self) -> None:
        """Push the expiry forward; fails loudly if another run took the lease over."""
        holder = self._read()
        if holder is None or holder.get("owner") != self.owner:
            raise LeaseUnavailable(
                f"lost the lease on {self.root.uri} to {holder and holder.get('owner')!r}"
            )
        write_atomically(self.root, self.root.path(LEASE_FILE), self._body())

    def release(self) -> None:
        self._delete_if_owner(self.owner)


def _heartbeat(lease: Lease, stop: threading.Event) -> None:
    """Renew every third of the lease while the run lives, however long a batch takes.

    Without it the lease only moved on between batches, so a batch slower than
    `lease_seconds` let a second run take over while the first was still writing.
    """
    while not stop.wait(lease.settings.lease_seconds / 3):
        try:
            lease.renew()
        except Exception:
            return  # lost or unreachable: the run's own renew() after its batch fails loudly


@contextmanager
def hold_lease(root: OutputRoot, settings: Settings, owner: str | None = None) -> Iterator[Lease]:
    lease = Lease(root, settings, owner or uuid.uuid4().hex)
    lease.acquire()
    stop = threading.Event()
    heartbeat = threading.Thread(
        target=_heartbeat, args=(lease, stop), name="lease-heartbeat", daemon=True
    )
    heartbeat.start()
    try:
        yield lease
    finally:
        stop.set()
        heartbeat.join()
        lease.release()

"""A batch of articles and the machinery that runs one stage over it on every core."""

from __future__ import annotations

import ctypes
import heapq
import importlib
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from functools import cache, partial
from itertools import count
from pathlib import Path
from typing import Any, TypeVar

from newsflow.tasks.schema import Article, Reject, RejectedArticle
from newsflow.tasks.settings import Settings

StageFunction = Callable[[Article, Settings], Article]
T = TypeVar("T")
R = TypeVar("R")
# Batches whose order a pool remembers: far more than are ever in flight at once, and a
# kept pool (`keep_stage_pool`) meets a new batch per micro-batch for as long as it lives.
_REMEMBERED_BATCHES = 256


class Batch:
    """The articles and rejects of one batch of objects, passed from task to task.

    Not a dataclass: Prefect walks dataclass, list and dict task parameters element by
    element (seconds for a few thousand articles); a plain object passes as one reference.
    """

    def __init__(self, batch_id: str, articles: list[Article], rejects: list[Reject]) -> None:
        self.batch_id = batch_id
        self.articles = articles
        self.rejects = rejects

    def __repr__(self) -> str:
        return f"Batch({self.batch_id}, {len(self.articles)} articles, {len(self.rejects)} rejects)"


# glibc's mallopt parameter for the number of heaps ("arenas") threads allocate from.
_M_ARENA_MAX = -8


@cache
def _glibc() -> ctypes.CDLL | None:
    """The C library if it is glibc (it has `mallopt` and `malloc_trim`), else None."""
    try:
        libc = ctypes.CDLL(None)
    except (OSError, TypeError):  # Windows
        return None
    if not (hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim")):  # macOS, musl
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    libc.malloc_trim.restype = ctypes.c_int
    return libc


def share_one_heap() -> None:
    """Make every thread of this process allocate from one heap; a no-op without glibc.

    glibc gives each new thread a heap of its own (up to 8 per core), and a heap keeps
    what was freed in it for its own later use. In the flow process the fetch threads
    decode pages and the pool's threads pickle and unpickle chunks, each in its heap, so
    every heap grows to its own peak. One heap reuses what any thread freed, and the
    threads take turns on the GIL anyway, so they hardly wait for it: peak RSS 1,188 MiB
    instead of 1,549 at 10,000 objects, in the same time (measured, docs/benchmarks.md).

    A thread keeps the heap it was given (and glibc stops reading the limit once it has
    made more than 8 heaps), so this must come before the process's threads allocate:
    `newsflow run` calls it first thing. A process that Prefect starts (a deployment's
    run) has Prefect's threads before the flow starts; it needs `MALLOC_ARENA_MAX=1` in
    its environment instead, which `newsflow serve` sets for its runs
    (docs/deployments.md for work pools).
    """
    if (libc := _glibc()) is not None:
        libc.mallopt(_M_ARENA_MAX, 1)


def _resident_bytes() -> int | None:
    """This process's RSS, where /proc tells it."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def trim_heap_above(limit_bytes: int) -> bool:
    """Hand the heap's free pages back to the OS if this process's RSS is over
    `limit_bytes`; whether it did.

    Even one heap fragments: batch after batch of pages and pickles of every size leave
    holes it keeps, and untrimmed RSS creeps up with the number of objects (870 MiB at
    1,000, 1,164-1,188 MiB at 10,000). Trimming after every batch keeps it flat but costs
    5 % of the run (measured with a heap per thread), most of it faulting the returned
    pages in again; trimming only above a limit costs nothing below it (1 GiB: peaks of
    1,030-1,158 MiB at 10,000, in the same time). A limit below what the flow holds live
    makes every batch trim.
    """
    if (libc := _glibc()) is None:
        return False
    resident = _resident_bytes()
    if resident is None or resident <= limit_bytes:
        return False
    libc.malloc_trim(0)
    return True


def _apply(
    stage: str, function: StageFunction, settings: Settings, article: Article
) -> Article | Reject:
    """Run one stage on one article; bad input becomes a Reject instead of an exception.

    A stage's verdict (`RejectedArticle`: no article text, too short…) is an ordinary
    reject; any other exception is also caught, so that one hostile input cannot sink the
    batch, but its reject is marked `stage_error`: it may be a bug losing good articles.
    """
    stage_error = False
    try:
        return function(article, settings)
    except RejectedArticle as rejected:
        reason = rejected.reason
    except Exception as error:
        reason = f"{stage} failed on this input: {type(error).__name__}: {error}"[:500]
        stage_error = True
    return Reject(
        object_key=article.object_key,
        object_etag=article.object_etag,
        stage=stage,
        reason=reason,
        line_number=article.line_number,
        stage_error=stage_error,
    )


def _apply_chunk(function: Callable[[T], R], chunk: list[T]) -> list[R]:
    return [function(item) for item in chunk]


class StagePool:
    """The stage worker processes, given the chunks of the oldest batch first.

    Several batches are in flight, so several stages share the workers at once: a newer
    batch's clean, an older one's language detection. A plain pool serves chunks in the
    order they were queued, so the older batch's light stages would wait behind every
    chunk of the newer clean, the batches in flight would finish together, and the cores
    would idle while the next ones are fetched. Here each stage queues one chunk at a
    time, and a free worker takes the chunk of the batch this pool met first.

    The workers are forked from a server process that has loaded everything they need
    once (`tasks/workers.py`). Starting them waits for that load (seconds), so it happens
    in the background: the first `map` waits for it, not the constructor. A worker that
    died (killed, out of memory) breaks the pool: `broken` tells a keeper to replace it.
    """

    def __init__(self, workers: int) -> None:
        self._workers = workers
        self.broken = False
        starter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stage-pool-start")
        self._executor = starter.submit(_start_workers, workers)
        starter.shutdown(wait=False)
        # One chunk more than workers waits in the pipe, so a worker never waits on the
        # round trip to be handed its next chunk.
        self._slots = workers + 1
        self._running = 0
        self._waiting: list[tuple[int, int]] = []  # a heap of (batch order, arrival)
        self._arrivals = count()
        self._batch_order: dict[str, int] = {}
        self._orders = count()
        self._turn = threading.Condition()

    def map(self, batch_id: str, function: Callable[[T], R], items: list[T]) -> list[R]:
        """`function` of every item of a batch in the workers, in chunks (a quarter of each
        worker's share), results in order."""
        executor = self._executor.result()
        size = max(1, len(items) // (self._workers * 4))
        with self._turn:
            order = self._batch_order.get(batch_id)
            if order is None:
                order = self._batch_order[batch_id] = next(self._orders)
                if len(self._batch_order) > _REMEMBERED_BATCHES:
                    del self._batch_order[next(iter(self._batch_order))]  # the oldest
        try:
            futures = []
            for start in range(0, len(items), size):
                self._wait_for_turn(order)
                try:
                    future = executor.submit(_apply_chunk, function, items[start : start + size])
                except BaseException:  # a broken pool: give the slot back, or the others hang
                    self._release()
                    raise
                future.add_done_callback(self._release)
                futures.append(future)
            return [result for future in futures for result in future.result()]
        except BrokenProcessPool:
            self.broken = True
            raise

    def close(self) -> None:
        if self._executor.exception() is None:  # a failed start was raised by `map`
            self._executor.result().shutdown()

    def _wait_for_turn(self, order: int) -> None:
        place = (order, next(self._arrivals))
        with self._turn:
            heapq.heappush(self._waiting, place)
            try:
                self._turn.wait_for(
                    lambda: self._running < self._slots and self._waiting[0] == place
                )
            finally:  # also when the wait is interrupted: a stale place would block all
                self._waiting.remove(place)
                heapq.heapify(self._waiting)
                self._turn.notify_all()  # the next in line may have a slot now
            self._running += 1

    def _release(self, _: Future[Any] | None = None) -> None:
        # Mostly runs in the executor's own thread: it must not submit (that can
        # deadlock), only wake the stages waiting for a slot.
        with self._turn:
            self._running -= 1
            self._turn.notify_all()


def run_stage(
    batch: Batch,
    stage: str,
    function: StageFunction,
    settings: Settings,
    pool: StagePool | None,
) -> Batch:
    """Apply `function` to every article of the batch, in the pool's processes when given."""
    apply = partial(_apply, stage, function, settings)
    if pool is None or not batch.articles:
        results = list(map(apply, batch.articles))
    else:
        results = pool.map(batch.batch_id, apply, batch.articles)
    articles = [r for r in results if isinstance(r, Article)]
    rejects = [r for r in results if isinstance(r, Reject)]
    return Batch(batch.batch_id, articles, batch.rejects + rejects)


# What the workers' server process imports before it forks them.
_WORKER_PRELOAD = "newsflow.tasks.stages.workers"

# Pools started by `start_workers_early`, by worker count, for `stage_pool` to adopt.
_early_pools: dict[int, StagePool] = {}
# Pools `keep_stage_pool` keeps for every run of this process, by worker count.
_kept_pools: dict[int, StagePool] = {}


def _start_workers(workers: int) -> ProcessPoolExecutor:
    """Forked from a server process (multiprocessing's forkserver) that imports
    `newsflow.tasks.stages.workers` first, so the stage modules and models load once,
    not once per worker; not forked from the flow process, which runs Prefect's threads
    (forking a process with threads can deadlock the child)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([_WORKER_PRELOAD])
    # Importing it again in each worker costs nothing after the preload; it loads the
    # worker if the forkserver was already running without it (another user started it
    # first), and fails the pool with the error if it cannot be imported, where the
    # forkserver would only print it.
    executor = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=importlib.import_module,
        initargs=(_WORKER_PRELOAD,),
    )
    executor.submit(int)  # waits for the preload; workers then fork at once, on demand
    return executor


def start_workers_early(settings: Settings) -> None:
    """Start the stage workers before the flow run exists, for the run's `stage_pool` to
    adopt: they load while Prefect starts (an ephemeral server takes 10-20 s) and creates
    the run, rather than after. The command line does this; a deployment's run starts its
    workers itself."""
    if _pool_wanted(settings) and settings.workers not in _early_pools:
        _early_pools[settings.workers] = StagePool(settings.workers)


def _pool_wanted(settings: Settings) -> bool:
    return settings.workers > 1 and settings.task_runner_address is None


@contextmanager
def keep_stage_pool(settings: Settings) -> Iterator[None]:
    """Stage workers that every ingest run of this process uses until the block ends,
    instead of each run starting and stopping its own (~3 s of CPU, ~2 s before its first
    article): the event consumer runs one ingest per micro-batch, seconds apart. A pool
    a dead worker broke is replaced by the next run that asks for it."""
    if not _pool_wanted(settings) or settings.workers in _kept_pools:
        yield
        return
    _kept_pools[settings.workers] = StagePool(settings.workers)
    try:
        yield
    finally:
        _kept_pools.pop(settings.workers).close()


@contextmanager
def stage_pool(
    settings: Settings, *, enabled: bool = True, few_objects: bool = False
) -> Iterator[StagePool | None]:
    """Worker processes for the CPU-bound stages (lxml, langdetect and the rules hold the GIL).

    They start at once, in the background, while the first batch is fetched.
    `enabled=False` (a Dask cluster supplies the processes) or one worker runs stages in
    the calling process; so does a run of `few_objects`, unless its workers were started
    early: starting them costs ~3 s of CPU and ~2 s before the first article, more than
    they save on a few objects. A pool `keep_stage_pool` keeps serves every run, whatever
    its size, and outlives it.
    """
    if enabled and (kept := _kept_pools.get(settings.workers)) is not None:
        if kept.broken:
            kept.close()
            kept = _kept_pools[settings.workers] = StagePool(settings.workers)
        yield kept
        return
    pool = _early_pools.pop(settings.workers, None) if enabled else None
    if pool is None and enabled and settings.workers > 1 and not few_objects:
        pool = StagePool(settings.workers)
    if pool is None:
        yield None
        return
    try:
        yield pool
    finally:
        pool.close()

"""The stage worker pool: forked warm, started early by the command line and adopted by
the run, and serving the oldest batch first."""

from __future__ import annotations

import multiprocessing
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from pathlib import Path

import pytest
from newsflow.tasks.schema import Article, Reject, RejectedArticle
from newsflow.tasks.settings import Settings
from newsflow.tasks.stages import extract, language
from newsflow.tasks.stages.batch import (
    StagePool,
    _apply,
    keep_stage_pool,
    stage_pool,
    start_workers_early,
    trim_heap_above,
)

from tests.corpus import make_article


def _warm_state(_: int) -> tuple[int, int, int]:
    """In a worker: its pid, and whether the name lists and language profiles are loaded."""
    return (
        os.getpid(),
        extract.places.cache_info().currsize,
        language._factory.cache_info().currsize,
    )


def test_the_run_adopts_the_workers_started_early_and_they_are_warm() -> None:
    settings = Settings(workers=2)
    before = {child.pid for child in multiprocessing.active_children()}
    start_workers_early(settings)
    start_workers_early(settings)  # a second call keeps the first pool

    with stage_pool(settings) as pool:
        assert pool is not None
        states = set(pool.map("batch", _warm_state, list(range(40))))
        pids = {pid for pid, _, _ in states}
        started = {child.pid for child in multiprocessing.active_children()} - before
        assert pids <= started and len(started) == 2
        # loaded before the fork, by the server process the workers are forked from
        assert {(places, profiles) for _, places, profiles in states} == {(1, 1)}
    # adopted once: the next run starts its own workers
    with stage_pool(settings) as pool:
        assert pool is not None
        assert not {pid for pid, *_ in pool.map("batch", _warm_state, list(range(40)))} & pids


def _stamped(item: int, gate: Path | None = None) -> tuple[int, float]:
    """In a worker: the item and when it was done; item 0 first waits for `gate`. Each
    item takes 0.1 s: the time the older stage has to queue its next chunk."""
    while item == 0 and gate is not None and not gate.exists():
        time.sleep(0.01)
    time.sleep(0.1)
    return item, time.monotonic()


def _wait_until(pool: StagePool, condition: Callable[[], bool]) -> None:
    """Poll the pool's queue, under its lock, until `condition` holds (30 s at most)."""
    deadline = time.monotonic() + 30
    while True:
        with pool._turn:
            if condition():
                return
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_free_worker_takes_the_oldest_batchs_work_before_a_newer_batchs(
    tmp_path: Path,
) -> None:
    pool = StagePool(workers=1)
    gate = tmp_path / "gate"
    newer: list[tuple[int, float]] = []
    older: list[tuple[int, float]] = []
    try:
        pool.map("older", _stamped, [1])  # the pool meets the older batch first
        # A newer batch's stage: 4 chunks of 4 items, the first held at the gate.
        clean_newer = threading.Thread(
            target=lambda: newer.extend(
                pool.map("newer", partial(_stamped, gate=gate), list(range(16)))
            ),
            daemon=True,
        )
        clean_newer.start()
        # Two of its chunks hold the slots and its third waits before the older stage comes;
        # otherwise the older stage could take the second slot, and the count would vary.
        _wait_until(pool, lambda: pool._running == pool._slots and len(pool._waiting) == 1)
        # The older batch's next stage comes while the newer one's first chunk runs.
        next_older = threading.Thread(
            target=lambda: older.extend(pool.map("older", _stamped, list(range(1, 5)))),
            daemon=True,
        )
        next_older.start()
        _wait_until(pool, lambda: len(pool._waiting) == 2)  # the older stage waits
        gate.touch()
        clean_newer.join(timeout=60)
        next_older.join(timeout=60)
    finally:
        gate.touch()  # a failed wait must not leave the worker held at the gate
        pool.close()

    assert [item for item, _ in older] == list(range(1, 5))
    assert [item for item, _ in newer] == list(range(16))
    older_done = max(stamp for _, stamp in older)
    # In queue order the older stage would wait for all four chunks; here it waits only
    # for the chunk held at the gate and the one already handed to the worker.
    assert sum(stamp > older_done for _, stamp in newer) == 8


def _die(_: int) -> int:
    os._exit(1)


def test_a_worker_that_dies_fails_every_later_stage_instead_of_hanging_it() -> None:
    pool = StagePool(workers=1)
    failures: list[BaseException] = []

    def stages() -> None:
        for _ in range(4):  # more stages than the pool has slots
            try:
                pool.map("batch", _die, list(range(8)))
            except BrokenProcessPool as error:
                failures.append(error)

    running = threading.Thread(target=stages, daemon=True)
    running.start()
    running.join(timeout=60)
    pool.close()
    assert not running.is_alive()
    assert len(failures) == 4


def test_a_kept_pool_serves_every_run_and_one_a_dead_worker_broke_is_replaced() -> None:
    settings = Settings(workers=2)
    with keep_stage_pool(settings):
        with stage_pool(settings, few_objects=True) as first:
            assert first is not None  # few objects or not: the workers are already there
            pids = {pid for pid, *_ in first.map("run-1", _warm_state, list(range(40)))}
        with stage_pool(settings) as second:
            assert second is first, "the next run got other workers"
            assert {pid for pid, *_ in second.map("run-2", _warm_state, list(range(40)))} <= pids
            with pytest.raises(BrokenProcessPool):
                second.map("run-2", _die, list(range(4)))
        with stage_pool(settings) as third:
            assert third is not first and third is not None
            assert not {pid for pid, *_ in third.map("run-3", _warm_state, list(range(40)))} & pids
    with stage_pool(settings, few_objects=True) as after:
        assert after is None, "the kept pool outlived its block"


glibc_only = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc" or not Path("/proc/self/statm").exists(),
    reason="glibc's heaps, RSS read from /proc",
)

# Run in a fresh interpreter: a thread keeps the heap it was first given.
_HEAP_PROBE = """
import os, sys, threading
from pathlib import Path
from newsflow.tasks.stages.batch import share_one_heap

def rss():
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def churn(kept):
    # 100 MB of 4 KB objects (glibc's, not Python's small-object arenas); keeping every
    # 16th leaves the others as holes that the heap keeps for reuse
    objects = [bytes(4000) + i.to_bytes(4) for i in range(25_000)]
    kept.append(objects[::16])

if sys.argv[1] == "shared":
    share_one_heap()
kept = []
thread = threading.Thread(target=churn, args=(kept,))
thread.start()
thread.join()
before = rss()
churn(kept)
print(rss() - before)
"""


def _rss_growth_of_second_churn(mode: str) -> int:
    # without the settings that would give the "separate" probe one heap too
    env = {k: v for k, v in os.environ.items() if k not in {"MALLOC_ARENA_MAX", "GLIBC_TUNABLES"}}
    probe = subprocess.run(
        [sys.executable, "-c", _HEAP_PROBE, mode],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return int(probe.stdout)


@glibc_only
def test_threads_sharing_one_heap_reuse_what_another_thread_freed() -> None:
    mib = 1024 * 1024
    # a thread's own heap keeps its holes: the main thread's churn needs new memory
    assert _rss_growth_of_second_churn("separate") > 80 * mib
    # one heap: the main thread's churn fills the holes the other thread left
    assert _rss_growth_of_second_churn("shared") < 30 * mib


def _rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@glibc_only
def test_the_heap_is_trimmed_only_above_the_limit() -> None:
    mib = 1024 * 1024
    # 240 MB of 4 KB objects; keeping every 16th leaves the others as holes the heap keeps
    objects = [bytes(4000) + i.to_bytes(4) for i in range(60_000)]
    kept = objects[::16]
    del objects
    held = _rss_bytes()
    assert not trim_heap_above(held + 1024 * mib)
    assert abs(_rss_bytes() - held) < 10 * mib
    assert trim_heap_above(0)
    assert held - _rss_bytes() > 150 * mib
    del kept  # alive until here: the kept objects are what keep the holes apart


def _stage(article: Article, settings: Settings) -> Article:
    if article.raw == "verdict":
        raise RejectedArticle("no article text")
    if article.raw == "bug":
        raise UnicodeDecodeError("utf-8", b"\xf0", 0, 1, "invalid continuation byte")
    return article


def test_an_exception_in_a_stage_is_marked_as_a_stage_error_and_a_verdict_is_not() -> None:
    verdict, bug = (
        _apply("enrich", _stage, Settings(), make_article(r)) for r in ("verdict", "bug")
    )
    assert isinstance(verdict, Reject) and not verdict.stage_error
    assert verdict.reason == "no article text"
    assert isinstance(bug, Reject) and bug.stage_error
    assert bug.reason.startswith("enrich failed on this input: UnicodeDecodeError")
    assert _apply("enrich", _stage, Settings(), make_article("fine")).raw == "fine"

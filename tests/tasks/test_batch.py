"""The stage worker pool: started early by the command line, adopted by the run, warm."""

from __future__ import annotations

import multiprocessing
import os

from flows.ingest import warm_up_worker
from tasks import extract, language
from tasks.batch import stage_pool, start_workers_early
from tasks.settings import Settings


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
    start_workers_early(settings, warm_up_worker)
    start_workers_early(settings, warm_up_worker)  # a second call keeps the first pool
    started_early = {child.pid for child in multiprocessing.active_children()} - before
    assert len(started_early) == 2

    with stage_pool(settings, warm_up_worker) as pool:
        assert pool is not None
        states = set(pool.map(_warm_state, range(40), chunksize=1))
        pids = {pid for pid, _, _ in states}
        assert pids <= started_early
        assert {(places, profiles) for _, places, profiles in states} == {(1, 1)}
    # adopted once: the next run starts its own workers
    with stage_pool(settings, warm_up_worker) as pool:
        assert pool is not None
        assert not {pid for pid, *_ in pool.map(_warm_state, range(40))} & pids

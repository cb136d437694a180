"""A batch of articles and the machinery that runs one stage over it on every core."""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from functools import partial

from tasks.schema import Article, Reject, RejectedArticle
from tasks.settings import Settings

logger = logging.getLogger(__name__)

StageFunction = Callable[[Article, Settings], Article]


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


def _apply(
    stage: str, function: StageFunction, settings: Settings, article: Article
) -> Article | Reject:
    """Run one stage on one article; bad input becomes a Reject instead of an exception."""
    try:
        return function(article, settings)
    except RejectedArticle as rejected:
        reason = rejected.reason
    except Exception as error:  # a parser choking on hostile input must not sink the batch
        reason = f"{stage} failed on this input: {type(error).__name__}: {error}"[:500]
    return Reject(
        object_key=article.object_key,
        object_etag=article.object_etag,
        stage=stage,
        reason=reason,
        line_number=article.line_number,
    )


def run_stage(
    batch: Batch,
    stage: str,
    function: StageFunction,
    settings: Settings,
    pool: Executor | None,
) -> Batch:
    """Apply `function` to every article of the batch, in the pool's processes when given."""
    apply = partial(_apply, stage, function, settings)
    if pool is None or not batch.articles:
        results = list(map(apply, batch.articles))
    else:
        chunksize = max(1, len(batch.articles) // (settings.workers * 4))
        results = list(pool.map(apply, batch.articles, chunksize=chunksize))
    articles = [r for r in results if isinstance(r, Article)]
    rejects = [r for r in results if isinstance(r, Reject)]
    return Batch(batch.batch_id, articles, batch.rejects + rejects)


WarmUp = Callable[[], None]

# Pools started by `start_workers_early`, by worker count, for `stage_pool` to adopt.
_early_pools: dict[int, ProcessPoolExecutor] = {}


def _start_pool(settings: Settings, warm_up: WarmUp) -> ProcessPoolExecutor:
    """Spawned, not forked: the flow process runs Prefect's threads, and forking a process
    with threads can deadlock the child. Each worker runs `warm_up` as it starts."""
    pool = ProcessPoolExecutor(
        max_workers=settings.workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=warm_up,
    )
    for _ in range(settings.workers):
        pool.submit(int)  # spawning is lazy: one job per worker starts them all now
    return pool


def start_workers_early(settings: Settings, warm_up: WarmUp) -> None:
    """Start the stage workers before the flow run exists, for the run's `stage_pool` to
    adopt: they warm up while Prefect starts (an ephemeral server takes 10-20 s) and
    creates the run, rather than after. The command line does this; a deployment's run
    starts its workers itself."""
    if (
        settings.workers > 1
        and settings.task_runner_address is None
        and settings.workers not in _early_pools
    ):
        _early_pools[settings.workers] = _start_pool(settings, warm_up)


@contextmanager
def stage_pool(
    settings: Settings, warm_up: WarmUp, *, enabled: bool = True
) -> Iterator[Executor | None]:
    """Worker processes for the CPU-bound stages (lxml, langdetect and the rules hold the GIL).

    The workers start at once and `warm_up` (imports, models, name lists: seconds) while
    the first batch is fetched, instead of inside its first stage. `enabled=False` (a Dask
    cluster supplies the processes) or one worker runs stages in the calling process.
    """
    if not enabled or settings.workers <= 1:
        yield None
        return
    pool = _early_pools.pop(settings.workers, None) or _start_pool(settings, warm_up)
    with pool:
        yield pool

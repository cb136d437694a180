"""The ingest flow: new objects under an S3 prefix -> articles and rejects in the lake.

Each stage is a Prefect task over a batch of objects (not one task per article: a task
run costs 10-25 ms of orchestration). Batches are passed by reference (`quote`), the
CPU-bound stages fan out over worker processes, and each batch is committed to the lake's
Delta tables by replacing its objects' rows, so runs, retries and reruns are exactly-once
without waiting for each other (see `tasks/lake/lake.py`).
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from itertools import chain, islice
from typing import Any

from newsflow.flows.progress import RunProgress
from newsflow.tasks.lake import Lake, Ledger, WriteReport
from newsflow.tasks.s3 import ObjectRef, S3Location, key_of, s3_client
from newsflow.tasks.settings import Settings
from newsflow.tasks.stages.batch import Batch, StagePool, stage_pool, trim_heap_above
from newsflow.tasks.stages.clean import clean_batch
from newsflow.tasks.stages.enrich import enrich_batch
from newsflow.tasks.stages.extract import extract_batch
from newsflow.tasks.stages.fetch import fetch_batch, list_objects
from newsflow.tasks.stages.language import detect_language_batch
from prefect import Task, flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

_LISTING_CHUNK = 1000
# The CPU-bound stages, in order; each is one task run per batch.
_STAGES: tuple[Task[..., Batch], ...] = (
    clean_batch,
    detect_language_batch,
    extract_batch,
    enrich_batch,
)


@dataclass(slots=True)
class RunSummary:
    """What a run did, for the CLI, the flow's return value and the Prefect artifacts."""

    input: str
    output: str
    objects_listed: int = 0
    objects_new: int = 0
    objects_written: int = 0
    articles: int = 0
    rejects: int = 0
    objects_replaced: int = 0
    batches: int = 0
    seconds: float = 0.0
    commit_seconds: float = 0.0
    rejects_by_reason: Counter[str] = field(default_factory=Counter)
    # Exceptions a stage raised, by stage: maybe a bug losing good articles, not a verdict
    # on the input like "no article text".
    stage_errors: Counter[str] = field(default_factory=Counter)
    articles_by_source: Counter[str] = field(default_factory=Counter)
    articles_by_language: Counter[str] = field(default_factory=Counter)

    def add(self, batch: Batch, report: WriteReport) -> None:
        self.batches += 1
        self.objects_written += report.objects
        self.objects_replaced += report.replaced
        self.articles += report.articles
        self.rejects += report.rejects
        self.commit_seconds += sum(report.commit_seconds.values())
        self.articles_by_source.update(a.source for a in batch.articles)
        self.articles_by_language.update(a.language for a in batch.articles)
        self.rejects_by_reason.update(f"{r.stage}: {r.reason.split(':')[0]}" for r in batch.rejects)
        self.stage_errors.update(r.stage for r in batch.rejects if r.stage_error)

    @property
    def articles_per_second(self) -> float:
        return self.articles / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["articles_per_second"] = round(self.articles_per_second, 2)
        for name in (
            "rejects_by_reason",
            "stage_errors",
            "articles_by_source",
            "articles_by_language",
        ):
            # asdict() rebuilds a Counter from (key, count) pairs, counting the pairs
            values[name] = dict(getattr(self, name).most_common())
        return values


def new_object_batches(
    refs: Iterator[ObjectRef],
    ledger: Ledger,
    summary: RunSummary,
    settings: Settings,
    reprocess: bool,
) -> Iterator[list[ObjectRef]]:
    """Batches of object versions not yet in the lake, filtered a listing chunk at a time.

    A batch closes at `batch_size` objects or `batch_max_bytes` of stored bytes, whichever
    comes first, so a run of large objects cannot make a batch huge.
    """
    batch: list[ObjectRef] = []
    batch_bytes = 0
    while chunk := list(islice(refs, _LISTING_CHUNK)):
        summary.objects_listed += len(chunk)
        done = (
            ledger.contains([r.fingerprint for r in chunk])
            if not reprocess
            else [False] * len(chunk)
        )
        for ref, is_done in zip(chunk, done, strict=True):
            if is_done:
                continue
            batch.append(ref)
            batch_bytes += ref.size
            if len(batch) >= settings.batch_size or batch_bytes >= settings.batch_max_bytes:
                yield batch
                batch, batch_bytes = [], 0
    if batch:
        yield batch


def _publish_artifacts(summary: RunSummary) -> None:
    rows = [
        {"dimension": "source", "value": k, "count": v}
        for k, v in summary.articles_by_source.most_common()
    ]
    rows += [
        {"dimension": "language", "value": k, "count": v}
        for k, v in summary.articles_by_language.most_common()
    ]
    rows += [
        {"dimension": "reject", "value": k, "count": v}
        for k, v in summary.rejects_by_reason.most_common()
    ]
    rows += [
        {"dimension": "stage error", "value": k, "count": v}
        for k, v in summary.stage_errors.most_common()
    ]
    create_table_artifact(
        key="ingest-counts",
        table=rows,
        description="Articles by source and language; rejects by reason; stage errors.",
    )
    errors = sum(summary.stage_errors.values())
    warning = (
        f"**{errors} stage errors** (a stage raised on this input: a bug may be losing "
        f"articles): {dict(summary.stage_errors.most_common())}\n\n"
        if errors
        else ""
    )
    create_markdown_artifact(
        key="ingest-summary",
        markdown=(
            f"## Ingest {summary.input} -> {summary.output}\n\n{warning}"
            f"{summary.objects_new} new of {summary.objects_listed} listed objects: "
            f"{summary.articles} articles, {summary.rejects} rejects in {summary.batches} batches; "
            f"{summary.objects_replaced} objects replaced earlier rows; "
            f"{summary.seconds:.1f} s, {summary.articles_per_second:.1f} articles/s, "
            f"{summary.commit_seconds:.1f} s of Delta commits.\n"
        ),
        description="Duration, throughput and commits of this run.",
    )


def task_runner(settings: Settings) -> TaskRunner[Any]:
    """Where the stage tasks run: threads here (CPU work in `stage_pool`'s processes), or a
    Dask cluster when `task_runner_address` is set, each worker running whole stage tasks."""
    if not settings.task_runner_address:
        # fetch and each stage of every batch in flight, waiting on each other
        return ThreadPoolTaskRunner(max_workers=(len(_STAGES) + 1) * settings.batches_in_flight)
    from prefect_dask import DaskTaskRunner

    if settings.task_runner_address == "local":
        return DaskTaskRunner(
            cluster_kwargs={"n_workers": settings.workers, "threads_per_worker": 1}
        )
    return DaskTaskRunner(address=settings.task_runner_address)


class PortableS3Client:
    """A boto3 client that crosses to Dask workers as its settings and is rebuilt there:
    a live client holds an SSL context and locks, which do not pickle."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client = s3_client(settings)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def __reduce__(self) -> tuple[Any, ...]:
        return (PortableS3Client, (self._settings,))


def submit_stages(
    runner: TaskRunner[Any],
    client: Any,
    location: S3Location,
    refs: list[ObjectRef],
    settings: Settings,
    pool: StagePool | None,
    salt: str,
    previous: PrefectFuture[Batch] | None,
) -> list[PrefectFuture[Batch]]:
    """Fetch and the CPU stages of one batch as chained futures, in stage order.

    With a stage pool, the fetch waits for the `previous` batch's: batches arrive one at
    a time, at `fetch_concurrency`, the oldest first (a retried fetch holds up the next,
    but the oldest batch is the one the writes wait for). Their stages need not wait: the
    pool gives a free worker to the oldest batch's work, and a newer batch's only fills
    the gaps. Elsewhere (a Dask cluster, one worker) batches are fetched side by side.
    """
    # Dask rebuilds namedtuple subclasses such as `quote` wrongly when it ships arguments;
    # there the list goes as it is (Prefect walks its 200 refs: ~20 ms).
    shipped = quote(refs) if isinstance(runner, ThreadPoolTaskRunner) else refs
    batch: PrefectFuture[Batch] = runner.submit(
        fetch_batch,
        {
            "client": client,
            "location": location,
            "refs": shipped,
            "settings": settings,
            "salt": salt,
        },
        wait_for=[previous] if previous is not None and pool is not None else None,
    )
    chain = [batch]
    for stage in _STAGES:
        batch = runner.submit(stage, {"batch": batch, "settings": settings, "pool": pool})
        chain.append(batch)
    return chain


@task(name="write", retries=3, retry_delay_seconds=[2, 10, 30], cache_policy=NO_CACHE)
def write_batch(
    lake: Lake, batch: Batch, refs: list[ObjectRef], ledger: Ledger, metadata: dict[str, str]
) -> WriteReport:
    """Commit one batch to the lake; retried because S3 writes fail transiently, and safe
    to retry because a batch written again replaces its own rows."""
    report = lake.write_batch(
        batch.batch_id,
        [(ref.key, ref.etag) for ref in refs],
        batch.articles,
        batch.rejects,
        ledger,
        metadata,
    )
    get_run_logger().info(
        "batch %s: committed %d objects as %d articles and %d rejects (%d replaced) in %.2f s",
        report.batch_id,
        report.objects,
        report.articles,
        report.rejects,
        report.replaced,
        sum(report.commit_seconds.values()),
    )
    return report


@flow(name="ingest-articles")
def ingest_articles(
    input_uri: str,
    output_uri: str,
    keys: list[str | ObjectRef] | None = None,
    reprocess: bool = False,
) -> dict[str, Any]:
    """Process the new objects under `input_uri` (or just `keys`) into the lake at `output_uri`.

    A key stands for its object's current version; an `ObjectRef` (what the event path
    passes) for the version a notification announced, which saves asking S3 for it.

    `reprocess=True` processes every listed object again, replacing its earlier rows
    (after a cleaning improvement, say).

    Up to `batches_in_flight` batches are fetched (one after the other) and processed at
    once while the oldest is written here, in order: the cores never wait on S3, on a
    write or on a stage's slowest article, and memory stays bounded by the batches in
    flight. The stage workers serve the oldest batch first (`StagePool`). Other runs may
    write the same lake at the same time: commits are Delta's, and need no lease.
    """
    started = time.monotonic()
    logger = get_run_logger()
    settings = Settings()
    location = S3Location.parse(input_uri)
    lake = Lake.open(output_uri, settings)
    client = PortableS3Client(settings)
    summary = RunSummary(input=str(location), output=lake.uri)
    progress = RunProgress()
    on_dask = settings.task_runner_address is not None
    # A reprocessed batch must not take the id of the batch it replaces: history tells
    # the two apart by it.
    salt = str(flow_run.id) if reprocess else ""
    metadata = {"operation": "reprocess" if reprocess else "ingest", "run": str(flow_run.id)}
    ledger = lake.ledger(None if keys is None else [key_of(k) for k in keys])
    logger.info("%d objects already in the lake at %s", len(ledger), lake.uri)

    def write_oldest(
        in_flight: deque[tuple[list[ObjectRef], list[PrefectFuture[Batch]]]],
    ) -> None:
        refs, stages = in_flight.popleft()
        # In stage order, so a failure raises its own error (S3 down, say) rather than
        # the "never ran" of the stages after it.
        batch = [future.result() for future in stages][-1]
        summary.add(batch, write_batch(quote(lake), batch, quote(refs), quote(ledger), metadata))
        del batch, stages  # this batch's results: free before the heap is trimmed
        trim_heap_above(settings.trim_heap_above_bytes)
        summary.seconds = time.monotonic() - started
        progress.update(summary)
        logger.info(
            "progress: %d listed, %d new, %d written -> %d articles, %d rejects (%.1f articles/s)",
            summary.objects_listed,
            summary.objects_new,
            summary.objects_written,
            summary.articles,
            summary.rejects,
            summary.articles_per_second,
        )

    refs = list_objects(client, location, keys, settings.fetch_concurrency)
    batches = new_object_batches(refs, ledger, summary, settings, reprocess)
    first = next(batches, None)
    if first is not None:  # most sweeps find nothing new: no workers, no task runner
        # A run of one small batch (an upload triggered it, say) needs no workers. A
        # small first batch ended the listing unless large objects closed it early, so
        # looking for a second costs nothing; after a full one it could mean listing
        # much further before any work starts.
        small = len(first) < settings.workers_min_objects
        second = next(batches, None) if small else None
        head = [first] if second is None else [first, second]
        with (
            stage_pool(settings, enabled=not on_dask, few_objects=small and second is None) as pool,
            task_runner(settings) as runner,
        ):
            in_flight: deque[tuple[list[ObjectRef], list[PrefectFuture[Batch]]]] = deque()
            stages: list[PrefectFuture[Batch]] = []
            for batch_refs in chain(head, batches):
                summary.objects_new += len(batch_refs)
                stages = submit_stages(
                    runner,
                    client,
                    location,
                    batch_refs,
                    settings,
                    pool,
                    salt,
                    previous=stages[0] if stages else None,
                )
                in_flight.append((batch_refs, stages))
                if len(in_flight) >= settings.batches_in_flight:
                    write_oldest(in_flight)
            while in_flight:
                write_oldest(in_flight)
    summary.seconds = time.monotonic() - started
    logger.info(
        "done: %d new of %d listed objects -> %d articles, %d rejects in %.1f s",
        summary.objects_new,
        summary.objects_listed,
        summary.articles,
        summary.rejects,
        summary.seconds,
    )
    _publish_artifacts(summary)
    return summary.as_dict()

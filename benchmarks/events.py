"""The event path end to end: uploads at paced rates -> S3 notifications -> SQS ->
`newsflow listen` -> rows in the lake, on the whole stack.

    python -m benchmarks.events                      # the issue's phases, ~25 minutes
    python -m benchmarks.events --single 5 --rate 10:60 --rate 30:60 --burst 1000 --batch 1000

It starts a moto S3 + SQS server (bucket notifications for `in/` to a queue; its SQS reads
the clock the cheap way, `benchmarks/moto_server.py`, unless `--stock-moto`), a `prefect
server`, `newsflow serve` (its sweep scheduled once a year, out of the way) and
`newsflow listen`, then runs the phases in order, each on objects of its own made from the
corpus pages as `benchmarks/throughput.py` makes them:

- single: uploads one at a time on an idle system, each once the previous is in the lake;
- rate R:S: R uploads a second for S seconds, paced (PUTs from 16 threads);
- burst N: N uploads as fast as 16 threads PUT them;
- batch N: `newsflow run` over N objects against the same server (the batch path's
  articles/s on this machine now, for the ratios).

For each phase it prints PUT -> row latency p50/p90/p99/max (the row's `ingested_at`,
stamped as its batch is written, just before the commit, minus the time its PUT began;
for single uploads also the time until a reader sees the row), throughput (objects
landed per second from the first PUT to the last row), CPU per object (the consumer and
its workers; the Prefect server; `newsflow serve`; and, since they share the cores, the
moto S3/SQS server and this process, which PUTs and polls), the processes of the consumer and of
serve, their RSS at the phase's start and end and its peak, the queue's backlog, the
slowest `/api/health` answer, and whether every object landed exactly once.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks.throughput import (
    SOURCES,
    bench_env,
    corpus_templates,
    measure,
    start_prefect_server,
    start_s3_server,
    upload,
    varied_page,
)

PREFIX = "in/"
_SAMPLE_SECONDS = 1.0
_PSS_EVERY = 5
# Every 5 s too: moto's SQS computes a queue's attributes by walking its messages, and
# asking every second took a third of moto's CPU with 1,000 messages queued.
_BACKLOG_EVERY = 5
_PUT_THREADS = 16
# Processes counted with their children; those whose count and memory are sampled.
_TREES = {"consumer", "serve", "server"}
_SAMPLED = {"consumer", "serve"}


# --- the stack ---------------------------------------------------------------------------


@dataclass
class Stack:
    env: dict[str, str]
    api_url: str
    bucket: str
    queue_url: str
    lake: LakeReader
    # consumer, serve, server; and the S3/SQS server and this process, whose CPU is
    # reported too: they share the two cores with what is measured.
    processes: dict[str, psutil.Process]
    s3: Any
    sqs: Any


def notifying_bucket(s3: Any, sqs: Any, bucket: str) -> str:
    s3.create_bucket(Bucket=bucket)
    queue_url = sqs.create_queue(QueueName=f"{bucket}-uploads")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": arn["Attributes"]["QueueArn"],
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": PREFIX}]}},
                }
            ]
        },
    )
    return str(queue_url)


def start_newsflow(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    newsflow = str(Path(sys.executable).with_name("newsflow"))
    with log.open("ab") as handle:
        return subprocess.Popen(
            [newsflow, *command], env=env, stdout=handle, stderr=subprocess.STDOUT
        )


# --- the objects -------------------------------------------------------------------------


class Pages:
    """Varied corpus pages, each its own text, with keys `in/<source>/<phase>/<n>.html`."""

    def __init__(self) -> None:
        self._pages = corpus_templates()
        self._rng = random.Random(0)
        self._count = 0

    def next(self, phase: str) -> tuple[str, bytes]:
        number = self._count
        self._count += 1
        source = SOURCES[number % len(SOURCES)]
        page = varied_page(self._pages[number % len(self._pages)], self._rng, number)
        return f"{PREFIX}{source}/{phase}/{number:07d}.html", page.encode()


class LakeReader:
    """(object_key, ingested_at) of every article and reject row a reader of the lake sees
    now, reading only the data files added since the last look: a full read of a lake of
    thousands of files every few seconds would take a core from the system measured."""

    def __init__(self, lake: Path) -> None:
        self.lake = lake
        self._tables: dict[str, Any] = {}
        self._rows_of_file: dict[str, list[tuple[str, float]]] = {}

    def rows(self) -> list[tuple[str, float]]:
        from deltalake import DeltaTable
        from newsflow.tasks.lake import ARTICLES, REJECTS

        rows: list[tuple[str, float]] = []
        for name in (ARTICLES, REJECTS):
            table = self._tables.get(name)
            if table is None:
                if not (self.lake / name / "_delta_log").exists():
                    return []  # the consumer's first run creates the tables
                table = self._tables[name] = DeltaTable(str(self.lake / name))
            table.update_incremental()
            for uri in table.file_uris():
                if uri not in self._rows_of_file:
                    self._rows_of_file[uri] = _key_times(uri)
                rows += self._rows_of_file[uri]
        return rows


def _key_times(uri: str) -> list[tuple[str, float]]:
    import pyarrow.parquet as pq

    table = pq.read_table(uri, columns=["object_key", "ingested_at"])
    keys = table.column("object_key").to_pylist()
    times = [value.timestamp() for value in table.column("ingested_at").to_pylist()]
    return list(zip(keys, times, strict=True))


# --- sampling while a phase runs ---------------------------------------------------------


def _tree(process: psutil.Process) -> list[psutil.Process]:
    try:
        return [process, *process.children(recursive=True)]
    except psutil.Error:
        return []


def _cpu(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            continue
    return total


def _pss_mib(processes: list[psutil.Process]) -> float:
    """Proportional memory: the forked workers share the forkserver's pages, which a sum
    of their RSS would count once per worker."""
    total = 0
    for process in processes:
        try:
            total += process.memory_full_info().pss
        except psutil.Error:
            continue
    return total / 2**20


@dataclass
class Samples:
    """What a sampler thread saw every second of a phase."""

    processes: dict[str, int] = field(default_factory=Counter)
    pss_mib: dict[str, list[float]] = field(default_factory=dict)
    backlog: list[int] = field(default_factory=list)
    health_seconds: list[float] = field(default_factory=list)
    health_failures: int = 0


class Sampler:
    """Samples processes and `/api/health` every second, and the queue's backlog and PSS
    every 5 s (reading PSS costs ~15 ms per GB); CPU of each process tree is the
    difference between `start` and `stop` (as last seen, so a process that ends within a
    second loses up to a second of CPU)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.samples = Samples()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._cpu_start: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._main_start = 0.0
        self.consumer_main_cpu = 0.0

    def _trees(self) -> dict[str, list[psutil.Process]]:
        return {
            name: _tree(process) if name in _TREES else [process]
            for name, process in self.stack.processes.items()
        }

    def _consumer_main_cpu(self) -> float:
        return _cpu([self.stack.processes["consumer"]])

    def start(self) -> Sampler:
        self._cpu_start = {name: _cpu(tree) for name, tree in self._trees().items()}
        self._main_start = self._consumer_main_cpu()
        self._thread.start()
        return self

    def stop(self) -> Samples:
        self._stop.set()
        self._thread.join()
        self.cpu = {
            name: _cpu(tree) - self._cpu_start.get(name, 0.0)
            for name, tree in self._trees().items()
        }
        self.consumer_main_cpu = self._consumer_main_cpu() - self._main_start
        return self.samples

    def _backlog(self) -> int:
        attributes = self.stack.sqs.get_queue_attributes(
            QueueUrl=self.stack.queue_url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
            ],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )

    def _run(self) -> None:
        samples = self.samples
        with httpx.Client(timeout=30) as http:
            for poll in itertools.count():
                if self._stop.is_set():
                    return
                for name, tree in self._trees().items():
                    if name not in _SAMPLED:
                        continue
                    samples.processes[name] = max(samples.processes[name], len(tree))
                    if poll % _PSS_EVERY == 0:
                        samples.pss_mib.setdefault(name, []).append(_pss_mib(tree))
                if poll % _BACKLOG_EVERY == 0:  # moto counts them message by message
                    samples.backlog.append(self._backlog())
                started = time.monotonic()
                try:
                    http.get(f"{self.stack.api_url}/health").raise_for_status()
                    samples.health_seconds.append(time.monotonic() - started)
                except httpx.HTTPError:
                    samples.health_failures += 1
                self._stop.wait(_SAMPLE_SECONDS)


# --- phases ------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    put_at: dict[str, float]  # key -> when its PUT began (Unix time)
    seconds_uploading: float
    samples: Samples
    cpu: dict[str, float]  # process tree -> CPU seconds
    consumer_main_cpu: float
    landed: dict[str, float]  # key -> first ingested_at
    duplicates: int
    seen_at: dict[str, float] = field(default_factory=dict)  # single: a reader saw it


def _put(stack: Stack, key: str, body: bytes, put_at: dict[str, float]) -> None:
    put_at[key] = time.time()
    stack.s3.put_object(Bucket=stack.bucket, Key=key, Body=body)


def _wait_landed(stack: Stack, keys: set[str], timeout: float) -> list[tuple[str, float]]:
    deadline = time.monotonic() + timeout
    while True:
        rows = stack.lake.rows()
        if keys <= {key for key, _ in rows}:
            return rows
        if time.monotonic() > deadline:
            missing = len(keys - {key for key, _ in rows})
            print(f"  timed out: {missing} of {len(keys)} objects not in the lake", flush=True)
            return rows
        time.sleep(5)  # reading a lake of thousands of files costs a core for a moment


def _finish(
    stack: Stack, name: str, put_at: dict[str, float], uploading: float, sampler: Sampler
) -> Phase:
    rows = _wait_landed(stack, set(put_at), timeout=max(300.0, len(put_at) / 5))
    samples = sampler.stop()
    counts = Counter(key for key, _ in rows if key in put_at)
    landed: dict[str, float] = {}
    for key, ingested in rows:
        if key in put_at:
            landed[key] = min(ingested, landed.get(key, ingested))
    duplicates = sum(count - 1 for count in counts.values())
    return Phase(
        name, put_at, uploading, samples, sampler.cpu, sampler.consumer_main_cpu, landed, duplicates
    )


def run_single(stack: Stack, pages: Pages, count: int, gap: float) -> Phase:
    sampler = Sampler(stack).start()
    put_at: dict[str, float] = {}
    seen_at: dict[str, float] = {}
    started = time.monotonic()
    for _ in range(count):
        key, body = pages.next("single")
        _put(stack, key, body, put_at)
        while key not in {k for k, _ in stack.lake.rows()}:
            time.sleep(0.1)
        seen_at[key] = time.time()
        time.sleep(gap)
    phase = _finish(stack, f"single x{count}", put_at, time.monotonic() - started, sampler)
    phase.seen_at = seen_at
    return phase


def run_rate(stack: Stack, pages: Pages, rate: float, seconds: float) -> Phase:
    sampler = Sampler(stack).start()
    put_at: dict[str, float] = {}
    total = int(rate * seconds)
    started = time.monotonic()
    with ThreadPoolExecutor(_PUT_THREADS) as pool:
        for number in range(total):
            delay = started + number / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            key, body = pages.next(f"rate{rate:g}")
            pool.submit(_put, stack, key, body, put_at)
    uploading = time.monotonic() - started
    return _finish(stack, f"{rate:g}/s for {seconds:g} s", put_at, uploading, sampler)


def run_burst(stack: Stack, pages: Pages, count: int) -> Phase:
    objects = [pages.next("burst") for _ in range(count)]  # made before the clock starts
    sampler = Sampler(stack).start()
    put_at: dict[str, float] = {}
    started = time.monotonic()
    with ThreadPoolExecutor(_PUT_THREADS) as pool:
        for key, body in objects:
            pool.submit(_put, stack, key, body, put_at)
    uploading = time.monotonic() - started
    return _finish(stack, f"burst of {count}", put_at, uploading, sampler)


def run_batch(stack: Stack, count: int, workdir: Path) -> dict[str, Any]:
    """`newsflow run` over `count` objects in a bucket of their own (no notifications),
    against the same server, in its own process, as benchmarks/throughput.py's steady
    run: the batch path's articles/s on this machine now."""
    bucket = f"batch-{count}"
    upload(stack.s3, bucket, count)
    measured = measure(
        [
            str(Path(sys.executable).with_name("newsflow")),
            "run",
            "--input",
            f"s3://{bucket}/in",
            "--output",
            str(workdir / f"lake-{bucket}"),
            "--json",
        ],
        stack.env,
        workdir / f"{bucket}.log",
    )
    objects = measured.output["objects_new"]
    return {
        "objects": objects,
        "seconds": measured.seconds,
        "objects_per_second": objects / measured.seconds,
        "cpu_ms_per_object": measured.cpu_seconds / objects * 1000,
    }


# --- report ------------------------------------------------------------------------------


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def report(phase: Phase, batch_rate: float | None) -> None:
    latencies = [phase.landed[k] - phase.put_at[k] for k in phase.landed]
    uploaded, landed = len(phase.put_at), len(phase.landed)
    print(f"\n=== {phase.name} ===")
    print(
        f"objects: {uploaded} uploaded in {phase.seconds_uploading:.1f} s, {landed} landed, "
        f"{uploaded - landed} missing, {phase.duplicates} duplicate rows"
    )
    if latencies:
        p50, p90, p99 = (_percentile(latencies, q) for q in (0.5, 0.9, 0.99))
        print(
            f"PUT -> row (ingested_at): p50 {p50:.2f} s, p90 {p90:.2f} s, p99 {p99:.2f} s, "
            f"max {max(latencies):.2f} s"
        )
        span = max(phase.landed.values()) - min(phase.put_at.values())
        rate = landed / span
        versus = f" = {rate / batch_rate:.0%} of the batch path's" if batch_rate else ""
        print(f"throughput: {rate:.1f} objects/s from the first PUT to the last row{versus}")
        # Once the PUTs end, moto serves the consumer alone: the drain rate of what was left.
        uploads_end = max(phase.put_at.values())
        after = [landed_at for landed_at in phase.landed.values() if landed_at > uploads_end]
        if len(after) >= 100:
            drain = len(after) / (max(after) - uploads_end)
            versus = f" = {drain / batch_rate:.0%} of the batch path's" if batch_rate else ""
            print(
                f"after the last PUT: {len(after)} objects left, drained at {drain:.1f} "
                f"objects/s{versus}"
            )
    if phase.seen_at:
        seen = [phase.seen_at[k] - phase.put_at[k] for k in phase.seen_at]
        print(
            f"PUT -> a reader sees the row: p50 {statistics.median(seen):.2f} s, "
            f"max {max(seen):.2f} s"
        )
    print(
        "CPU per object: "
        + ", ".join(
            f"{name} {seconds / uploaded * 1000:.0f} ms" for name, seconds in phase.cpu.items()
        )
        + f" (all {sum(phase.cpu.values()) / uploaded * 1000:.0f} ms; the consumer's main "
        f"process {phase.consumer_main_cpu / uploaded * 1000:.0f} ms of its share)"
    )
    samples = phase.samples
    for name, pss in samples.pss_mib.items():
        print(
            f"{name}: at most {samples.processes[name]} processes; PSS {pss[0]:.0f} MiB at "
            f"the start, {pss[-1]:.0f} at the end, peak {max(pss):.0f} (5-s samples)"
        )
    if samples.backlog:
        sample = int(phase.seconds_uploading / (_SAMPLE_SECONDS * _BACKLOG_EVERY))
        at_end = samples.backlog[min(len(samples.backlog) - 1, sample)]
        print(
            f"queue backlog (visible + in flight): peak {max(samples.backlog)}, "
            f"{at_end} when the uploads ended"
        )
    if samples.health_seconds:
        print(
            f"/api/health: slowest {max(samples.health_seconds):.2f} s of "
            f"{len(samples.health_seconds)}, {samples.health_failures} failed"
        )


def parse_rate(text: str) -> tuple[float, float]:
    rate, seconds = text.split(":")
    return float(rate), float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--single", type=int, default=20, help="single uploads (0: none)")
    parser.add_argument("--gap", type=float, default=2.0, help="seconds between single uploads")
    parser.add_argument(
        "--rate",
        type=parse_rate,
        action="append",
        help="RATE:SECONDS, repeatable (default 10:600 and 30:600)",
    )
    parser.add_argument("--burst", type=int, default=5000, help="burst size (0: none)")
    parser.add_argument("--batch", type=int, default=1000, help="objects for the batch path")
    parser.add_argument("--workdir", type=Path, help="keep the lake and logs here")
    parser.add_argument(
        "--stock-moto",
        action="store_true",
        help="moto as installed, whose SQS slows with every queued message "
        "(benchmarks/moto_server.py)",
    )
    args = parser.parse_args()
    rates = args.rate or [(10.0, 600.0), (30.0, 600.0)]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="newsflow-events-"))
    workdir.mkdir(parents=True, exist_ok=True)
    env = bench_env()
    s3_server, endpoint = start_s3_server(
        env, "moto.server" if args.stock_moto else "benchmarks.moto_server"
    )
    env["AWS_ENDPOINT_URL"] = endpoint
    os.environ.update(env)
    import boto3

    home = workdir / "prefect-server-home"
    home.mkdir(exist_ok=True)
    server, api_url = start_prefect_server(home, env)
    bucket = "events-bench"
    s3, sqs = boto3.client("s3"), boto3.client("sqs")
    queue_url = notifying_bucket(s3, sqs, bucket)
    lake = workdir / "lake"
    env.update(
        PREFECT_API_URL=api_url,
        PREFECT_HOME=str(workdir / "client-home"),
        NEWSFLOW_INPUT_URI=f"s3://{bucket}/{PREFIX}",
        NEWSFLOW_OUTPUT_URI=str(lake),
        NEWSFLOW_SWEEP_CRON="0 5 1 1 *",  # out of the way
    )
    serve = start_newsflow(["serve"], env, workdir / "serve.log")
    consumer = start_newsflow(["listen", "--queue", queue_url], env, workdir / "listen.log")
    processes = {
        "consumer": psutil.Process(consumer.pid),
        "serve": psutil.Process(serve.pid),
        "server": psutil.Process(server.pid),
    }
    processes |= {"moto": psutil.Process(s3_server.pid), "benchmark": psutil.Process()}
    stack = Stack(env, api_url, bucket, queue_url, LakeReader(lake), processes, s3, sqs)
    print(f"workdir {workdir}; S3 {endpoint}; Prefect API {api_url}", flush=True)
    pages = Pages()
    phases: list[Phase] = []
    batch: dict[str, Any] | None = None
    try:
        warm_key, warm_body = pages.next("warm-up")
        _put(stack, warm_key, warm_body, {})
        _wait_landed(stack, {warm_key}, timeout=300)
        print(f"stack up and warm at {datetime.now():%H:%M:%S}", flush=True)
        if args.single:
            phases.append(run_single(stack, pages, args.single, args.gap))
            report(phases[-1], None)
        for rate, seconds in rates:
            phases.append(run_rate(stack, pages, rate, seconds))
            report(phases[-1], None)
        if args.burst:
            phases.append(run_burst(stack, pages, args.burst))
            report(phases[-1], None)
        if args.batch:
            batch = run_batch(stack, args.batch, workdir)
    finally:
        # The consumer and serve first: they finish their work against the servers.
        for group in ((consumer, serve), (server, s3_server)):
            for process in group:
                process.terminate()
            for process in group:
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    process.kill()
    print("\n\n######## summary ########")
    if batch:
        print(
            f"batch path (newsflow run, {batch['objects']} objects): "
            f"{batch['objects_per_second']:.1f} objects/s, {batch['cpu_ms_per_object']:.0f} CPU "
            "ms per object"
        )
    for phase in phases:
        report(phase, batch["objects_per_second"] if batch else None)


if __name__ == "__main__":
    main()

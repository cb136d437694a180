"""What Prefect itself costs per unit of work in two designs of the event path, with
trivial work, against a real `prefect server`:

- a flow run per micro-batch, called in a long-lived process (what `newsflow listen`
  does): one flow with five chained task runs, as ingest has per batch of objects;
- a Prefect background task per object: `Task.delay()` from a producer, run by
  `prefect.task_worker.serve` in another process.

    python -m benchmarks.event_candidates --n 20

It prints the CPU seconds per unit of the calling process, of the task worker and of the
server (with its children), and the wall time per unit. The third design, a flow run
process per event started by a deployment trigger, was measured in issue 14 at about
6.5 CPU seconds an event.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from prefect import flow, task
from prefect.cache_policies import NO_CACHE


@task(cache_policy=NO_CACHE)
def stage(keys: list[str]) -> list[str]:
    return keys


@task(cache_policy=NO_CACHE, persist_result=True)
def work(key: str) -> str:
    return key


@flow(name="candidate-micro-batch")
def micro_batch(keys: list[str]) -> int:
    batch = stage.submit(keys)
    for _ in range(4):
        batch = stage.submit(batch)
    return len(batch.result())


def _cpu(process: psutil.Process) -> float:
    total = 0.0
    for member in [process, *process.children(recursive=True)]:
        times = member.cpu_times()
        total += times.user + times.system
    return total


def per_unit(n: int, server: psutil.Process, run: Any, worker: psutil.Process | None) -> dict:
    run(0)  # warm: imports, clients, first registrations
    server_before, worker_before = _cpu(server), _cpu(worker) if worker else 0.0
    cpu_before, wall_before = time.process_time(), time.monotonic()
    run(n)
    figures = {
        "caller_cpu": (time.process_time() - cpu_before) / n,
        "server_cpu": (_cpu(server) - server_before) / n,
        "wall": (time.monotonic() - wall_before) / n,
    }
    if worker:
        figures["task_worker_cpu"] = (_cpu(worker) - worker_before) / n
    return figures


def measure_designs(n: int, server: psutil.Process, worker: psutil.Process) -> dict:
    def flow_runs(count: int) -> None:
        for i in range(max(count, 1)):
            micro_batch([f"key-{i}"])

    def background_tasks(count: int) -> None:
        futures = [work.delay(f"key-{i}") for i in range(max(count, 1))]
        for future in futures:
            future.result(timeout=300)

    return {
        "flow run per micro-batch (5 task runs)": per_unit(n, server, flow_runs, None),
        "background task per object": per_unit(n, server, background_tasks, worker),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20, help="units of work per design")
    parser.add_argument("--role", choices=["task-worker", "measure"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "task-worker":
        from prefect.task_worker import serve

        serve(work, limit=4)
        return
    if args.role == "measure":
        worker = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.event_candidates", "--role", "task-worker"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(5)  # the worker subscribes
            server = psutil.Process(int(os.environ["CANDIDATES_SERVER_PID"]))
            results = measure_designs(args.n, server, psutil.Process(worker.pid))
        finally:
            worker.terminate()
            worker.wait(30)
        print(f"\n{'design':<42}{'caller':>8}{'worker':>8}{'server':>8}{'total':>8}{'wall':>8}")
        for name, figures in results.items():
            worker_cpu = figures.get("task_worker_cpu", 0.0)
            total = figures["caller_cpu"] + worker_cpu + figures["server_cpu"]
            print(
                f"{name:<42}{figures['caller_cpu']:>8.2f}{worker_cpu:>8.2f}"
                f"{figures['server_cpu']:>8.2f}{total:>8.2f}{figures['wall']:>8.2f}"
            )
        print("CPU seconds and wall seconds per unit of work")
        return

    from benchmarks.throughput import start_prefect_server

    workdir = Path(tempfile.mkdtemp(prefix="newsflow-candidates-"))
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    server, api_url = start_prefect_server(workdir, env)
    # Prefect reads its settings at import: the measuring process gets them from its start.
    env.update(
        PREFECT_API_URL=api_url,
        PREFECT_HOME=str(workdir / "client-home"),
        PREFECT_LOCAL_STORAGE_PATH=str(workdir / "results"),  # background task results
        CANDIDATES_SERVER_PID=str(server.pid),
    )
    try:
        measuring = ["--role", "measure", "--n", str(args.n)]
        subprocess.run(
            [sys.executable, "-m", "benchmarks.event_candidates", *measuring],
            env=env,
            check=True,
        )
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()

"""Throughput of `newsflow run` against a naive loop, on N generated objects in local S3.

    python -m benchmarks.throughput --n 1000 --n 10000

For each N: uploads N varied copies of the shared corpus pages to a moto S3 server on
127.0.0.1, then runs, each in its own process, on the same objects:

- `newsflow run` on a fresh Prefect home with no API URL (first-time, ephemeral server);
- `newsflow run` against a running `prefect server` (steady state);
- the naive baseline (`benchmarks/baseline.py`).

It prints articles/s, the ratio, CPU per article, peak memory (RSS of the flow process;
PSS of it plus its worker processes, which share pages), wall time per stage and the
share of the flow run's wall time in which no task body was running (orchestration).
The lake's own costs (Delta commits, opening tables, the ledger) are in
`benchmarks/lake.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain, count
from pathlib import Path
from typing import Any

import httpx
import psutil

CORPUS = Path(__file__).resolve().parents[1] / ".." / "shared" / "corpus" / "articles" / "html"
SOURCES = ["harbour-times", "el-diario", "wire", "le-quotidien", "daily-post", "morning-star"]
_PARAGRAPH = re.compile(r"(<p\b[^>]*>)(.*?)(</p>)", re.S | re.I)
_POLL_SECONDS = 0.2
_PSS_EVERY = 25


# --- input -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PageTemplate:
    """A page cut around its paragraphs' bodies, so that varying it is a shuffle and a
    join: the regex over a whole page took ~30 ms, which at 30 uploads/s took a core from
    the system the event benchmark measures."""

    between: list[str]  # what lies before, between and after the bodies: one more of them
    bodies: list[str]

    @classmethod
    def of(cls, html: str) -> PageTemplate:
        between, bodies, end = [], [], 0
        for match in _PARAGRAPH.finditer(html):
            between.append(html[end : match.start(2)])
            bodies.append(match.group(2))
            end = match.end(2)
        between.append(html[end:])
        return cls(between, bodies)


def corpus_templates() -> list[PageTemplate]:
    return [
        PageTemplate.of(path.read_text(encoding="utf-8")) for path in sorted(CORPUS.glob("*.html"))
    ]


def varied_page(page: PageTemplate, rng: random.Random, number: int) -> str:
    """The page with its paragraphs shuffled and a unique sentence added: every object has
    its own text (no two content hashes alike), as a real day of news would."""
    bodies = list(page.bodies)
    rng.shuffle(bodies)
    varied = "".join(chain.from_iterable(zip(page.between, [*bodies, ""], strict=True)))
    marker = f"<p>Dispatch {number} filed by correspondent {rng.randrange(10**6)}.</p>"
    return varied.replace("</p>", f"</p>{marker}", 1) if bodies else varied + marker


def generated_objects(n: int, seed: int = 0) -> Iterator[tuple[str, bytes]]:
    pages = corpus_templates()
    rng = random.Random(seed)
    for number in range(n):
        source = SOURCES[number % len(SOURCES)]
        page = varied_page(pages[number % len(pages)], rng, number)
        yield f"in/{source}/{number // 1000:03d}/{number:06d}.html", page.encode()


def upload(client: Any, bucket: str, n: int) -> None:
    client.create_bucket(Bucket=bucket)
    with ThreadPoolExecutor(16) as pool:
        list(
            pool.map(
                lambda item: client.put_object(Bucket=bucket, Key=item[0], Body=item[1]),
                generated_objects(n),
            )
        )


# --- processes ---------------------------------------------------------------------------


@dataclass
class Measured:
    """One benchmarked process: its wall time, CPU time (with its descendants, and its own
    alone), the CPU that other processes on the machine used meanwhile (in cores), its
    peak RSS, the peak PSS of it and its pool's processes, and its JSON output."""

    seconds: float
    cpu_seconds: float
    main_cpu_seconds: float
    other_cores: float
    peak_main_mib: float
    peak_tree_pss_mib: float
    output: dict[str, Any] = field(default_factory=dict)


def _watch(process: psutil.Process, peaks: dict[str, float], stop: threading.Event) -> None:
    """Peak RSS of the process; peak PSS of it and its descendants other than a Prefect
    server (PSS, not RSS: forked workers share their parent's pages); and the CPU time of
    the process and of every descendant, as last seen (within one poll of its end). The
    stage workers are forked by a server process, not by the flow process, so
    `RUSAGE_CHILDREN` would never see their CPU. PSS is read every 25th poll (5 s): it
    costs ~15 ms per GB of process, which polled as often as RSS would take a tenth of
    a core from the run it measures."""
    cpu: dict[int, float] = {}
    for poll in count():
        if stop.is_set():
            return
        read_pss = poll % _PSS_EVERY == 0
        try:
            main = process.memory_info().rss
            tree = process.memory_full_info().pss if read_pss else 0
            own = process.cpu_times()
            cpu[process.pid] = peaks["main_cpu"] = own.user + own.system
            for child in process.children(recursive=True):
                try:
                    times = child.cpu_times()
                    cpu[child.pid] = times.user + times.system
                    if read_pss and "uvicorn" not in " ".join(child.cmdline()):
                        tree += child.memory_full_info().pss
                except psutil.Error:
                    continue
        except psutil.Error:
            return
        peaks["main"] = max(peaks["main"], main)
        peaks["tree"] = max(peaks["tree"], tree)
        peaks["tree_cpu"] = sum(cpu.values())
        stop.wait(_POLL_SECONDS)


def _busy_cpu_seconds() -> float:
    times = psutil.cpu_times()
    return float(times.user + times.nice + times.system + times.irq + times.softirq)


def measure(command: list[str], env: dict[str, str], log: Path) -> Measured:
    started = time.monotonic()
    machine_before = _busy_cpu_seconds()
    with log.open("wb") as stderr:
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=stderr)
        peaks = {"main": 0.0, "tree": 0.0, "main_cpu": 0.0, "tree_cpu": 0.0}
        stop = threading.Event()
        watcher = threading.Thread(
            target=_watch, args=(psutil.Process(process.pid), peaks, stop), daemon=True
        )
        watcher.start()
        stdout, _ = process.communicate()
        stop.set()
        watcher.join()
    seconds = time.monotonic() - started
    cpu = peaks["tree_cpu"]
    other = (_busy_cpu_seconds() - machine_before - cpu) / seconds
    if process.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed ({process.returncode}); see {log}")
    text = stdout.decode()
    output = json.loads(text[text.index("{") :])
    mib = 1024 * 1024
    return Measured(
        seconds, cpu, peaks["main_cpu"], other, peaks["main"] / mib, peaks["tree"] / mib, output
    )


def start_prefect_server(home: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    log = (home / "server.log").open("wb")
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
    server = subprocess.Popen(
        [*command, "--port", str(port)],
        env={**env, "PREFECT_HOME": str(home), "PREFECT_API_URL": ""},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return server, url
        except httpx.HTTPError:
            time.sleep(0.5)
    server.kill()
    raise RuntimeError(f"prefect server did not start; see {home / 'server.log'}")


def bench_env() -> dict[str, str]:
    """This environment with fake credentials for the local S3 server and no analytics:
    no profile or real account is read, nothing leaves the machine."""
    return {
        **os.environ,
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


def start_s3_server(
    env: dict[str, str], module: str = "moto.server"
) -> tuple[subprocess.Popen[bytes], str]:
    """moto's server on a free port of 127.0.0.1 (`module`: or the events benchmark's)."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", module, "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(endpoint, timeout=2)
            return server, endpoint
        except httpx.HTTPError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("moto server did not start")


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- Prefect's own record of the run -----------------------------------------------------


def _time(value: str | None) -> float:
    return datetime.fromisoformat(value).timestamp() if value else 0.0


def task_run_breakdown(api_url: str) -> dict[str, Any]:
    """Per-stage task-run seconds of the newest flow run, and the share of its wall time in
    which no task body was running: what orchestration (and the flow's own code) cost."""
    with httpx.Client(base_url=api_url, timeout=30) as api:
        flow_run = api.post(
            "/flow_runs/filter", json={"sort": "START_TIME_DESC", "limit": 1}
        ).json()[0]
        runs: list[dict[str, Any]] = []
        while True:
            page = api.post(
                "/task_runs/filter",
                json={
                    "flow_runs": {"id": {"any_": [flow_run["id"]]}},
                    "limit": 200,
                    "offset": len(runs),
                },
            ).json()
            runs += page
            if len(page) < 200:
                break
    start, end = _time(flow_run["start_time"]), _time(flow_run["end_time"])
    per_stage: dict[str, float] = defaultdict(float)
    intervals = []
    for run in runs:
        if run["start_time"] and run["end_time"]:
            begin, finish = _time(run["start_time"]), _time(run["end_time"])
            per_stage[run["name"].rsplit("-", 1)[0]] += finish - begin
            intervals.append((begin, finish))
    busy, cursor = 0.0, start
    for begin, finish in sorted(intervals):
        begin = max(begin, cursor)
        if finish > begin:
            busy += finish - begin
            cursor = finish
    wall = end - start
    return {
        "flow_run_seconds": wall,
        "task_runs": len(runs),
        "stage_seconds": dict(per_stage),
        "orchestration_share": 1 - busy / wall if wall else 0.0,
    }


def benchmark(n: int, env: dict[str, str], api_url: str, workdir: Path, client: Any) -> dict:
    bucket = f"bench-{n}-{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    upload(client, bucket, n)
    print(f"N={n}: uploaded in {time.monotonic() - started:.0f} s", flush=True)
    newsflow = str(Path(sys.executable).with_name("newsflow"))
    run = [newsflow, "run", "--input", f"s3://{bucket}/in", "--json"]
    results: dict[str, Any] = {"n": n}

    home = workdir / f"prefect-home-{bucket}"
    home.mkdir()
    ephemeral_env = {**env, "PREFECT_HOME": str(home)}
    ephemeral_env.pop("PREFECT_API_URL", None)
    results["first_time"] = measure(
        [*run, "--output", str(workdir / f"lake-ephemeral-{bucket}")],
        ephemeral_env,
        workdir / f"ephemeral-{bucket}.log",
    )
    print(f"N={n}: first-time run {results['first_time'].seconds:.0f} s", flush=True)
    results["steady"] = measure(
        [*run, "--output", str(workdir / f"lake-steady-{bucket}")],
        {**env, "PREFECT_API_URL": api_url},
        workdir / f"steady-{bucket}.log",
    )
    results["prefect"] = task_run_breakdown(api_url)
    print(f"N={n}: steady-state run {results['steady'].seconds:.0f} s", flush=True)
    baseline = [sys.executable, "-m", "benchmarks.baseline", "--input", f"s3://{bucket}/in"]
    results["baseline"] = measure(
        [*baseline, "--output", str(workdir / f"baseline-{bucket}.parquet")],
        env,
        workdir / f"baseline-{bucket}.log",
    )
    print(f"N={n}: baseline {results['baseline'].seconds:.0f} s", flush=True)
    client_keys = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    for page in client_keys:
        client.delete_objects(
            Bucket=bucket,
            Delete={"Objects": [{"Key": item["Key"]} for item in page.get("Contents", [])]},
        )
    return results


def print_report(results: dict[str, Any]) -> None:
    n = results["n"]
    base = results["baseline"]
    base_rate = base.output["articles"] / base.seconds
    print(f"\n=== N = {n} ===")
    print(
        f"{'run':<22}{'articles':>9}{'wall s':>9}{'art/s':>8}{'vs base':>9}"
        f"{'CPU ms/art':>11}{'(main)':>8}{'RSS main':>10}{'PSS all':>10}{'others':>8}"
    )
    rows = [("baseline (1 thread)", base, base.output["articles"])]
    for label, name in (("newsflow first-time", "first_time"), ("newsflow steady", "steady")):
        measured = results[name]
        rows.append((label, measured, measured.output["articles"]))
    for label, measured, articles in rows:
        rate = articles / measured.seconds
        print(
            f"{label:<22}{articles:>9}{measured.seconds:>9.1f}{rate:>8.1f}"
            f"{rate / base_rate:>8.2f}x{measured.cpu_seconds / articles * 1000:>11.0f}"
            f"{measured.main_cpu_seconds / articles * 1000:>8.0f}"
            f"{measured.peak_main_mib:>9.0f}M{measured.peak_tree_pss_mib:>9.0f}M"
            f"{measured.other_cores:>7.1f}c"
        )
    print(
        "CPU: the process and all its descendants; (main): the process alone. PSS all: "
        "the process and its workers, shared pages counted once. "
        "others: cores busy with other processes on the machine meanwhile"
    )
    first = results["first_time"]
    startup = first.seconds - first.output["seconds"]
    print(
        f"first-time: {startup:.1f} s of {first.seconds:.1f} s outside the flow body "
        f"(Prefect start-up, imports, shutdown) = {startup / first.seconds:.0%}"
    )
    steady = results["steady"]
    print(
        f"steady: {steady.seconds - steady.output['seconds']:.1f} s outside the flow body; "
        f"flow body {steady.output['seconds']:.1f} s"
    )
    prefect = results["prefect"]
    print(
        f"orchestration: {prefect['orchestration_share']:.1%} of the flow run's "
        f"{prefect['flow_run_seconds']:.1f} s had no task body running "
        f"({prefect['task_runs']} task runs)"
    )
    print("task-run seconds per stage (stages overlap when pipelined):")
    for stage, seconds in sorted(prefect["stage_seconds"].items(), key=lambda kv: -kv[1]):
        print(f"  {stage:<10}{seconds:>8.1f} s  {seconds / n * 1000:>7.1f} ms/object")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, action="append", help="objects (repeatable)")
    parser.add_argument("--workdir", type=Path, help="keep lakes and logs here")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="newsflow-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    env = bench_env()
    s3_server, endpoint = start_s3_server(env)
    env["AWS_ENDPOINT_URL"] = endpoint
    os.environ.update(env)
    import boto3

    server_home = workdir / "prefect-server-home"
    server_home.mkdir(exist_ok=True)
    prefect_server, api_url = start_prefect_server(server_home, env)
    print(f"workdir {workdir}; S3 {endpoint}; Prefect API {api_url}", flush=True)
    try:
        reports = [
            benchmark(n, env, api_url, workdir, boto3.client("s3")) for n in args.n or [1000]
        ]
    finally:
        prefect_server.terminate()
        s3_server.terminate()
        prefect_server.wait(30)
        s3_server.wait(30)
    for report in reports:
        print_report(report)


if __name__ == "__main__":
    main()

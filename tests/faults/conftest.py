"""Fixtures of the fault suite: a fork server of killable ingest runs, test corpora."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

RUN_ENV = {"NEWSFLOW_WORKERS": "1"}

# `NEWSFLOW_FAULT_SOAK=N` (a soak run) multiplies the random-kill rounds and the fuzzed
# input by N and adds the slow mid-run S3 outage test.
SOAK_ENABLED = bool(os.environ.get("NEWSFLOW_FAULT_SOAK"))
SOAK = max(1, int(os.environ.get("NEWSFLOW_FAULT_SOAK") or "1"))


@dataclass(slots=True)
class RunResult:
    pid: int
    returncode: int
    maxrss_kib: int
    cpu_seconds: float  # user + system time of the run's process and its children
    seconds: float  # wall time from the fork to the end of the process
    log: Path

    @property
    def killed(self) -> bool:
        return self.returncode == -9

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass(slots=True)
class Run:
    """One `newsflow run` (or `newsflow maintain` when `input` is None) to start in a
    forked child."""

    input: str | None
    output: str
    env: dict[str, str] = field(default_factory=dict)
    fault: dict[str, Any] | None = None
    extra: list[str] = field(default_factory=list)

    @property
    def argv(self) -> list[str]:
        if self.input is None:
            return ["maintain", "--output", self.output, *self.extra]
        return ["run", "--input", self.input, "--output", self.output, *self.extra]


def maintain(output: str, env: dict[str, str] | None = None, **kwargs: Any) -> Run:
    """A `newsflow maintain` of the lake at `output`."""
    return Run(None, output, env or {}, **kwargs)


class Driver:
    """Client of tests/faults/driver.py: starts runs, kills them, collects results."""

    def __init__(self, process: subprocess.Popen[str], logs: Path) -> None:
        self.process = process
        self.logs = logs
        self.count = 0
        self._pending: list[Path] = []

    def _send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def _receive(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"driver exited: {self.process.poll()}")
        return json.loads(line)

    def start(self, *runs: Run) -> list[int]:
        """Fork the runs at once; returns their pids (the runs go on in the background)."""
        messages = []
        self._pending = []
        for run in runs:
            self.count += 1
            log = self.logs / f"run-{self.count:03d}.log"
            self._pending.append(log)
            messages.append(
                {
                    "argv": run.argv,
                    # A Prefect home per run: runs sharing one wait on each other's
                    # start (seconds each, measured), which would serialise them.
                    "env": {**RUN_ENV, "PREFECT_HOME": str(log.with_suffix("")), **run.env},
                    "fault": run.fault,
                    "log": str(log),
                }
            )
        self._send({"runs": messages})
        return list(self._receive()["started"])

    def wait(self) -> list[RunResult]:
        results = self._receive()["results"]
        return [
            RunResult(
                r["pid"], r["returncode"], r["maxrss_kib"], r["cpu_seconds"], r["seconds"], log
            )
            for r, log in zip(results, self._pending, strict=True)
        ]

    def run(self, *runs: Run) -> list[RunResult]:
        self.start(*runs)
        return self.wait()


@pytest.fixture(scope="session")
def driver(
    prefect_server: str, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Driver]:
    """One warmed-up fork server for the session, pointed at the real Prefect server."""
    logs = tmp_path_factory.mktemp("fault-runs")
    environment = {
        **os.environ,
        "PREFECT_API_URL": prefect_server,
        "PREFECT_HOME": str(tmp_path_factory.mktemp("fault-prefect-home")),
        "AWS_ENDPOINT_URL": s3_endpoint,
        "PYTHONPATH": str(ROOT),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.faults.driver"],
        cwd=ROOT,
        env=environment,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=(logs / "driver.log").open("w"),
        text=True,
    )
    client = Driver(process, logs)
    started = time.monotonic()
    ready = client._receive()
    assert "ready" in ready, ready
    print(f"fault driver warm in {time.monotonic() - started:.1f}s")
    try:
        yield client
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def upload(s3: Any, bucket: str, objects: dict[str, bytes]) -> dict[str, str]:
    """Put the objects; returns key -> ETag of the version now current."""
    etags = {}
    for key, body in objects.items():
        etags[key] = s3.put_object(Bucket=bucket, Key=key, Body=body)["ETag"].strip('"')
    return etags

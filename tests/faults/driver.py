"""Test-only driver: a fork server that runs `newsflow run` in child processes it can kill.

Why a fork server: importing Prefect and the stage modules costs seconds per
process, and the fault suite starts dozens of runs. The server imports and warms them once
(no threads exist yet, so forking is safe), then forks one child per run. Each child is a
real ingest process talking to the real Prefect server and S3 endpoint; a fault spec makes
it SIGKILL itself at a precise point, or the test SIGKILLs it from outside at a random time.

Protocol (JSON lines): the test writes `{"runs": [{"argv": [...], "env": {...},
"fault": {...} | null, "log": PATH}, ...]}` to stdin; the server forks every run at once,
answers `{"started": [pid, ...]}`, waits for them all, then answers
`{"results": [{"pid": ..., "returncode": ..., "maxrss_kib": ..., "cpu_seconds": ...,
"seconds": ...}, ...]}` (returncode is -9 for a SIGKILL; seconds is wall time from the fork).

A fault is `{"target": "pkg.module.Class.function", "event": "call" | "return" | "line",
"contains": "text on the line" (line only), "nth": N}`: the child kills itself with
SIGKILL the Nth time the event happens in that function, on any thread. It is installed
with `sys.settrace`, so the code under test runs unmodified. `{"target": "new-file",
"dir": PATH, "nth": N}` kills it instead as soon as the Nth Parquet file that was not
there when it started appears under PATH: inside a Delta write, between its data files
and its commit (delta-rs writes both in one call into Rust, where no trace reaches).
"""

from __future__ import annotations

import importlib
import json
import linecache
import os
import signal
import sys
import threading
import time
import traceback
from types import CodeType, FrameType
from typing import Any


def warm_up() -> None:
    """Import everything a run needs and load the models, before any fork.

    deltalake is imported but never used here: a process forked after deltalake has
    started its runtime panics (../shared/DELTA-NOTES.md), so only the children use it.
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    import newsflow.flows.cli
    import newsflow.flows.ingest  # noqa: F401
    from newsflow.tasks.stages import extract, language

    extract.warm_up()
    language.warm_up()


def resolve_code(target: str) -> CodeType:
    """The code object of `pkg.module.Class.function` (or a Prefect task's function)."""
    parts = target.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for name in parts[split:]:
            obj = getattr(obj, name)
        break
    else:
        raise ValueError(f"cannot import {target}")
    obj = getattr(obj, "fn", obj)  # a Prefect Task wraps the function
    obj = getattr(obj, "__func__", obj)
    return obj.__code__


def _parquet_files(root: str) -> set[str]:
    found, folders = set(), [root]
    while folders:
        with os.scandir(folders.pop()) as entries:
            for entry in entries:
                if entry.is_dir():
                    folders.append(entry.path)
                elif entry.name.endswith(".parquet"):
                    found.add(entry.path)
    return found


def kill_at_new_file(root: str, nth: int) -> None:
    """SIGKILL this process as soon as `nth` Parquet files appeared under `root`."""
    before = _parquet_files(root)

    def watch() -> None:
        while len(_parquet_files(root) - before) < nth:
            time.sleep(0.0005)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True).start()


def install_fault(fault: dict[str, Any]) -> None:
    """SIGKILL this process at the Nth `event` in the target function."""
    if fault["target"] == "new-file":
        kill_at_new_file(fault["dir"], int(fault.get("nth", 1)))
        return
    code = resolve_code(fault["target"])
    event_wanted: str = fault.get("event", "call")
    contains: str = fault.get("contains", "")
    nth: int = int(fault.get("nth", 1))
    lock = threading.Lock()
    seen = 0

    def hit() -> None:
        nonlocal seen
        with lock:
            seen += 1
            if seen == nth:
                os.kill(os.getpid(), signal.SIGKILL)

    def local(frame: FrameType, event: str, arg: object) -> Any:
        if event == event_wanted == "return" or (
            event == event_wanted == "line"
            and contains in linecache.getline(code.co_filename, frame.f_lineno)
        ):
            hit()
        return local

    def tracer(frame: FrameType, event: str, arg: object) -> Any:
        if frame.f_code is not code:
            return None
        if event_wanted == "call":
            hit()
            return None
        return local

    threading.settrace(tracer)
    sys.settrace(tracer)


def run_child(run: dict[str, Any]) -> int:
    """Body of a forked child: redirect output, apply env and fault, run the CLI."""
    log = os.open(run["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.environ.update(run.get("env", {}))
    try:
        from newsflow.flows.cli import main

        if run.get("fault"):
            install_fault(run["fault"])
        code = main(run["argv"])
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.settrace(None)
    threading.settrace(None)  # type: ignore[arg-type]
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def serve() -> None:
    warm_up()
    protocol = sys.stdout
    print(json.dumps({"ready": os.getpid()}), file=protocol, flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        pids = []
        started = time.monotonic()
        for run in command["runs"]:
            pid = os.fork()
            if pid == 0:
                code = run_child(run)
                # Exit through the interpreter so Prefect's atexit handlers flush its logs.
                sys.exit(code)
            pids.append(pid)
        print(json.dumps({"started": pids}), file=protocol, flush=True)
        ended = {}
        while len(ended) < len(pids):
            pid, status, usage = os.wait4(-1, 0)
            ended[pid] = {
                "pid": pid,
                "returncode": os.waitstatus_to_exitcode(status),
                "maxrss_kib": usage.ru_maxrss,
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
                "seconds": time.monotonic() - started,
            }
        results = [ended[pid] for pid in pids]
        print(json.dumps({"results": results}), file=protocol, flush=True)


if __name__ == "__main__":
    serve()

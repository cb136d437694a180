"""The stage workers are forked from a process that has imported `newsflow.tasks.stages.workers`: that is
only safe if the process then has no thread but its own (a forked child gets none of the
others, and a lock one of them held stays locked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

_THREADS_AFTER_PRELOAD = """
import os
import newsflow.tasks.stages.workers
from newsflow.tasks.stages import language

language.detect_language("Ceci est une phrase en français, assez longue pour lingua.")
print(len(os.listdir("/proc/self/task")))
"""


def test_the_workers_server_has_no_other_thread_when_it_forks() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _THREADS_AFTER_PRELOAD],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(result.stdout) == 1

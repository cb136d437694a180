"""The stage workers are forked from a process that has loaded their models: that is only
safe if loading them starts no thread (a forked child gets none of its parent's threads,
and any lock one of them held stays locked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_COUNT_THREADS = """
import os
from tasks import clean, enrich, extract, language

def threads():
    return len(os.listdir("/proc/self/task"))

imported = threads()
extract.warm_up()
language.warm_up()
language.detect_language("Ceci est une phrase en français, assez longue pour lingua.")
print(imported, threads())
"""


def test_loading_the_models_before_the_fork_starts_no_thread() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _COUNT_THREADS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    imported, warmed = map(int, result.stdout.split())
    assert warmed == imported

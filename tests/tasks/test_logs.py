"""Third-party loggers: the parsers' messages about a document are not shown unless asked
for, in the command line's process and in the stage workers'."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from newsflow.tasks.logs import DOCUMENT_LOGGERS, NETWORK_LOGGERS, quiet_library_loggers
from trafilatura.utils import load_html

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def restore_levels() -> Iterator[None]:
    names = DOCUMENT_LOGGERS + NETWORK_LOGGERS
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def trafilatura_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        load_html("<p>a fragment, which trafilatura logs as not valid HTML</p>")
    return [r.getMessage() for r in caplog.records if r.name.startswith("trafilatura")]


def test_a_parsers_error_about_a_document_is_quiet_unless_verbose(
    caplog: pytest.LogCaptureFixture,
) -> None:
    quiet_library_loggers(verbose=True)
    assert any("parsed tree length" in message for message in trafilatura_records(caplog))
    quiet_library_loggers(verbose=False)
    assert trafilatura_records(caplog) == []
    assert logging.getLogger("botocore").getEffectiveLevel() == logging.WARNING


_WORKER_LEVELS = """
import logging
import newsflow.tasks.stages.workers
print(logging.getLogger("trafilatura").level, logging.getLogger("urllib3").level)
"""


@pytest.mark.parametrize(("verbose", "levels"), [("false", "50 30"), ("true", "20 20")])
def test_the_stage_workers_preload_quiets_them_too(verbose: str, levels: str) -> None:
    """What the workers' server process runs before it forks them (tasks/batch.py)."""
    result = subprocess.run(
        [sys.executable, "-c", _WORKER_LEVELS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "NEWSFLOW_VERBOSE": verbose},
    )
    assert result.stdout.split("\n")[-2] == levels

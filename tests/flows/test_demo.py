"""`newsflow demo`, the README's first command, as a newcomer runs it: a process of its
own that starts its own S3 server (the flow's behaviour on these samples is checked in
test_ingest.py; this checks the command around it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from newsflow.flows.demo import find_seed_article, sample_objects
from newsflow.tasks.lake import Lake
from newsflow.tasks.settings import Settings

from tests.conftest import read_table

REPOSITORY = Path(__file__).resolve().parents[2]


def test_the_demo_writes_every_sample_once_and_its_second_run_finds_nothing_new(
    prefect_server: str, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server,  # the session's server: no temporary one to start
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
    }
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.pop(name, None)  # the demo must need none of them
    done = subprocess.run(
        [sys.executable, "-m", "newsflow.flows.cli", "demo", "--output", str(lake)],
        cwd=REPOSITORY,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    objects = sample_objects(find_seed_article())
    opened = Lake.open(str(lake), Settings())
    articles = read_table(opened, "articles", ["object_key"])
    rejects = read_table(opened, "rejects", ["object_key"])
    assert {row["object_key"] for row in articles + rejects} == set(objects)
    assert {row["object_key"] for row in rejects} >= {k for k in objects if "/broken/" in k}
    assert f"objects {len(objects)} listed, {len(objects)} new" in done.stdout
    assert "second run: 0 new objects, 0 articles written" in done.stdout
    assert "DuckDB, over the Delta tables" in done.stdout and "harbour-times" in done.stdout

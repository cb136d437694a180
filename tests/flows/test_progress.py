"""A run's progress: the Prefect progress artifact reaches 100 % after a run, and the bar
is drawn on a terminal and nowhere else."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from newsflow.flows.demo import sample_objects
from newsflow.flows.ingest import ingest_articles
from newsflow.flows.progress import Snapshot, terminal_bar
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from rich.console import Console

_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def rendered(buffer: io.StringIO) -> str:
    return _ESCAPES.sub("", buffer.getvalue())


def test_progress_is_of_the_new_objects_listed_so_far() -> None:
    half = Snapshot(listed=1000, new=400, written=200, articles=180, rejects=20, seconds=4.0)
    assert half.percent == 50.0
    assert half.describe() == (
        "200 of 400 new objects written (1,000 listed so far): 180 articles, 20 rejects"
    )
    assert Snapshot(listed=5, new=0, written=0, articles=0, rejects=0, seconds=0.1).percent == 100


def test_the_bar_is_drawn_on_a_terminal() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    with terminal_bar(console) as bar:
        assert bar is not None
        bar.show(
            0, Snapshot(listed=900, new=600, written=200, articles=150, rejects=50, seconds=10)
        )
        bar.show(1, Snapshot(listed=100, new=100, written=100, articles=90, rejects=10, seconds=5))
        bar.display.refresh()
    text = rendered(buffer)
    assert "300/700 objects" in text
    assert "16.0 articles/s" in text  # 240 articles in 15 s
    assert "60 rejects" in text
    assert "43%" in text


def test_no_bar_outside_a_terminal() -> None:
    buffer = io.StringIO()
    with terminal_bar(Console(file=buffer, force_terminal=False)) as bar:
        assert bar is None
    assert buffer.getvalue() == ""


@pytest.mark.usefixtures("prefect_api")
def test_a_run_publishes_a_progress_artifact_that_reaches_100_percent(
    s3, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = sample_objects(None)
    for key, body in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    monkeypatch.setenv("NEWSFLOW_BATCH_SIZE", "3")  # several batches, so several updates
    buffer = io.StringIO()
    with terminal_bar(Console(file=buffer, force_terminal=True, width=120)):
        state = ingest_articles(
            input_uri=f"s3://{bucket}/inbox", output_uri=str(tmp_path / "lake"), return_state=True
        )
    summary = state.result()
    assert summary["batches"] > 1
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
            )
        )
    [progress] = [a for a in artifacts if a.type == "progress"]
    assert progress.data == 100.0
    n = len(objects)
    assert progress.description == (
        f"{n} of {n} new objects written ({n} listed so far): "
        f"{summary['articles']} articles, {summary['rejects']} rejects"
    )
    assert f"{n}/{n} objects" in rendered(buffer)

"""Replacing an object's rows when its new version goes to another partition.

A batch's article commit replaces its objects' rows in the partitions the ledger names
for them (their done rows and every intent, brought up to date right before the commit)
and where the new rows go (`tasks/lake/lake.py`). These were the cases that left both
versions before the ledger recorded intents: a batch killed before its ledger commit,
and two runs that loaded the ledger before either committed.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from newsflow.tasks.lake import Lake
from newsflow.tasks.schema import Article
from newsflow.tasks.settings import Settings

from tests.faults.conftest import Driver, Run, upload
from tests.faults.corpus import story
from tests.faults.lake import assert_exactly_once, deltalake_rows, doubled

KEY = "in/moving/story.json"


def dated(version: int, day: int) -> bytes:
    return json.dumps(
        {"text": story(7, version), "published_at": f"2026-03-{day:02d}T10:00:00Z"}
    ).encode()


def article(etag: str, day: int) -> Article:
    return Article(
        object_key=KEY,
        object_etag=etag,
        source="moving",
        last_modified=datetime(2026, 3, day, tzinfo=UTC),
        content_type="text",
        raw="",
        published_at=datetime(2026, 3, day, 10, tzinfo=UTC),
        text=story(7, day),
    )


def test_a_new_date_after_a_crash_between_data_and_ledger(
    driver: Driver, s3: Any, bucket: str, tmp_path: Path
) -> None:
    """Version 1 (March 1) is committed to `articles`, the run dies before its ledger
    commit; version 2 (March 5) is uploaded and the next run completes."""
    output = tmp_path / "lake"
    upload(s3, bucket, {KEY: dated(1, 1)})
    kill = {
        "target": "newsflow.tasks.lake.lake.Lake.write_batch",
        "event": "line",
        "contains": "ledger_rows, done,",
    }
    [killed] = driver.run(Run(f"s3://{bucket}/in/", str(output), fault=kill))
    assert killed.killed
    expected = upload(s3, bucket, {KEY: dated(2, 5)})
    [result] = driver.run(Run(f"s3://{bucket}/in/", str(output)))
    assert result.returncode == 0, result.output[-3000:]
    assert_exactly_once(output, expected)


def test_two_runs_writing_two_versions_with_different_dates(tmp_path: Path) -> None:
    """Two runs loaded the ledger before either committed (as runs started together do),
    one processed version 1 (March 1), the other version 2 (March 5)."""
    lake = Lake.open(str(tmp_path / "lake"), Settings())
    first, second = lake.ledger(), lake.ledger()
    lake.write_batch("batch-a", [(KEY, "v1")], [article("v1", 1)], [], first, {})
    lake.write_batch("batch-b", [(KEY, "v2")], [article("v2", 5)], [], second, {})
    rows = deltalake_rows(lake.uri, "articles")
    assert not doubled(rows), rows

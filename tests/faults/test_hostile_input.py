"""Hostile input: ≥ 200 malformed objects, none may crash the run, escape the lake or blow
memory, and each must be accounted for as rows or as rejects with a reason."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from tests.faults.conftest import SOAK, Driver, Run, upload
from tests.faults.corpus import article_objects
from tests.faults.hostile import MAX_DECODED_BYTES, MAX_OBJECT_BYTES, hostile_objects
from tests.faults.lake import assert_exactly_once, reject_reasons

BATCH_SIZE = 50
# Data files (delta-rs names them) in Hive folders, and each table's log.
LAKE_FILE = re.compile(
    r"(articles/source=[a-z0-9]+(-[a-z0-9]+)*/date=\d{4}-\d{2}-\d{2}|rejects|ledger)/"
    r"part-\d{5}-[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}-c000\.zstd\.parquet"
    r"|(articles|rejects|ledger)/_delta_log/\d{20}\.json"
)
LIMITS = {
    "NEWSFLOW_MAX_OBJECT_BYTES": str(MAX_OBJECT_BYTES),
    "NEWSFLOW_MAX_DECODED_BYTES": str(MAX_DECODED_BYTES),
    "NEWSFLOW_BATCH_SIZE": str(BATCH_SIZE),
    "NEWSFLOW_BATCHES_IN_FLIGHT": "2",
}
# What one batch may hold at once: every object's bytes (at most the stored limit, or the
# decoded limit once inflated), its text as a Python str (≤ 4 bytes a character) and the
# cleaned copy, for each batch in flight. Plus 64 MiB for parsers' working memory.
MEMORY_BOUND_KIB = (
    2 * BATCH_SIZE * (MAX_OBJECT_BYTES + MAX_DECODED_BYTES + 2 * 4 * MAX_DECODED_BYTES) // 1024
    + 64 * 1024
)


def test_hostile_objects_are_all_accounted_for(
    driver: Driver, s3: Any, bucket: str, tmp_path: Path
) -> None:
    objects = hostile_objects("in/", seed=SOAK, scale=SOAK)
    assert len(objects) >= 200
    expected = upload(s3, bucket, objects)
    listed = {
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for o in page.get("Contents", [])
    }
    assert listed == set(objects), "the S3 server changed some hostile keys"

    upload(s3, bucket, article_objects("small/", 3))
    [baseline] = driver.run(Run(f"s3://{bucket}/small/", str(tmp_path / "small"), env=LIMITS))
    assert baseline.returncode == 0, baseline.output[-3000:]

    output = tmp_path / "root" / "lake"
    [result] = driver.run(Run(f"s3://{bucket}/in/", str(output), env=LIMITS))
    assert result.returncode == 0, result.output[-5000:]
    [again] = driver.run(Run(f"s3://{bucket}/in/", str(output), env=LIMITS, extra=["--json"]))
    assert again.returncode == 0 and '"objects_new": 0' in again.output

    view = assert_exactly_once(output, expected)
    reason_of = reject_reasons(output)
    assert all(reason.strip() for reason in reason_of.values()), "a reject without a reason"
    rows = {(key, line) for key, line, _, _ in view.articles}
    assert reason_of[("in/sizes/past-limit.txt", 0)].startswith("object of")
    assert ("in/sizes/at-limit.txt", 0) in rows, reason_of.get(("in/sizes/at-limit.txt", 0))
    assert ("in/sizes/decoded-at-limit.txt.gz", 0) in rows
    for bomb in ("decoded-past-limit.txt.gz", "bomb.html.gz", "bomb-text.txt.gz"):
        assert reason_of[(f"in/sizes/{bomb}", 0)].startswith("decompresses to more than")
    assert "nested" in reason_of[("in/nesting/list-33.json.gz", 0)]
    assert ("in/nesting/list-31.json.gz", 0) in rows  # 31 + the object itself = the limit
    print(Counter(reason.split(":")[0][:60] for reason in reason_of.values()).most_common())

    for path in tmp_path.rglob("*"):
        if path.is_file() and not path.is_relative_to(tmp_path / "small"):
            assert path.is_relative_to(output), f"written outside the output root: {path}"
            relative = path.relative_to(output).as_posix()
            assert LAKE_FILE.fullmatch(relative), f"unexpected file in the lake: {relative!r}"

    extra_kib = result.maxrss_kib - baseline.maxrss_kib
    print(
        f"peak RSS {result.maxrss_kib / 1024:.0f} MiB, {extra_kib / 1024:.0f} MiB over a "
        f"3-object run; bound {MEMORY_BOUND_KIB / 1024:.0f} MiB"
    )
    assert extra_kib <= MEMORY_BOUND_KIB

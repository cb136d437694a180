"""Converting a lake of the pre-Delta release in place.

`legacy-lake/` was written by that release (commit fe2ee9b) from three runs and a
compaction: objects re-uploaded with new text and a new date (their rows rewritten, the
old files retired), a JSONL object with a bad line, a reject, and two files merged by
compaction whose sources were retired. What its `_snapshot.parquet` names is the truth
the conversion must keep; the other files are what it must not bring back.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from newsflow.flows.cli import main
from newsflow.tasks.lake import ARTICLES, LEDGER, REJECTS, Lake
from newsflow.tasks.lake.migrate import NotMigratable, migrate_legacy
from newsflow.tasks.settings import Settings

LEGACY = Path(__file__).parent / "legacy-lake"
COLUMNS = ["object_key", "line_number", "object_etag", "text"]


def live_rows(lake: Path, dataset: str) -> list[tuple[Any, ...]]:
    """The rows of the files the old snapshot names (what its readers saw)."""
    snapshot = pq.read_table(lake / "_snapshot.parquet").to_pylist()
    files = [
        str(lake / dataset / row["path"].split(f"/{dataset}/", 1)[1])
        for row in snapshot
        if row["dataset"] == dataset
    ]
    columns = COLUMNS if dataset == ARTICLES else [*COLUMNS[:3], "reason"]
    table = ds.dataset(
        files, format="parquet", partitioning="hive", partition_base_dir=str(lake / dataset)
    ).to_table(columns=columns)
    return sorted(tuple(row.values()) for row in table.to_pylist())


def delta_rows(lake: Lake, dataset: str) -> list[tuple[Any, ...]]:
    columns = COLUMNS if dataset == ARTICLES else [*COLUMNS[:3], "reason"]
    rows = lake.table(dataset).to_pyarrow_table(columns=columns).to_pylist()
    return sorted(tuple(row.values()) for row in rows)


def all_rows_on_disk(lake: Path) -> list[tuple[Any, ...]]:
    table = ds.dataset(lake / ARTICLES, format="parquet", partitioning="hive").to_table(
        columns=COLUMNS
    )
    return sorted(tuple(row.values()) for row in table.to_pylist())


@pytest.fixture
def legacy(tmp_path: Path) -> Path:
    lake = tmp_path / "lake"
    shutil.copytree(LEGACY, lake)
    return lake


def test_the_fixture_holds_retired_rows_to_leave_behind(legacy: Path) -> None:
    live = live_rows(legacy, ARTICLES)
    on_disk = all_rows_on_disk(legacy)
    assert len(live) == 9 and len(set(live)) == 9
    # Compaction sources (copies of live rows) and replaced versions wait on disk.
    assert len(on_disk) - len(live) >= 7
    old_versions = [row for row in on_disk if row not in live]
    assert {row[0] for row in old_versions} == {"inbox/wire/a1.json", "inbox/news/b1.json"}


def test_migrate_keeps_exactly_the_live_rows(
    legacy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = {name: live_rows(legacy, name) for name in (ARTICLES, REJECTS)}
    assert main(["migrate", "--output", str(legacy)]) == 0
    assert "converted" in capsys.readouterr().out

    lake = Lake.open(str(legacy), Settings())
    for name in (ARTICLES, REJECTS):
        assert delta_rows(lake, name) == expected[name], name
    # Even a reader that globs the folders sees only live rows: the retired files are gone.
    assert all_rows_on_disk(legacy) == expected[ARTICLES]
    for name in ("_snapshot.parquet", "_ledger", "_retired", "_staging", "_compacting"):
        assert not (legacy / name).exists(), name

    ledger = {r["object_key"]: r for r in lake.table(LEDGER).to_pyarrow_table().to_pylist()}
    assert set(ledger) == {row[0] for rows in expected.values() for row in rows}
    a1 = ledger["inbox/wire/a1.json"]
    assert a1["partitions"] == ["source=wire/date=2026-11-01"] and a1["articles"] == 1
    assert ledger["inbox/news/b1.json"]["partitions"] == ["source=news/date=2026-11-03"]
    assert ledger["inbox/broken/bad.json"]["rejects"] == 1
    current = {(row[0], row[2]) for row in expected[ARTICLES]}
    assert all(
        (key, row["object_etag"]) in current for key, row in ledger.items() if row["articles"]
    )


def test_a_migrated_lake_takes_new_batches_and_replacements(legacy: Path) -> None:
    from tests.tasks.lake.test_lake import article, units, write

    migrate_legacy(str(legacy), Settings())
    lake = Lake.open(str(legacy), Settings())
    write(lake, "after", [article("inbox/news/b1.json", "v9", day=3), article("inbox/new/c.json")])
    counted = units(lake)
    assert counted[("inbox/news/b1.json", 0)] == 1 and counted[("inbox/new/c.json", 0)] == 1
    assert sum(counted.values()) == 10


def test_migrate_refuses_a_lake_a_crash_left_mid_change(legacy: Path) -> None:
    (legacy / "_staging" / "abc").mkdir(parents=True)
    (legacy / "_staging" / "abc" / "_PUBLISHING").write_bytes(b"")
    with pytest.raises(NotMigratable, match="unfinished change"):
        migrate_legacy(str(legacy), Settings())
    assert (legacy / "_snapshot.parquet").exists()


def test_migrate_on_s3(s3: Any, bucket: str, legacy: Path) -> None:
    for path in LEGACY.rglob("*"):
        if path.is_file():
            s3.put_object(
                Bucket=bucket, Key=f"lake/{path.relative_to(LEGACY)}", Body=path.read_bytes()
            )
    expected = live_rows(legacy, ARTICLES)
    migrate_legacy(f"s3://{bucket}/lake", Settings())
    lake = Lake.open(f"s3://{bucket}/lake", Settings())
    assert delta_rows(lake, ARTICLES) == expected
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="lake/")["Contents"]]
    assert not [
        k for k in keys if k.startswith(("lake/_snapshot", "lake/_ledger", "lake/_retired"))
    ]
    data_files = [
        k
        for k in keys
        if k.endswith(".parquet") and "_delta_log" not in k and k.startswith("lake/articles/")
    ]
    assert len(data_files) == len(lake.table(ARTICLES).file_uris())

"""The lake's write path on its own (no Prefect): replace by key, retries, concurrent
writers, hostile keys, on a local folder and on the S3 server."""

from __future__ import annotations

import multiprocessing
from collections import Counter
from datetime import UTC, datetime

import pyarrow as pa
import pytest
from newsflow.tasks.lake import ARTICLES, LEDGER, REJECTS, Lake, Ledger
from newsflow.tasks.schema import ARTICLE_SCHEMA, REJECT_SCHEMA, Article, Reject
from newsflow.tasks.settings import Settings

NOW = datetime(2026, 11, 20, 8, tzinfo=UTC)


def article(
    key: str, etag: str = "v1", day: int = 20, source: str = "wire", line: int | None = None
) -> Article:
    return Article(
        object_key=key,
        object_etag=etag,
        source=source,
        last_modified=NOW,
        content_type="text",
        raw="",
        line_number=line,
        text=f"{key} at {etag}",
        published_at=datetime(2026, 11, day, 8, tzinfo=UTC),
    )


def reject(key: str, etag: str = "v1") -> Reject:
    return Reject(object_key=key, object_etag=etag, stage="fetch", reason="empty object")


def write(lake: Lake, batch_id: str, articles: list[Article], rejects: list[Reject] = ()) -> None:
    objects = sorted({(a.object_key, a.object_etag) for a in [*articles, *rejects]})
    lake.write_batch(
        batch_id, objects, articles, list(rejects), lake.ledger(), {"operation": "test"}
    )


def units(
    lake: Lake, table: str = ARTICLES, version: int | None = None
) -> Counter[tuple[str, int]]:
    rows = lake.table(table, version).to_pyarrow_table(columns=["object_key", "line_number"])
    return Counter((r["object_key"], r["line_number"] or 0) for r in rows.to_pylist())


@pytest.fixture(params=["local", "s3"])
def lake(request: pytest.FixtureRequest, tmp_path, bucket: str) -> Lake:
    uri = str(tmp_path / "lake") if request.param == "local" else f"s3://{bucket}/lake"
    return Lake.open(uri, Settings())


def test_a_new_version_replaces_the_old_rows_in_one_commit(lake: Lake) -> None:
    write(lake, "b1", [article("in/a", day=20), article("in/b")], [reject("in/c")])
    before = lake.table(ARTICLES).version()
    # a moves to another partition, b becomes a reject, c becomes an article
    write(
        lake, "b2", [article("in/a", "v2", day=21), article("in/c", "v2")], [reject("in/b", "v2")]
    )
    after = lake.table(ARTICLES).version()
    assert after == before + 1, "the replacement took more than one articles commit"

    rows = lake.table(ARTICLES).to_pyarrow_table().to_pylist()
    assert sorted((r["object_key"], r["object_etag"], r["date"]) for r in rows) == [
        ("in/a", "v2", "2026-11-21"),
        ("in/c", "v2", "2026-11-20"),
    ]
    assert units(lake, REJECTS) == Counter({("in/b", 0): 1})
    # Every version of the table shows each unit at most once: never both, never twice.
    for version in range(after + 1):
        assert all(n == 1 for n in units(lake, ARTICLES, version).values()), version
    assert units(lake, ARTICLES, before) == Counter({("in/a", 0): 1, ("in/b", 0): 1})


def test_a_batch_written_again_lands_once(lake: Lake) -> None:
    """A retried write, or a rerun after a kill between the data and ledger commits (the
    ledger has not seen the batch): the second write replaces the first one's rows."""
    batch = [article("in/x.jsonl", line=1), article("in/x.jsonl", line=2), article("in/y")]
    objects = [("in/x.jsonl", "v1"), ("in/y", "v1")]
    empty = lake.ledger()
    lake.write_batch("b1", objects, batch, [reject("in/x.jsonl")], empty, {})
    # A rerun whose ledger never saw the batch (its ledger commit was killed) ...
    lake.write_batch("b1", objects, batch, [reject("in/x.jsonl")], Ledger(empty.current), {})
    # ... and a retry within the same run.
    lake.write_batch("b1", objects, batch, [reject("in/x.jsonl")], empty, {})
    assert units(lake) == Counter({("in/x.jsonl", 1): 1, ("in/x.jsonl", 2): 1, ("in/y", 0): 1})
    assert units(lake, REJECTS) == Counter({("in/x.jsonl", 0): 1})
    assert lake.ledger().contains([_fingerprint("in/y", "v1")]).tolist() == [True]


def _fingerprint(key: str, etag: str) -> bytes:
    from newsflow.tasks.schema import object_fingerprint

    return object_fingerprint(key, etag)


def test_hostile_keys_are_literals_not_sql(lake: Lake) -> None:
    keys = [
        "in/it's.html",
        "in/back\\slash'); DROP TABLE x; --.txt",
        "in/new\nline ü 中.json",
        "in/a' OR '1'='1",
    ]
    write(lake, "b1", [article(k) for k in keys])
    write(lake, "b2", [article(k, "v2") for k in keys[:2]])
    rows = lake.table(ARTICLES).to_pyarrow_table(columns=["object_key", "object_etag"]).to_pylist()
    assert sorted((r["object_key"], r["object_etag"]) for r in rows) == sorted(
        [(k, "v2") for k in keys[:2]] + [(k, "v1") for k in keys[2:]]
    )
    named = lake.ledger(keys[1:3]).previous(set(keys))
    assert sorted(named) == sorted(keys[1:3])


def test_a_read_gets_the_rows_asked_for_in_the_tables_own_types(lake: Lake) -> None:
    """`Lake.read` goes through delta-rs's query engine, which hands out view types."""
    write(lake, "b1", [article("in/a", day=20), article("in/b", day=25)], [reject("in/c")])
    rows = lake.read(ARTICLES, "\"date\" >= '2026-11-21'", ["object_key", "keywords", "date"])
    assert rows.to_pylist() == [{"object_key": "in/b", "keywords": [], "date": "2026-11-25"}]
    assert rows.schema == pa.schema([ARTICLE_SCHEMA.field(n) for n in rows.column_names])
    assert lake.read(REJECTS).schema == REJECT_SCHEMA
    assert lake.read(REJECTS, columns=["reason"]).column("reason").to_pylist() == ["empty object"]


def _writer(uri: str, batch: str, keys: list[str], source: str, rounds: int) -> None:
    lake = Lake.open(uri, Settings())
    for n in range(rounds):
        articles = [article(k, f"v{n}", source=source) for k in keys]
        lake.write_batch(batch, [(k, f"v{n}") for k in keys], articles, [], lake.ledger(), {})


def _run_together(uri: str, jobs: list[tuple[str, list[str], str, int]]) -> None:
    context = multiprocessing.get_context("spawn")  # deltalake must not be forked once used
    processes = [context.Process(target=_writer, args=(uri, *job)) for job in jobs]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=180)
    assert [p.exitcode for p in processes] == [0] * len(processes)


def test_writers_of_the_same_objects_together_leave_one_copy(lake: Lake) -> None:
    """No lease: three processes replace the same objects over and over at once; Delta's
    conflict check makes each stale commit start again from the new snapshot."""
    keys = [f"in/shared/{n}" for n in range(5)]
    _run_together(lake.uri, [(f"b{n}", keys, "wire", 4) for n in range(3)])
    assert units(lake) == Counter({(k, 0): 1 for k in keys})
    for version in range(lake.table(ARTICLES).version() + 1):
        assert all(n == 1 for n in units(lake, ARTICLES, version).values()), version


def test_writers_of_other_partitions_commit_side_by_side(lake: Lake) -> None:
    jobs = [(f"b{n}", [f"in/s{n}/{k}" for k in range(4)], f"s{n}", 3) for n in range(3)]
    _run_together(lake.uri, jobs)
    assert units(lake) == Counter({(f"in/s{n}/{k}", 0): 1 for n in range(3) for k in range(4)})
    ledger = lake.table(LEDGER).to_pyarrow_table(columns=["object_key", "done"]).to_pylist()
    assert Counter((r["object_key"], r["done"]) for r in ledger) == Counter(
        {(f"in/s{n}/{k}", done): 3 for n in range(3) for k in range(4) for done in (False, True)}
    )


def test_history_names_the_run_and_batch_of_each_commit(lake: Lake) -> None:
    lake.write_batch(
        "b1",
        [("in/a", "v1")],
        [article("in/a")],
        [],
        lake.ledger(),
        {"operation": "ingest", "run": "r1"},
    )
    [latest] = lake.history(ARTICLES, 1)
    assert (latest["newsflow.operation"], latest["newsflow.run"], latest["newsflow.batch"]) == (
        "ingest",
        "r1",
        "b1",
    )


def test_restore_puts_every_table_back_before_a_bad_reprocess(lake: Lake) -> None:
    write(lake, "b1", [article("in/a"), article("in/b")], [reject("in/c")])
    good = lake.table(ARTICLES).version()
    good_rows = sorted(r["text"] for r in lake.table(ARTICLES).to_pyarrow_table().to_pylist())
    ledger_rows = lake.table(LEDGER).to_pyarrow_table().num_rows
    # a "bad" reprocess: same versions, rows replaced, the reject becomes an article
    write(lake, "bad", [article("in/a", "v1", day=25), article("in/c")], [reject("in/b")])
    restored = lake.restore(good)
    assert set(restored) == {ARTICLES, REJECTS, LEDGER}
    assert (
        sorted(r["text"] for r in lake.table(ARTICLES).to_pyarrow_table().to_pylist()) == good_rows
    )
    assert units(lake, REJECTS) == Counter({("in/c", 0): 1})
    assert lake.table(LEDGER).to_pyarrow_table().num_rows == ledger_rows
    assert lake.restore(lake.table(ARTICLES).version()) == {}


def test_a_new_date_after_a_batch_killed_before_its_done_commit(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Version 1 (the 20th) reaches `articles`, the batch dies before its done commit;
    version 2 (the 25th) goes to another partition: the intent says where version 1 is."""
    import newsflow.tasks.lake.lake as lake_module

    real = lake_module.delta.append_rows

    def killed_at_done(uri: str, rows, metadata: dict[str, str], *args) -> None:
        if metadata.get("step") == "done":
            raise KeyboardInterrupt("killed before the done commit")
        real(uri, rows, metadata, *args)

    monkeypatch.setattr(lake_module.delta, "append_rows", killed_at_done)
    with pytest.raises(KeyboardInterrupt):
        write(lake, "b1", [article("in/moving", "v1", day=20)])
    monkeypatch.setattr(lake_module.delta, "append_rows", real)
    assert units(lake) == Counter({("in/moving", 0): 1})
    assert len(lake.ledger()) == 0, "a batch without its done commit is not done"

    write(lake, "b2", [article("in/moving", "v2", day=25)])
    rows = lake.table(ARTICLES).to_pyarrow_table(columns=["object_key", "object_etag", "date"])
    assert rows.to_pylist() == [
        {"object_key": "in/moving", "object_etag": "v2", "date": "2026-11-25"}
    ]


def test_runs_with_stale_ledgers_see_each_others_rows_before_they_commit(lake: Lake) -> None:
    """Two runs loaded the ledger before either wrote; one writes version 1 (the 20th),
    then the other version 2 (the 25th): the second looks again before its data commits."""
    first, second = lake.ledger(), lake.ledger()
    lake.write_batch(
        "a", [("in/moving", "v1")], [article("in/moving", "v1", day=20)], [], first, {}
    )
    lake.write_batch(
        "b", [("in/moving", "v2")], [article("in/moving", "v2", day=25)], [], second, {}
    )
    assert units(lake) == Counter({("in/moving", 0): 1})

"""The ingest flow end to end: real Prefect flow runs, real S3 server, Parquet read back."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import duckdb
import newsflow.tasks.lake.lake as lake_module
import polars as pl
import pyarrow.dataset as ds
import pytest
from newsflow.flows.cli import main
from newsflow.flows.demo import sample_objects
from newsflow.flows.ingest import ingest_articles
from newsflow.tasks.lake import Lake
from newsflow.tasks.settings import Settings

from tests.conftest import SHARED, read_table

pytestmark = pytest.mark.usefixtures("prefect_api")

SEED_TITLE = "The Governments of Russia and Cuba agree to fight against Western “interference” and “extremism”"


def upload(s3, bucket: str, objects: dict[str, bytes]) -> None:
    for key, body in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)


def lake_tables(output: Path) -> tuple[list[dict], list[dict]]:
    """Articles and rejects as a Delta reader sees them."""
    lake = Lake.open(str(output), Settings())
    return read_table(lake, "articles"), read_table(lake, "rejects")


def accounted(output: Path) -> list[tuple[str, int | None]]:
    """(object_key, line) of every row and reject: each input exactly once means no repeats."""
    articles, rejects = lake_tables(output)
    return sorted((r["object_key"], r["line_number"] or 0) for r in articles + rejects)


def test_samples_end_to_end(s3, bucket: str, tmp_path: Path) -> None:
    objects = sample_objects(SHARED / "samples" / "seed-article.txt")
    upload(s3, bucket, objects)
    output = tmp_path / "lake"
    summary = ingest_articles(input_uri=f"s3://{bucket}/inbox", output_uri=str(output))

    articles, rejects = lake_tables(output)
    keys = accounted(output)
    assert len(keys) == len(set(keys)), "an input ended in two places"
    assert {key for key, _ in keys} == set(objects), "an input object vanished"
    assert summary["objects_new"] == summary["objects_listed"] == len(objects)
    assert summary["objects_written"] == len(objects)
    assert summary["articles"] == len(articles) and summary["rejects"] == len(rejects)

    by_key = {(a["object_key"], a["line_number"]): a for a in articles}
    seed = by_key[("inbox/14ymedio/2023/russia-cuba.txt", None)]
    assert seed["title"] == SEED_TITLE and seed["language"] == "en"
    assert str(seed["source"]) == "14ymedio"

    stated = by_key[("inbox/el-diario/2026/huelga.json", None)]
    raw = json.loads(objects["inbox/el-diario/2026/huelga.json"])
    assert (stated["title"], stated["author"], stated["url"]) == (
        raw["title"],
        raw["author"],
        raw["url"],
    )
    assert stated["source"] == "el-diario-demo" and str(stated["date"]) == "2026-11-24"
    assert stated["language"] == "es"

    latin1 = by_key[("inbox/le-quotidien/2026/greve.HTML", None)]
    assert "Grève au port de Rotterdam" in latin1["title"] and "dockers" in latin1["text"]
    assert "\ufffd" not in latin1["text"] and latin1["language"] == "fr"

    wire = {a["line_number"]: a for a in articles if a["object_key"].endswith("feed.jsonl.gz")}
    assert sorted(wire) == [1, 2] and wire[2]["language"] == "de"
    html = by_key[("inbox/harbour-times/2026/rotterdam-strike.html", None)]
    assert set(html["dup_bands"]) & set(wire[1]["dup_bands"]), "syndicated copy not grouped"
    assert not set(html["dup_bands"]) & set(wire[2]["dup_bands"])

    reasons = {(r["object_key"], r["line_number"]): r["reason"] for r in rejects}
    assert reasons[("inbox/broken/empty.html", None)] == "empty object"
    assert reasons[("inbox/broken/bomb.txt.gz", None)].startswith("decompresses to more than")
    assert reasons[("inbox/broken/truncated.html.gz", None)].startswith("truncated gzip")
    assert reasons[("inbox/broken/report.pdf", None)].startswith("unsupported extension")
    assert reasons[("inbox/wire/2026/feed.jsonl.gz", 3)].startswith("invalid article JSON")
    assert reasons[("inbox/wire/2026/feed.jsonl.gz", 4)].startswith("malformed JSON")
    assert all(r["reason"] and r["stage"] for r in rejects)

    written = {p.relative_to(output).parts[0] for p in output.rglob("*") if p.is_file()}
    assert written == {"articles", "rejects", "ledger"}, (
        "something was written outside the lake layout"
    )
    assert not (tmp_path / "escape=1").exists()
    partitions = {
        p.relative_to(output / "articles").parts[:2]
        for p in (output / "articles").rglob("*.parquet")
    }
    assert all(s.startswith("source=") and d.startswith("date=") for s, d in partitions)

    # Delta-unaware readers of the Hive folders see the same rows on a fresh lake.
    count = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{output}/articles/**/*.parquet', hive_partitioning = true)"
    ).fetchall()
    assert count == [(len(articles),)]
    assert pl.scan_delta(str(output / "articles")).select(pl.len()).collect().item() == len(
        articles
    )


def test_reruns_new_objects_and_replacements(s3, bucket: str, tmp_path: Path) -> None:
    body = "Story {n} about the harbour strike in Rotterdam, with enough words to be kept as an article."
    upload(s3, bucket, {f"in/s{n % 2}/{n}.txt": body.format(n=n).encode() for n in range(5)})
    output = tmp_path / "lake"
    first = ingest_articles(input_uri=f"s3://{bucket}/in/", output_uri=str(output))
    versions_after_first = {
        n: Lake.open(str(output), Settings()).table(n).version()
        for n in ("articles", "rejects", "ledger")
    }
    assert first["objects_new"] == 5

    again = ingest_articles(input_uri=f"s3://{bucket}/in/", output_uri=str(output))
    assert (again["objects_listed"], again["objects_new"], again["articles"]) == (5, 0, 0)
    assert {
        n: Lake.open(str(output), Settings()).table(n).version() for n in versions_after_first
    } == versions_after_first, "a run with nothing new committed"

    upload(
        s3,
        bucket,
        {
            "in/s0/new.txt": b"A brand new article about dock workers, automated cranes and a long strike in the port of Rotterdam."
        },
    )
    added = ingest_articles(input_uri=f"s3://{bucket}/in/", output_uri=str(output))
    assert (added["objects_new"], added["articles"]) == (1, 1)

    upload(
        s3,
        bucket,
        {
            "in/s1/1.txt": b"The first story was rewritten: the strike ended after a night of talks in Rotterdam."
        },
    )
    replaced = ingest_articles(input_uri=f"s3://{bucket}/in/", output_uri=str(output))
    assert (replaced["objects_new"], replaced["objects_replaced"]) == (1, 1)
    articles, _ = lake_tables(output)
    texts = [a["text"] for a in articles if a["object_key"] == "in/s1/1.txt"]
    assert texts == [
        "The first story was rewritten: the strike ended after a night of talks in Rotterdam."
    ]
    assert len(articles) == 6 and len({a["article_id"] for a in articles}) == 6


def test_run_killed_between_data_and_ledger_commits_is_redone_once(
    s3,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The second batch's rows are committed, its ledger rows are not: the rerun processes
    its objects again and replaces their rows instead of adding a copy."""
    upload(
        s3,
        bucket,
        {
            f"in/s/{n}.txt": f"Story number {n} about the port of Rotterdam, long enough to be kept as an article body.".encode()
            for n in range(7)
        },
    )
    output = tmp_path / "lake"
    original = lake_module.delta.append_rows
    calls = {"n": 0}

    def die_on_second_ledger_append(uri, rows, metadata, *args):
        calls["n"] += metadata.get("step") == "done"
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated kill between the data and done commits")
        return original(uri, rows, metadata, *args)

    monkeypatch.setenv("NEWSFLOW_BATCH_SIZE", "3")
    monkeypatch.setattr(lake_module.delta, "append_rows", die_on_second_ledger_append)
    with pytest.raises(BaseException):  # noqa: B017 - the "kill" surfaces as whatever Prefect raises
        ingest_articles(input_uri=f"s3://{bucket}/in/", output_uri=str(output))
    monkeypatch.setattr(lake_module.delta, "append_rows", original)
    assert calls["n"] == 2
    assert len(accounted(output)) == 6, "the killed batch's rows were not committed"

    summary = ingest_articles(input_uri=f"s3://{bucket}/in/", output_uri=str(output))
    assert summary["objects_new"] == 4  # the killed batch's 3, and the one never written
    assert accounted(output) == sorted((f"in/s/{n}.txt", 0) for n in range(7))


def test_s3_output_and_keys_parameter(s3, arrow_s3, bucket: str, tmp_path: Path) -> None:
    upload(
        s3,
        bucket,
        {
            "in/a/1.json": json.dumps(
                {
                    "text": "An article written as JSON about the port strike, long enough to be kept by the cleaner stage."
                }
            ).encode(),
            "in/a/2.txt.gz": gzip.compress(
                b"A gzipped plain-text article about the port strike, long enough to be kept by the cleaner stage."
            ),
        },
    )
    output = f"s3://{bucket}/lake"
    only_one = ingest_articles(
        input_uri=f"s3://{bucket}/in/", output_uri=output, keys=["in/a/1.json"]
    )
    assert (only_one["objects_listed"], only_one["articles"]) == (1, 1)
    rest = ingest_articles(input_uri=f"s3://{bucket}/in/", output_uri=output)
    assert (rest["objects_listed"], rest["objects_new"]) == (2, 1)

    globbed = ds.dataset(
        f"{bucket}/lake/articles", filesystem=arrow_s3, partitioning="hive"
    ).to_table()
    assert sorted(globbed.column("object_key").to_pylist()) == ["in/a/1.json", "in/a/2.txt.gz"]
    lake = Lake.open(output, Settings())
    assert all(
        uri.startswith(f"s3://{bucket}/lake/articles/source=a/")
        for uri in lake.table("articles").file_uris()
    )
    from_delta = lake.table("articles").to_pyarrow_table()
    assert sorted(from_delta.column("object_key").to_pylist()) == ["in/a/1.json", "in/a/2.txt.gz"]
    from_polars = pl.read_delta(f"s3://{bucket}/lake/articles", storage_options=lake.options)
    assert sorted(from_polars["object_key"].to_list()) == ["in/a/1.json", "in/a/2.txt.gz"]
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="lake/")["Contents"]
    assert not [o["Key"] for o in listed if o["Key"].endswith("/")], (
        "directory marker objects written"
    )


def test_cli_run_prints_a_summary(
    s3, bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    upload(
        s3,
        bucket,
        {
            "in/wire/x.txt": b"A short wire story about the harbour strike in Rotterdam, long enough to be kept as article text."
        },
    )
    assert main(["run", "--input", f"s3://{bucket}/in", "--output", str(tmp_path / "lake")]) == 0
    printed = capsys.readouterr().out
    assert "1 listed, 1 new; 1 articles written, 0 rejected" in printed
    assert "wire" in printed and "per language" in printed


def test_cli_backfill_reprocesses_the_selected_source(
    s3, bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    story = b"A short wire story about the harbour strike in Rotterdam, long enough to be kept."
    upload(s3, bucket, {"in/wire/x.txt": story, "in/post/y.txt": story.replace(b"wire", b"post")})
    lake = str(tmp_path / "lake")
    assert main(["run", "--input", f"s3://{bucket}/in", "--output", lake]) == 0
    capsys.readouterr()
    assert (
        main(["backfill", "--input", f"s3://{bucket}/in", "--output", lake, "--source", "wire"])
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert (summary["selected"], summary["objects"], summary["articles"]) == (1, 1, 1)


def test_batches_close_at_the_object_count_or_the_byte_budget() -> None:
    from datetime import UTC, datetime

    from newsflow.flows.ingest import RunSummary, new_object_batches
    from newsflow.tasks.lake import Ledger
    from newsflow.tasks.s3 import ObjectRef
    from newsflow.tasks.schema import LEDGER_SCHEMA
    from newsflow.tasks.settings import Settings

    sizes = [10, 10, 10, 90, 10, 10, 10, 10]
    refs = [
        ObjectRef(f"k{n}", "e", size, datetime(2026, 1, 1, tzinfo=UTC))
        for n, size in enumerate(sizes)
    ]
    summary = RunSummary(input="s3://b/", output="lake")
    batches = new_object_batches(
        iter(refs),
        Ledger(LEDGER_SCHEMA.empty_table()),
        summary,
        Settings(batch_size=3, batch_max_bytes=100),
        reprocess=False,
    )
    assert [[r.key for r in batch] for batch in batches] == [
        ["k0", "k1", "k2"],  # three objects
        ["k3", "k4"],  # 100 bytes
        ["k5", "k6", "k7"],
    ]
    assert summary.objects_listed == 8


def test_demo_finds_the_seed_beside_the_working_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An installed (non-editable) package lives in site-packages: the demo must look
    beside the checkout it is started from."""
    from newsflow.flows.demo import find_seed_article

    seed = tmp_path / "shared" / "samples" / "seed-article.txt"
    seed.parent.mkdir(parents=True)
    seed.write_text("Home » News » A title\n\nA body.")
    (tmp_path / "checkout").mkdir()
    monkeypatch.chdir(tmp_path / "checkout")
    assert find_seed_article() == seed


def test_a_stage_exception_is_counted_apart_from_verdicts(
    s3,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A stage that raises on legitimate text loses that article: the run says so, apart
    from verdicts on the input, and the reject row is marked."""
    import newsflow.tasks.stages.enrich as enrich_module
    from newsflow.flows.summary import print_summary

    good = (
        "Dock workers in Rotterdam ended their strike on Monday after a night of talks at the port."
    )
    upload(
        s3,
        bucket,
        {
            "in/s/ok.txt": good.encode(),
            "in/s/bug.txt": ("Bug " + good).encode(),
            "in/s/empty.txt": b"",
        },
    )
    real = enrich_module.extract_keywords

    def fails_on_bug(text: str, *args, **kwargs):
        if "Bug" in text:
            raise UnicodeDecodeError("utf-8", b"\xf0", 0, 1, "invalid start byte")
        return real(text, *args, **kwargs)

    monkeypatch.setattr(enrich_module, "extract_keywords", fails_on_bug)
    output = tmp_path / "lake"
    summary = ingest_articles(input_uri=f"s3://{bucket}/in/", output_uri=str(output))
    assert (summary["articles"], summary["rejects"]) == (1, 2)
    assert summary["stage_errors"] == {"enrich": 1}
    _, rejects = lake_tables(output)
    assert {r["object_key"]: r["stage_error"] for r in rejects} == {
        "in/s/bug.txt": True,
        "in/s/empty.txt": False,
    }
    print_summary(summary)
    assert "STAGE ERRORS 1" in capsys.readouterr().out


def test_history_and_restore_undo_a_reprocess(
    s3, bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = "Story {n} about the harbour strike in Rotterdam, with enough words to be kept as an article."
    upload(s3, bucket, {f"in/s/{n}.txt": body.format(n=n).encode() for n in range(4)})
    lake = str(tmp_path / "lake")
    assert main(["run", "--input", f"s3://{bucket}/in", "--output", lake]) == 0
    before, before_rejects = lake_tables(Path(lake))
    version = Lake.open(lake, Settings()).table("articles").version()
    assert main(["run", "--input", f"s3://{bucket}/in", "--output", lake, "--reprocess"]) == 0
    reprocessed, _ = lake_tables(Path(lake))
    assert {a["batch_id"] for a in reprocessed}.isdisjoint({a["batch_id"] for a in before})
    capsys.readouterr()

    assert main(["history", "--output", lake]) == 0
    history = capsys.readouterr().out
    assert "| reprocess |" in history and "| ingest |" in history

    assert main(["restore", "--output", lake, "--version", str(version)]) == 0
    assert "articles: restored to version" in capsys.readouterr().out
    restored, restored_rejects = lake_tables(Path(lake))
    key = lambda row: (row["object_key"], row["line_number"] or 0)  # noqa: E731
    assert sorted(restored, key=key) == sorted(before, key=key)
    assert restored_rejects == before_rejects
    again = ingest_articles(input_uri=f"s3://{bucket}/in/", output_uri=lake)
    assert again["objects_new"] == 0, "the restored ledger disagrees with the restored rows"


def test_status_as_text_and_as_a_flow_artifact(
    s3, bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from newsflow.flows.status import lake_status_flow
    from prefect.client.orchestration import get_client

    objects = sample_objects(SHARED / "samples" / "seed-article.txt")
    upload(s3, bucket, objects)
    lake = str(tmp_path / "lake")
    summary = ingest_articles(input_uri=f"s3://{bucket}/inbox", output_uri=lake)
    assert main(["status", "--output", lake]) == 0
    text = capsys.readouterr().out
    for heading in (
        "| articles |",
        "## Last commits",
        "## Articles per source",
        "## Languages",
        "## Rejects by reason",
    ):
        assert heading in text, heading
    assert f"({summary['rejects']} rejects; {len(objects)} objects in the lake)" in text
    assert "| ingest |" in text

    published = lake_status_flow(output_uri=lake)
    assert published.splitlines()[1:] == text.rstrip("\n").splitlines()[1:]
    with get_client(sync_client=True) as client:
        artifact = client.read_latest_artifacts()
    assert any(
        a.key == "lake-status" and "## Rejects by reason" in (a.data or "") for a in artifact
    )

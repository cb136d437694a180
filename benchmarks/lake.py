"""What the Delta lake costs: per-batch commits, opening tables, the ledger.

    python -m benchmarks.lake [--commits 300] [--open-commits 1000 --open-commits 10000]
                              [--ledger-keys 1000000] [--place local] [--place s3]

On a local folder and on a moto S3 server on 127.0.0.1 (started here), it prints:

- the time of one batch's commits (`Lake.write_batch`: rejects, articles, ledger) for
  `--commits` batches of 200 new objects over 10 sources, median / p90 / p99, and the
  same for batches that replace 200 objects written before (re-uploads, reprocessing);
- reads of the ledger that leaves: what a batch's refresh, a run's load and an event
  run's load of its keys cost, through a pyarrow dataset and as the lake reads;
- the time to open the articles table after N commits (checkpoints every 100), and after
  maintenance has compacted it;
- `Lake.ledger()` with `--ledger-keys` objects recorded, and the lookup of a 1,000-key
  listing page.

Timings on the S3 server are inflated by the machine's load and moto; request counts are
what carry over to real S3 (../shared/DELTA-NOTES.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.throughput import start_s3_server

BATCH = 200
SOURCES = 10


def _articles(batch: int, etag: str) -> list[Any]:
    from newsflow.tasks.schema import Article

    moment = datetime(2026, 11, 1 + batch % 28, tzinfo=UTC)
    text = "Dock workers in Rotterdam extended their strike over automation plans. " * 8
    return [
        Article(
            object_key=f"in/s{n % SOURCES}/{batch:06d}-{n:03d}.html",
            object_etag=etag,
            source=f"s{n % SOURCES}",
            last_modified=moment,
            content_type="html",
            raw="",
            text=text,
            published_at=moment,
            keywords=["dock workers", "strike"],
        )
        for n in range(BATCH)
    ]


def _percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return (
        f"median {statistics.median(ordered) * 1000:.0f} ms, p90 {pick(0.9) * 1000:.0f} ms, "
        f"p99 {pick(0.99) * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms"
    )


def commit_costs(uri: str, commits: int) -> dict[str, Any]:
    """Write `commits` batches of new objects, then replace the first tenth of them."""
    from newsflow.tasks.lake import Lake
    from newsflow.tasks.settings import Settings

    lake = Lake.open(uri, Settings())
    ledger = lake.ledger()
    new: list[float] = []
    replaced: list[float] = []
    for batch in range(commits):
        articles = _articles(batch, "v1")
        started = time.perf_counter()
        lake.write_batch(
            f"b{batch}", [(a.object_key, "v1") for a in articles], articles, [], ledger, {}
        )
        new.append(time.perf_counter() - started)
    for batch in range(max(1, commits // 10)):
        articles = _articles(batch, "v2")
        started = time.perf_counter()
        lake.write_batch(
            f"r{batch}", [(a.object_key, "v2") for a in articles], articles, [], ledger, {}
        )
        replaced.append(time.perf_counter() - started)
    return {"new": new, "replaced": replaced, "versions": lake.table("articles").version()}


def read_costs(uri: str) -> dict[str, float]:
    """Reads of the ledger the commit phase left, best of 3: through a pyarrow dataset over
    every file (as before) and as the lake reads now (`delta.read`, `delta.read_files`)."""
    import pyarrow.compute as pc
    from newsflow.tasks.lake import LEDGER, Lake, delta
    from newsflow.tasks.settings import Settings

    lake = Lake.open(uri, Settings())
    table = lake.table(LEDGER)
    files = table.file_uris()
    keys = delta.read(table, columns=["object_key"]).column("object_key").to_pylist()[-BATCH:]
    newest = files[-1].rsplit("/", 1)[-1]

    def dataset_refresh() -> None:
        dataset = table.to_pyarrow_dataset()
        [f.to_table() for f in dataset.get_fragments() if f.path.endswith(newest)]

    reads = {
        "refresh, dataset": dataset_refresh,
        "refresh, read_files": lambda: delta.read_files(table, files[-1:], lake.options),
        "all rows, to_pyarrow_table": table.to_pyarrow_table,
        "all rows, delta.read": lambda: delta.read(table),
        f"{BATCH} keys, dataset": lambda: table.to_pyarrow_dataset().to_table(
            filter=pc.field("object_key").isin(keys)
        ),
        f"{BATCH} keys, delta.read": lambda: delta.read(
            table, f"object_key IN ({delta.sql_list(keys)})"
        ),
    }
    return {
        "files": len(files),
        **{name: min(_seconds(read) for _ in range(3)) for name, read in reads.items()},
    }


def _seconds(call: Any) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def open_seconds(lake: Any, repeats: int = 3) -> float:
    from newsflow.tasks.lake import ARTICLES

    return min(_seconds(lambda: lake.table(ARTICLES).version()) for _ in range(repeats))


def open_costs(uri: str, commits: int) -> dict[str, float]:
    """Open the articles table after `commits` small commits, then after maintenance."""
    import pyarrow as pa
    from deltalake import write_deltalake
    from newsflow.tasks.lake import Lake, maintain
    from newsflow.tasks.schema import articles_table
    from newsflow.tasks.settings import Settings

    lake = Lake.open(uri, Settings())
    for batch in range(commits):
        rows = articles_table(
            _articles(batch, "v1")[:2], batch_id=f"b{batch}", ingested_at=datetime.now(UTC)
        )
        write_deltalake(
            lake.table_uri("articles"),
            pa.Table.from_batches(rows.to_batches()),
            mode="append",
            storage_options=lake.options,
        )
    before = open_seconds(lake)
    started = time.perf_counter()
    maintain(lake)
    maintenance = time.perf_counter() - started
    return {
        "commits": commits,
        "open": before,
        "maintain": maintenance,
        "open_after": open_seconds(lake),
    }


def ledger_costs(uri: str, keys: int) -> dict[str, float]:
    """The ledger with `keys` objects (in batches of 200, then compacted): load and lookup."""
    import numpy as np
    import pyarrow as pa
    from deltalake import write_deltalake
    from newsflow.tasks.lake import LEDGER, Lake, maintain
    from newsflow.tasks.schema import LEDGER_SCHEMA, object_fingerprint
    from newsflow.tasks.settings import Settings

    lake = Lake.open(uri, Settings())
    committed = datetime.now(UTC)
    step = 100_000
    for start in range(0, keys, step):
        names = [f"in/s{n % SOURCES}/{n:09d}.html" for n in range(start, min(keys, start + step))]
        table = pa.Table.from_pydict(
            {
                "object_fingerprint": [object_fingerprint(k, "e") for k in names],
                "object_key": names,
                "object_etag": ["e"] * len(names),
                "batch_id": [f"b{start}"] * len(names),
                "committed_at": [committed] * len(names),
                "articles": [1] * len(names),
                "rejects": [0] * len(names),
                "done": [True] * len(names),
                "partitions": [
                    [f"source=s{n % SOURCES}/date=2026-11-01"] for n in range(len(names))
                ],
            },
            schema=LEDGER_SCHEMA,
        )
        write_deltalake(lake.table_uri(LEDGER), table, mode="append", storage_options=lake.options)
    maintain(lake)
    started = time.perf_counter()
    ledger = lake.ledger()
    loaded = time.perf_counter() - started
    rng = np.random.default_rng(0)
    page = [object_fingerprint(f"in/s0/{n:09d}.html", "e") for n in rng.integers(0, keys * 2, 1000)]
    started = time.perf_counter()
    for _ in range(100):
        ledger.contains(page)
    lookup = (time.perf_counter() - started) / 100
    return {"keys": keys, "load": loaded, "lookup_ms": lookup * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--commits", type=int, default=300, help="batches to commit")
    parser.add_argument("--open-commits", type=int, action="append", help="repeatable")
    parser.add_argument("--ledger-keys", type=int, default=1_000_000)
    parser.add_argument(
        "--place", action="append", choices=["local", "s3"], help="where (default: both)"
    )
    args = parser.parse_args()
    os.environ.update(
        AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench-secret",
        AWS_DEFAULT_REGION="us-east-1",
    )
    workdir = Path(tempfile.mkdtemp(prefix="newsflow-lake-bench-"))
    wanted = args.place or ["local", "s3"]
    places = {"local": lambda name: str(workdir / name)} if "local" in wanted else {}
    server = None
    if "s3" in wanted:
        import boto3

        server, endpoint = start_s3_server(dict(os.environ))
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        boto3.client("s3").create_bucket(Bucket=bucket)
        places["S3 server"] = lambda name: f"s3://{bucket}/{name}"
    try:
        for place, uri in places.items():
            costs = commit_costs(uri("commits"), args.commits)
            print(f"\n=== {place}: one batch of {BATCH} objects, its Delta commits ===")
            print(f"new objects ({len(costs['new'])} batches): {_percentiles(costs['new'])}")
            print(
                f"replacing objects ({len(costs['replaced'])} batches): "
                f"{_percentiles(costs['replaced'])}"
            )
            reads = read_costs(uri("commits"))
            print(f"ledger of {reads.pop('files')} files, reads (best of 3):")
            for name, seconds in reads.items():
                print(f"  {name}: {seconds * 1000:.0f} ms")
            for commits in args.open_commits or [1000]:
                opened = open_costs(uri(f"open-{commits}"), commits)
                print(
                    f"open articles after {commits:,} commits: {opened['open'] * 1000:.0f} ms; "
                    f"maintenance {opened['maintain']:.1f} s; then open "
                    f"{opened['open_after'] * 1000:.0f} ms"
                )
            if args.ledger_keys:
                ledger = ledger_costs(uri("ledger"), args.ledger_keys)
                print(
                    f"ledger of {ledger['keys']:,} objects: load {ledger['load']:.2f} s, "
                    f"lookup of a 1,000-key listing page {ledger['lookup_ms']:.2f} ms"
                )
    finally:
        if server is not None:
            server.terminate()


if __name__ == "__main__":
    main()

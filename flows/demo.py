"""`newsflow demo`: the whole pipeline on one machine, with nothing running and no AWS account.

Starts moto's S3-compatible server on 127.0.0.1, uploads the bundled samples (HTML, JSON,
JSONL, gzip, a Latin-1 page, the seed article when `../shared` is beside the checkout)
and a handful of bad inputs, runs the same ingest flow through boto3 against it, then
queries the lake with DuckDB.
"""

from __future__ import annotations

import gzip
import os
import socket
from importlib.resources import files
from pathlib import Path
from typing import Any

import boto3

DEMO_BUCKET = "newsflow-demo"
DEMO_PREFIX = "inbox/"
_SEED_IN_SHARED = Path("shared", "samples", "seed-article.txt")


def find_seed_article() -> Path | None:
    """The project's seed article in `../shared` beside the checkout, if it is there: next
    to the working directory (an installed package lives elsewhere) or to the source."""
    checkouts = (Path.cwd(), Path(__file__).resolve().parents[1])
    return next(
        (c.parent / _SEED_IN_SHARED for c in checkouts if (c.parent / _SEED_IN_SHARED).is_file()),
        None,
    )


def sample_objects(seed_article: Path | None) -> dict[str, bytes]:
    """Object key -> bytes: good articles in every format, then inputs that must be rejected."""
    samples = files("newsflow.flows") / "samples"
    objects = {
        "inbox/harbour-times/2026/rotterdam-strike.html": samples.joinpath(
            "port-strike.html"
        ).read_bytes(),
        "inbox/el-diario/2026/huelga.json": samples.joinpath("huelga.json").read_bytes(),
        "inbox/wire/2026/feed.jsonl.gz": gzip.compress(samples.joinpath("wire.jsonl").read_bytes()),
        "inbox/le-quotidien/2026/greve.HTML": samples.joinpath("greve-latin1.html").read_bytes(),
        # bad inputs: each must end as a reject with a reason, none may crash the run
        "inbox/broken/empty.html": b"",
        "inbox/broken/binary.txt": bytes(range(256)) * 16,
        "inbox/broken/truncated.html.gz": gzip.compress(b"<p>cut short</p>" * 500)[:-20],
        "inbox/broken/bomb.txt.gz": gzip.compress(b"\0" * (64 * 1024 * 1024)),
        "inbox/broken/malformed.json": b'{"title": "no closing brace", "text": "x"',
        "inbox/broken/report.pdf": b"%PDF-1.7 not an article format",
        "inbox/../../escape=1/a name with spaces.html": b"<p>keys are data, never paths</p>",
    }
    if seed_article is not None:
        objects["inbox/14ymedio/2023/russia-cuba.txt"] = seed_article.read_bytes()
    return objects


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_local_s3() -> str:
    """moto's S3 server in a thread on 127.0.0.1; returns its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False).start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="demo",
        AWS_SECRET_ACCESS_KEY="demo-secret",
        AWS_DEFAULT_REGION="us-east-1",
    )
    return endpoint


DEMO_QUERY = """
    SELECT source, date, language, title, word_count, keywords[1:3] AS keywords
    FROM articles ORDER BY source, date"""


def delta_datasets(output: str) -> tuple[Any, Any]:
    """The lake's articles and rejects as pyarrow datasets of their current versions:
    DuckDB's own `delta_scan` needs an extension it downloads, which offline machines
    cannot; online, `INSTALL delta; SELECT … FROM delta_scan('…/articles')` reads the same."""
    from newsflow.tasks.lake import ARTICLES, REJECTS, Lake
    from newsflow.tasks.settings import Settings

    lake = Lake.open(output, Settings())
    return (
        lake.table(ARTICLES).to_pyarrow_dataset(),
        lake.table(REJECTS).to_pyarrow_dataset(),
    )


def run_demo(output: str) -> None:
    import duckdb
    from newsflow.flows.ingest import ingest_articles
    from newsflow.flows.summary import print_summary

    endpoint = start_local_s3()
    client = boto3.client("s3")
    client.create_bucket(Bucket=DEMO_BUCKET)
    seed_article = find_seed_article()
    if seed_article is None:
        print("../shared/samples/seed-article.txt not found: running without the seed article")
    objects = sample_objects(seed_article)
    for key, body in objects.items():
        client.put_object(Bucket=DEMO_BUCKET, Key=key, Body=body)
    print(f"uploaded {len(objects)} objects to s3://{DEMO_BUCKET}/{DEMO_PREFIX} at {endpoint}")

    summary = ingest_articles(input_uri=f"s3://{DEMO_BUCKET}/{DEMO_PREFIX}", output_uri=output)
    print_summary(summary)

    print(f"\nDuckDB, over the Delta tables as deltalake reads them:{DEMO_QUERY}\n")
    articles, rejects = delta_datasets(output)
    connection = duckdb.connect()
    connection.register("articles", articles)
    connection.register("rejects", rejects)
    print(connection.sql(DEMO_QUERY))
    print(connection.sql("SELECT object_key, stage, reason FROM rejects ORDER BY 1"))

    again = ingest_articles(input_uri=f"s3://{DEMO_BUCKET}/{DEMO_PREFIX}", output_uri=output)
    print(f"second run: {again['objects_new']} new objects, {again['articles']} articles written")

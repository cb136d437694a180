"""Credentials stay secret; parsers never reach the network; slugs never leave the lake."""

from __future__ import annotations

import json
import random
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
from newsflow.tasks.stages.fetch import slugify, source_from_key

from tests.faults.conftest import Driver, Run, upload
from tests.faults.corpus import article_objects
from tests.faults.hostile import HOSTILE_KEY_PARTS, HOSTILE_SOURCES
from tests.faults.lake import assert_exactly_once
from tests.faults.proxy import FaultProxy

SECRET = "NEWSFLOW-FAKE-SECRET-d41c9e7b0a"
KEY_ID = "AKIANEWSFLOWFAKE7777"
TOKEN = "NEWSFLOW-FAKE-SESSION-TOKEN-55aa01"
CREDENTIALS = {
    "AWS_SECRET_ACCESS_KEY": SECRET,
    "AWS_ACCESS_KEY_ID": KEY_ID,
    "AWS_SESSION_TOKEN": TOKEN,
}
SLUG = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")


class HitRecorder:
    """An HTTP listener on 127.0.0.1 that records every request a parser might make."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                recorder.hits.append(self.path)
                body = b'<!ENTITY leaked "LEAKED-FROM-NETWORK">'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def network_bait(url: str) -> dict[str, bytes]:
    """Pages that would fetch or expand something if a parser let them."""
    text = (
        "Dock workers in Rotterdam ended a three-day strike on Tuesday after the port "
        "authority agreed to review night-shift pay. Traffic recovers by Friday."
    )
    xxe = (
        f'<?xml version="1.0"?><!DOCTYPE html [<!ENTITY net SYSTEM "{url}/entity">'
        f'<!ENTITY local SYSTEM "file:///etc/passwd"><!ENTITY % param SYSTEM "{url}/param"> %param;]>'
    )
    pages = {
        "xxe.html": f"{xxe}<html><body><article><p>{text} &net; &local; &leaked;</p></article></body></html>",
        "dtd.html": f'<!DOCTYPE html SYSTEM "{url}/dtd"><html><body><p>{text}</p></body></html>',
        "resources.html": (
            f'<html><head><base href="{url}/base/"><link rel="stylesheet" href="{url}/css">'
            f'<script src="{url}/js"></script><meta http-equiv="refresh" content="0;url={url}/refresh">'
            f'<style>@import url("{url}/import");</style></head><body><article>'
            f'<img src="{url}/img"><iframe src="{url}/iframe"></iframe><p>{text}</p>'
            f'<svg><image href="{url}/svg"/></svg><object data="{url}/object"></object>'
            f'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="{url}/xinclude"/>'
            f"</article></body></html>"
        ),
        "xml-stylesheet.html": f'<?xml-stylesheet href="{url}/xsl"?><html><body><p>{text}</p></body></html>',
    }
    objects = {f"in/bait/{name}": page.encode() for name, page in pages.items()}
    objects["in/bait/stated.json"] = json.dumps(
        {"html": pages["resources.html"], "url": f"{url}/canonical", "source": f"{url}/src"}
    ).encode()
    objects["in/bait/lines.jsonl"] = json.dumps({"html": pages["xxe.html"], "url": url}).encode()
    return objects


def files_containing(root: Path, needles: list[bytes]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path}: {needle!r}" for needle in needles if needle in data]
    return found


def test_secrets_never_leak_and_parsers_stay_offline(
    driver: Driver,
    s3: Any,
    s3_endpoint: str,
    bucket: str,
    prefect_server: str,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    recorder = HitRecorder()
    expected = upload(s3, bucket, {**article_objects("in/", 6), **network_bait(recorder.url)})
    output = tmp_path / "lake"
    results = driver.run(
        Run(f"s3://{bucket}/in/", str(output), env=CREDENTIALS),
        Run(f"s3://{bucket}/in/", f"s3://{bucket}/lake", env=CREDENTIALS),
    )
    assert [r.returncode for r in results] == [0, 0], results[0].output[-3000:]
    with FaultProxy(s3_endpoint, rate=0.0) as proxy:  # a failing run logs tracebacks
        proxy.down = True
        env = {**CREDENTIALS, "AWS_ENDPOINT_URL": proxy.url, "NEWSFLOW_S3_MAX_ATTEMPTS": "2"}
        [failed] = driver.run(Run(f"s3://{bucket}/in/", str(tmp_path / "down"), env=env))
        [failed_s3] = driver.run(Run(f"s3://{bucket}/in/", f"s3://{bucket}/down", env=env))
    assert failed.returncode == failed_s3.returncode == 1
    view = assert_exactly_once(output, expected)

    # Parsers: nothing fetched, no entity expanded, no local file read.
    assert recorder.hits == [], f"a parser reached the network: {recorder.hits}"
    texts = " ".join(str(row) for row in pq.ParquetDataset(output / "articles").read().to_pylist())
    assert "LEAKED-FROM-NETWORK" not in texts and "root:x:0:0" not in texts

    needles = [SECRET.encode(), TOKEN.encode(), SECRET.encode("utf-16-le")]
    # Logs of every run, the lake, the Prefect server's home (database, logs) and everything
    # else the session wrote.
    leaks = files_containing(tmp_path_factory.getbasetemp(), needles)
    assert not leaks, leaks
    for result in [*results, failed, failed_s3]:
        assert SECRET not in result.output and TOKEN not in result.output
    # Every commit's log entry, commitInfo included (what `newsflow history` shows).
    log_entries = sorted(output.glob("*/_delta_log/*.json"))
    assert len(log_entries) >= 6
    for entry in log_entries:
        for line in entry.read_text().splitlines():
            action = json.loads(line)
            assert SECRET not in line and TOKEN not in line and KEY_ID not in line, entry
            if "commitInfo" in action:
                assert SECRET not in json.dumps(action["commitInfo"]), entry
    for path in output.rglob("*.parquet"):
        parquet = pq.ParquetFile(path)
        assert SECRET not in str(parquet.metadata.metadata) + str(parquet.schema_arrow.metadata)
        assert SECRET not in str(parquet.read().to_pylist())
    s3_log_entries = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="lake/"):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            assert SECRET.encode() not in body and TOKEN.encode() not in body, item["Key"]
            s3_log_entries += "/_delta_log/" in item["Key"]
            if item["Key"].endswith(".parquet"):
                table = pq.read_table(__import__("io").BytesIO(body))
                assert SECRET not in str(table.to_pylist()) + str(table.schema.metadata)
    assert s3_log_entries >= 6
    # What the Prefect API serves: logs, artifacts, flow runs with their parameters.
    for endpoint in ("logs/filter", "artifacts/filter", "flow_runs/filter", "task_runs/filter"):
        response = httpx.post(f"{prefect_server}/{endpoint}", json={"limit": 200}, timeout=30)
        assert response.status_code == 200
        assert SECRET not in response.text and TOKEN not in response.text, endpoint
    assert {row[0] for row in view.articles} >= {"in/bait/xxe.html"}


def test_a_source_can_never_name_a_path_outside_the_lake() -> None:
    """Every slug is one safe path segment: [a-z0-9] words joined by '-', never '.' or '/'."""
    rng = random.Random(6)
    alphabet = "./\\=:%\x00\n\r\t -_~aZ9é🙂\u202e\u2024\uff0e\uff0f"
    values = HOSTILE_SOURCES + HOSTILE_KEY_PARTS
    values += [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80))) for _ in range(2000)
    ]
    for value in values:
        slug = slugify(value)
        assert SLUG.fullmatch(slug) and len(slug) <= 64, (value, slug)
        for key in (f"in/{value}/x.txt", f"in/{value}", f"{value}/x.txt"):
            assert SLUG.fullmatch(source_from_key(key, "in/")), key

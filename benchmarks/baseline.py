"""The naive baseline the pipeline must beat: one single-threaded loop of boto3 get ->
trafilatura -> langdetect -> one pyarrow write, with none of the pipeline's extra work.

`python -m benchmarks.baseline --input s3://B/P --output FILE.parquet` prints a JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import trafilatura
from langdetect import DetectorFactory, detect
from langdetect.lang_detect_exception import LangDetectException
from newsflow.tasks.s3 import S3Location


def run_baseline(input_uri: str, output_path: str) -> dict[str, float]:
    started = time.monotonic()
    DetectorFactory.seed = 0
    location = S3Location.parse(input_uri)
    client = boto3.client("s3")
    rows: list[dict[str, str]] = []
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=location.bucket, Prefix=location.prefix):
        for item in page.get("Contents", []):
            html = client.get_object(Bucket=location.bucket, Key=item["Key"])["Body"].read()
            text = trafilatura.extract(html.decode("utf-8", errors="replace"))
            if not text:
                continue
            try:
                language = detect(text)
            except LangDetectException:
                language = "und"
            rows.append({"object_key": item["Key"], "text": text, "language": language})
    pq.write_table(pa.Table.from_pylist(rows), output_path, compression="zstd")
    return {"articles": len(rows), "seconds": time.monotonic() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    print(json.dumps(run_baseline(args.input, args.output)))


if __name__ == "__main__":
    main()

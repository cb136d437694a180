"""All of newsflow's knobs, read from `NEWSFLOW_*` environment variables.

Flows take the few parameters a person changes per run (input, output, keys); everything
else comes from here so that a deployment, a test and a benchmark configure it one way.
S3 endpoint, credentials and region are deliberately *not* here: they come from boto3's
standard chain (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, profiles, instance roles...).
"""

from __future__ import annotations

import os

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Pipeline settings; every field can be set as `NEWSFLOW_<FIELD_NAME>`."""

    model_config = SettingsConfigDict(env_prefix="NEWSFLOW_", extra="ignore")

    batch_size: int = Field(
        200, ge=1, description="Objects per batch: one run of each stage task per batch."
    )
    workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        description="Processes for the CPU-bound stages; 1 runs them in the flow's process.",
    )
    workers_min_objects: int = Field(
        100,
        ge=0,
        description="A run with fewer new objects (one batch) processes them in the "
        "flow's process unless its workers are started already: starting them costs ~3 s "
        "of CPU and ~2 s before the first article, more than they save on a few objects.",
    )
    batches_in_flight: int = Field(
        2,
        ge=1,
        description="Batches fetched and processed while the oldest is written; "
        "memory grows with it. On Dask, at least the number of worker processes.",
    )
    batch_max_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1,
        description="A batch also closes once its objects' stored sizes add up to this.",
    )
    trim_heap_above_bytes: int = Field(
        1024 * 1024 * 1024,
        ge=0,
        description="After writing a batch, the flow process gives the memory its heap "
        "holds free back to the OS if its RSS is above this (glibc only): 0 after every "
        "batch (5 % slower), a value above the machine's RAM never.",
    )
    fetch_concurrency: int = Field(16, ge=1, description="Parallel S3 downloads per batch.")
    max_object_bytes: int = Field(
        10 * 1024 * 1024, ge=1, description="Objects larger than this (stored size) are rejected."
    )
    max_decoded_bytes: int = Field(
        20 * 1024 * 1024,
        ge=1,
        description="Bound on decompressed size: a gzip that inflates past it is a bomb.",
    )
    max_json_depth: int = Field(32, ge=2, description="JSON nested deeper than this is rejected.")
    min_text_chars: int = Field(
        80, ge=1, description="Cleaned text shorter than this is rejected as 'no article text'."
    )
    entity_max_chars: int = Field(
        8000,
        ge=0,
        description="Named entities are found in title + the first N characters: bounds the "
        "cost on very long texts; 8000 covers about 1,300 words, most news articles whole.",
    )
    keyword_count: int = Field(10, ge=0, description="Keywords kept per article.")
    words_per_minute: int = Field(230, ge=1, description="Reading speed for reading_minutes.")
    s3_max_attempts: int = Field(8, ge=1, description="boto3 retry attempts (adaptive mode).")
    compact_target_bytes: int = Field(
        128 * 1024 * 1024,
        ge=1,
        description="Maintenance rewrites a partition whose files smaller than this number "
        "two or more, into files of about this size.",
    )
    vacuum_retention_hours: int = Field(
        168,
        ge=0,
        description="Maintenance deletes data files that left a table more than this long "
        "ago: a read or a time-travel query of an older version needs them until then.",
    )
    commit_attempts: int = Field(
        20,
        ge=1,
        description="Tries of one Delta commit that keeps losing to concurrent commits to "
        "the same partitions before the write fails (and its task retries).",
    )
    verbose: bool = Field(
        False,
        description="The stage workers let third-party libraries log at INFO, the "
        "parsers' messages about each document included; otherwise parsers log only at "
        "CRITICAL, network libraries at WARNING. `newsflow --verbose` sets it.",
    )
    task_runner_address: str | None = Field(
        None,
        description="Dask scheduler address, or 'local' for a LocalCluster; unset = threads.",
    )


class DeploymentSettings(BaseSettings):
    """Where the deployed flows read and write, when the sweep runs, and the limits of
    `newsflow serve` and of the event consumer, `newsflow listen` (NEWSFLOW_*).

    Apart from `Settings` because a run needs none of it and a deployment cannot do
    without the two URIs.
    """

    model_config = SettingsConfigDict(env_prefix="NEWSFLOW_", extra="ignore")

    input_uri: str = Field(description="s3://BUCKET/PREFIX holding the raw articles.")
    output_uri: str = Field(description="The lake root: s3://BUCKET/PREFIX or a local path.")
    sweep_cron: str = Field("*/15 * * * *", description="When the sweep runs (cron).")
    maintain_cron: str = Field("30 3 * * *", description="When maintenance runs (cron).")
    timezone: str = Field("UTC", description="Time zone the sweep's cron is read in.")
    serve_limit: int = Field(
        2,
        ge=1,
        description="Flow runs `newsflow serve` runs at once, each a process of its own "
        "(sweep, backfill, maintenance, on-upload runs of `newsflow emit`); more wait, "
        "scheduled, on the server.",
    )
    events_batch_objects: int = Field(
        1000,
        ge=1,
        le=10_000,
        description="Most objects the event consumer takes into one micro-batch (one "
        "ingest run); it takes whatever is queued, up to this, when it is free.",
    )
    events_runs: int = Field(
        2,
        ge=1,
        le=4,
        description="Micro-batches the event consumer runs at once (each a flow run in "
        "its own thread, sharing the stage workers): while one fetches or commits, the "
        "other keeps the workers busy.",
    )
    events_wait_seconds: int = Field(
        10, ge=1, le=20, description="SQS long-poll of the event consumer when it is idle."
    )
    events_visibility_seconds: int = Field(
        120,
        ge=6,
        le=43_200,
        description="How long the consumer's messages stay invisible to others: set at "
        "receipt and renewed once less than half of it is left, while they wait or run, so "
        "only a consumer that died lets them come back, this long after its last renewal.",
    )
    events_retry_max_seconds: int = Field(
        30,
        ge=1,
        description="A micro-batch whose run failed (Prefect API or S3 unreachable) is "
        "retried, its messages still held, after 1 s, 2 s, 4 s… up to this.",
    )

"""The article record that moves through the stages, and the Arrow schemas of the lake.

This module is the only place that knows column names and types; the README documents
each column and must change with it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import pyarrow as pa

ContentType = Literal["html", "text"]
EntityLabel = Literal["PERSON", "ORG", "LOC"]


class RejectedArticle(Exception):
    """Raised by a stage for input it cannot turn into an article; becomes a reject row."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class Entity:
    text: str
    label: EntityLabel


@dataclass(slots=True)
class Article:
    """One article from fetch to write. Stages fill the fields after `raw`.

    Fields a JSON article states (url, title, author, published_at) arrive filled and
    are kept; extraction only fills what is still missing.
    """

    object_key: str
    object_etag: str
    source: str
    last_modified: datetime
    content_type: ContentType
    raw: str
    line_number: int | None = None
    stated_id: str | None = None
    url: str | None = None
    title: str | None = None
    author: str | None = None
    published_at: datetime | None = None
    # clean
    text: str = ""
    page_metadata: dict[str, str] = field(default_factory=dict)
    # language
    language: str = "und"
    language_confidence: float = 0.0
    # extract
    entities: list[Entity] = field(default_factory=list)
    # enrich
    word_count: int = 0
    reading_minutes: float = 0.0
    keywords: list[str] = field(default_factory=list)
    content_hash: str = ""
    dup_bands: list[int] = field(default_factory=list)

    @property
    def article_id(self) -> str:
        """Stable across reruns: the object key plus the line for JSONL (or the stated id)."""
        local = self.stated_id or (str(self.line_number) if self.line_number is not None else "")
        digest = hashlib.blake2b(f"{self.object_key}\0{local}".encode(), digest_size=16)
        return digest.hexdigest()

    @property
    def date(self) -> str:
        """Partition date: publication date when known, else the object's LastModified (UTC)."""
        moment = self.published_at or self.last_modified
        return moment.astimezone(UTC).strftime("%Y-%m-%d")


@dataclass(slots=True)
class Reject:
    """An object (or one JSONL line) that could not become an article, and why."""

    object_key: str
    object_etag: str
    stage: str
    reason: str
    line_number: int | None = None
    # True when a stage raised an exception instead of giving a verdict on the input.
    stage_error: bool = False


_UTC_MICROS = pa.timestamp("us", tz="UTC")

ENTITY_TYPE = pa.struct([("text", pa.string()), ("label", pa.string())])

ARTICLE_SCHEMA = pa.schema(
    [
        ("article_id", pa.string()),
        ("source", pa.string()),
        ("date", pa.string()),
        ("object_key", pa.string()),
        ("object_etag", pa.string()),
        ("line_number", pa.int32()),
        ("url", pa.string()),
        ("title", pa.string()),
        ("author", pa.string()),
        ("text", pa.string()),
        ("language", pa.string()),
        ("language_confidence", pa.float32()),
        ("published_at", _UTC_MICROS),
        ("ingested_at", _UTC_MICROS),
        ("word_count", pa.int32()),
        ("reading_minutes", pa.float32()),
        ("keywords", pa.list_(pa.string())),
        ("entities", pa.list_(ENTITY_TYPE)),
        ("content_hash", pa.string()),
        ("dup_bands", pa.list_(pa.int64())),
        ("batch_id", pa.string()),
    ]
)

REJECT_SCHEMA = pa.schema(
    [
        ("object_key", pa.string()),
        ("object_etag", pa.string()),
        ("line_number", pa.int32()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("stage_error", pa.bool_()),
        ("ingested_at", _UTC_MICROS),
        ("batch_id", pa.string()),
    ]
)

# `ledger` table: one row per object version a batch writes, first as an intent (`done`
# false, before the batch's data commits), then as done; the newest done row per key is
# what the lake holds for that object now (tasks/lake/ledger.py).
LEDGER_SCHEMA = pa.schema(
    [
        ("object_fingerprint", pa.binary()),  # blake2b-128 of key and ETag
        ("object_key", pa.string()),
        ("object_etag", pa.string()),
        ("batch_id", pa.string()),
        ("committed_at", _UTC_MICROS),
        ("articles", pa.int32()),
        ("rejects", pa.int32()),
        ("partitions", pa.list_(pa.string())),  # "source=<slug>/date=<YYYY-MM-DD>" of its articles
        ("done", pa.bool_()),
    ]
)

# The Hive partitions of `articles`: values in the path (`source=…/date=…`), not in files.
PARTITION_COLUMNS = ["source", "date"]


def as_utc(moment: datetime) -> datetime:
    """The lake's times are UTC; a time without a zone is taken to be UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def object_fingerprint(key: str, etag: str) -> bytes:
    """16-byte identity of one version of one object, the ledger's lookup key."""
    return hashlib.blake2b(f"{key}\0{etag}".encode(), digest_size=16).digest()


def articles_table(articles: list[Article], *, batch_id: str, ingested_at: datetime) -> pa.Table:
    columns = {
        "article_id": [a.article_id for a in articles],
        "source": [a.source for a in articles],
        "date": [a.date for a in articles],
        "object_key": [a.object_key for a in articles],
        "object_etag": [a.object_etag for a in articles],
        "line_number": [a.line_number for a in articles],
        "url": [a.url for a in articles],
        "title": [a.title for a in articles],
        "author": [a.author for a in articles],
        "text": [a.text for a in articles],
        "language": [a.language for a in articles],
        "language_confidence": [a.language_confidence for a in articles],
        "published_at": [a.published_at for a in articles],
        "ingested_at": [ingested_at] * len(articles),
        "word_count": [a.word_count for a in articles],
        "reading_minutes": [a.reading_minutes for a in articles],
        "keywords": [a.keywords for a in articles],
        "entities": [[{"text": e.text, "label": e.label} for e in a.entities] for a in articles],
        "content_hash": [a.content_hash for a in articles],
        "dup_bands": [a.dup_bands for a in articles],
        "batch_id": [batch_id] * len(articles),
    }
    return pa.Table.from_pydict(columns, schema=ARTICLE_SCHEMA)


def rejects_table(rejects: list[Reject], *, batch_id: str, ingested_at: datetime) -> pa.Table:
    columns = {
        "object_key": [r.object_key for r in rejects],
        "object_etag": [r.object_etag for r in rejects],
        "line_number": [r.line_number for r in rejects],
        "stage": [r.stage for r in rejects],
        "reason": [r.reason for r in rejects],
        "stage_error": [r.stage_error for r in rejects],
        "ingested_at": [ingested_at] * len(rejects),
        "batch_id": [batch_id] * len(rejects),
    }
    return pa.Table.from_pydict(columns, schema=REJECT_SCHEMA)

"""Helpers for tests on the shared development corpus (../shared, never copied here): its
loaders and the benchmark's scoring live in `newsflow.evaluation.corpus`; this adds the seed
article and running the stages in the flow's order."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache

from newsflow.evaluation.corpus import (
    DEFAULT_CORPUS,
    CorpusPage,
    Scores,
    corpus_pages,
    language_sentences,
    match_counts,
    score_extraction,
)
from newsflow.tasks.schema import Article
from newsflow.tasks.settings import Settings
from newsflow.tasks.stages.clean import clean_article
from newsflow.tasks.stages.enrich import enrich_article
from newsflow.tasks.stages.extract import extract_article
from newsflow.tasks.stages.language import detect_article_language

__all__ = [
    "CorpusPage",
    "Scores",
    "corpus_pages",
    "language_sentences",
    "make_article",
    "match_counts",
    "processed_seed",
    "run_stages",
    "score_extraction",
    "seed_text",
]

SEED_ARTICLE = DEFAULT_CORPUS / ".." / "samples" / "seed-article.txt"


def seed_text() -> str:
    return SEED_ARTICLE.read_text(encoding="utf-8")


def make_article(raw: str, content_type: str = "text", **fields: object) -> Article:
    """An article as fetch would hand it to the stages."""
    return Article(
        object_key=str(fields.pop("object_key", "inbox/test/article.txt")),
        object_etag="etag",
        source="test",
        last_modified=datetime(2024, 1, 2, tzinfo=UTC),
        content_type=content_type,  # type: ignore[arg-type]
        raw=raw,
        **fields,  # type: ignore[arg-type]
    )


def run_stages(article: Article, settings: Settings) -> Article:
    """clean → language → extract → enrich, in the flow's order."""
    for stage in (clean_article, detect_article_language, extract_article, enrich_article):
        article = stage(article, settings)
    return article


@cache
def processed_seed() -> Article:
    """The seed article through every stage, once per test session."""
    return run_stages(make_article(seed_text()), Settings())

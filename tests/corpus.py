"""Helpers to read the shared development corpus (../shared, never copied here) and score
extraction the way the Article Extraction Benchmark does, so our figures compare with its.

Scoring: `\\w+` tokens, 4-token shingles as multisets, per-page true/false positives and
false negatives normalised by their sum, precision and recall averaged over pages, F1 the
harmonic mean of the two averages.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from tasks.clean import clean_article
from tasks.enrich import enrich_article
from tasks.extract import extract_article
from tasks.language import detect_article_language
from tasks.schema import Article
from tasks.settings import Settings

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
ARTICLES = SHARED / "corpus" / "articles"
LANGUAGES = SHARED / "corpus" / "languages"
SEED_ARTICLE = SHARED / "samples" / "seed-article.txt"

_TOKEN = re.compile(r"\w+")


@dataclass(frozen=True, slots=True)
class CorpusPage:
    page_id: str
    html: str
    body: str
    url: str


@dataclass(frozen=True, slots=True)
class Scores:
    precision: float
    recall: float
    f1: float


def seed_text() -> str:
    return SEED_ARTICLE.read_text(encoding="utf-8")


@cache
def corpus_pages() -> tuple[CorpusPage, ...]:
    """The benchmark pages in a fixed order (sorted by id), with their ground truth."""
    truth = json.loads((ARTICLES / "ground-truth.json").read_text(encoding="utf-8"))
    return tuple(
        CorpusPage(
            page_id=page_id,
            html=(ARTICLES / "html" / f"{page_id}.html").read_text(encoding="utf-8"),
            body=truth[page_id]["articleBody"],
            url=truth[page_id].get("url", ""),
        )
        for page_id in sorted(truth)
    )


def language_sentences(code: str) -> list[str]:
    """The 200 sentences of one language, in file order."""
    path = LANGUAGES / f"{code}.txt"
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _shingles(text: str, n: int = 4) -> Counter[tuple[str, ...]]:
    tokens = _TOKEN.findall(text or "")
    return Counter(tuple(tokens[i : i + n]) for i in range(max(1, len(tokens) - n + 1)))


def match_counts(true: str, pred: str) -> tuple[float, float, float]:
    """Shingle true positives, false positives and false negatives, normalised to sum to 1
    so that long pages weigh no more than short ones."""
    truth, predicted = _shingles(true), _shingles(pred)
    truth.pop((), None)
    predicted.pop((), None)
    tp = sum((truth & predicted).values())
    fp = sum((predicted - truth).values())
    fn = sum((truth - predicted).values())
    total = tp + fp + fn
    return (tp / total, fp / total, fn / total) if total else (0.0, 0.0, 0.0)


def _precision(tp: float, fp: float, fn: float) -> float:
    if fp == fn == 0:
        return 1.0
    return tp / (tp + fp) if tp + fp else 0.0


def _recall(tp: float, fp: float, fn: float) -> float:
    if fp == fn == 0:
        return 1.0
    return tp / (tp + fn) if tp + fn else 0.0


def score_extraction(pairs: list[tuple[str, str]]) -> Scores:
    """Benchmark scores over (ground truth, prediction) pairs."""
    counts = [match_counts(true, pred) for true, pred in pairs]
    precision = statistics.mean(_precision(*c) for c in counts if c[0] + c[1] > 0)
    recall = statistics.mean(_recall(*c) for c in counts if c[0] + c[2] > 0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Scores(precision, recall, f1)


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
    """The seed article through every stage, once per test session (spaCy is slow)."""
    return run_stages(make_article(seed_text()), Settings())

"""The shared development corpus (`../shared/corpus`, never copied into the repository)
and the Article Extraction Benchmark's scoring method, so our figures compare with its.

Scoring: `\\w+` tokens, 4-token shingles as multisets, per-page true/false positives and
false negatives normalised by their sum, precision and recall averaged over pages, F1 the
harmonic mean of the two averages.
"""

from __future__ import annotations

import hashlib
import json
import re
import statistics
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path


def _find_corpus() -> Path:
    """`../shared/corpus` beside the checkout: next to the working directory (an installed
    package lives in site-packages, away from it) or to the source files."""
    checkouts = (Path.cwd(), Path(__file__).resolve().parents[1])
    candidates = [checkout.parent / "shared" / "corpus" for checkout in checkouts]
    return next((c for c in candidates if c.is_dir()), candidates[0])


DEFAULT_CORPUS = _find_corpus()

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

    @classmethod
    def of(cls, precision: float, recall: float) -> Scores:
        """With F1, the harmonic mean of the two (0 when both are)."""
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return cls(precision, recall, f1)


@cache
def corpus_pages(corpus: Path = DEFAULT_CORPUS) -> tuple[CorpusPage, ...]:
    """The benchmark pages in a fixed order (sorted by id), with their ground truth."""
    articles = corpus / "articles"
    truth = json.loads((articles / "ground-truth.json").read_text(encoding="utf-8"))
    return tuple(
        CorpusPage(
            page_id=page_id,
            html=(articles / "html" / f"{page_id}.html").read_text(encoding="utf-8"),
            body=truth[page_id]["articleBody"],
            url=truth[page_id].get("url", ""),
        )
        for page_id in sorted(truth)
    )


def split_pages(
    pages: tuple[CorpusPage, ...],
) -> tuple[list[CorpusPage], list[CorpusPage]]:
    """(development, confirmation) halves, each in id order: pages ordered by a hash of
    their id, the first half develops, the second confirms. Deterministic and blind to
    content, so neither half is easier by construction."""
    order = sorted(
        pages, key=lambda p: hashlib.blake2b(p.page_id.encode(), digest_size=16).digest()
    )
    development = {p.page_id for p in order[: len(order) // 2]}
    return (
        [p for p in pages if p.page_id in development],
        [p for p in pages if p.page_id not in development],
    )


def language_codes(corpus: Path = DEFAULT_CORPUS) -> list[str]:
    """The corpus's languages, by file name (ISO 639-1; `nb` for Norwegian Bokmål)."""
    return sorted(path.stem for path in (corpus / "languages").glob("*.txt") if path.stem.islower())


def language_sentences(code: str, corpus: Path = DEFAULT_CORPUS) -> list[str]:
    """The 200 sentences of one language, in file order."""
    path = corpus / "languages" / f"{code}.txt"
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
    return Scores.of(precision, recall)

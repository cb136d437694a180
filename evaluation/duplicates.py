"""Near-duplicate error rates on pairs built from the corpus's ground-truth bodies.

Copies: each story as another site would run it (its own byline and footer, a paragraph
cut, a share of words changed), and the clean stage's extraction of the page beside its
ground truth. Different stories: every pair of distinct bodies. A pair is grouped when
the two texts share an LSH band, as a query on the lake's `dup_bands` would find them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

from newsflow.evaluation.corpus import DEFAULT_CORPUS, corpus_pages
from newsflow.tasks.stages.clean import clean_html
from newsflow.tasks.stages.enrich import duplicate_bands

# Bodies shorter than this are captions and listings, not stories a wire syndicates.
MIN_STORY_WORDS = 80
# Light edits (2 %) and heavier ones (5 %): a copy-editor's changes, not a rewrite.
EDIT_RATES = (0.02, 0.05)
_FILLER_WORD = "reportedly"


@dataclass(frozen=True, slots=True)
class DuplicateRates:
    stories: int
    missed_copies: dict[str, float]  # kind of copy -> share not grouped with its original
    different_pairs: int
    false_groupings: float  # share of different-story pairs grouped


def syndicated_copy(text: str, edit_rate: float, seed: int) -> str:
    """The same story under other page furniture: a byline and footer of its own, one
    paragraph cut, and `edit_rate` of the words changed."""
    rng = random.Random(seed)
    words = [w if rng.random() >= edit_rate else _FILLER_WORD for w in text.split(" ")]
    paragraphs = " ".join(words).split("\n")
    if len(paragraphs) > 3:
        del paragraphs[rng.randrange(len(paragraphs))]
    return "\n".join(
        ["By the wire desk | Example News", *paragraphs, "© 2024 Example News. Follow us."]
    )


def _grouped(a: set[int], b: set[int]) -> bool:
    return bool(a & b)


def evaluate_duplicates(corpus: Path = DEFAULT_CORPUS) -> DuplicateRates:
    pages = [p for p in corpus_pages(corpus) if len(p.body.split()) >= MIN_STORY_WORDS]
    bands = [set(duplicate_bands(p.body)) for p in pages]
    missed: dict[str, float] = {}
    for rate in EDIT_RATES:
        copies = [
            set(duplicate_bands(syndicated_copy(p.body, rate, seed=i))) for i, p in enumerate(pages)
        ]
        misses = sum(not _grouped(a, b) for a, b in zip(bands, copies, strict=True))
        missed[f"copy, {rate:.0%} of words edited"] = misses / len(pages)
    extracted = [set(duplicate_bands(clean_html(p.html)[0])) for p in pages]
    misses = sum(not _grouped(a, b) for a, b in zip(bands, extracted, strict=True))
    missed["extracted page vs ground truth"] = misses / len(pages)
    pairs = list(combinations(range(len(pages)), 2))
    false = sum(_grouped(bands[i], bands[j]) for i, j in pairs)
    return DuplicateRates(
        stories=len(pages),
        missed_copies=missed,
        different_pairs=len(pairs),
        false_groupings=false / len(pairs),
    )

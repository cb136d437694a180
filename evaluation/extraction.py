"""Body-text extraction scored like the Article Extraction Benchmark: saved HTML through
the clean stage, and the same pages rendered to plain text with all their navigation,
menus and footers (what a scraper hands over) through the scraped-text rules."""

from __future__ import annotations

from dataclasses import dataclass

import lxml.html
from newsflow.evaluation.corpus import CorpusPage, Scores, score_extraction, split_pages
from newsflow.tasks.stages.clean import BLOCK_TAGS, clean_html, clean_scraped_text

# Elements whose text no reader sees.
_INVISIBLE = ("script", "style", "noscript", "template", "svg", "head")
# A whole page's blocks: the article's, plus the page furniture a scraper also keeps.
_BLOCKS = BLOCK_TAGS | {"header", "footer", "nav", "aside", "main", "form"}


@dataclass(frozen=True, slots=True)
class HalfScores:
    development: Scores
    confirmation: Scores
    overall: Scores


def render_page_text(html: str) -> str:
    """The whole visible text of a page, one line per block element, as a scraper that
    keeps everything would save it: headers, menus, share bars and footers included."""
    root = lxml.html.fromstring(html)
    for element in list(root.iter(*_INVISIBLE)):
        element.drop_tree()
    for element in root.iter():
        if isinstance(element.tag, str) and element.tag in _BLOCKS:
            element.tail = "\n" + (element.tail or "")
            element.text = "\n" + (element.text or "")
    lines = (" ".join(line.split()) for line in root.text_content().split("\n"))
    return "\n".join(line for line in lines if line)


def _halves(pages: tuple[CorpusPage, ...], predictions: dict[str, str]) -> HalfScores:
    development, confirmation = split_pages(pages)

    def score(subset: list[CorpusPage] | tuple[CorpusPage, ...]) -> Scores:
        return score_extraction([(p.body, predictions[p.page_id]) for p in subset])

    return HalfScores(score(development), score(confirmation), score(pages))


def evaluate_html(pages: tuple[CorpusPage, ...]) -> HalfScores:
    """The clean stage on the saved pages."""
    return _halves(pages, {p.page_id: clean_html(p.html)[0] for p in pages})


def evaluate_scraped(pages: tuple[CorpusPage, ...]) -> tuple[HalfScores, HalfScores]:
    """(uncleaned, cleaned) scores of the pages rendered to plain text: what the
    scraped-text rules remove, and what remains to remove."""
    rendered = {p.page_id: render_page_text(p.html) for p in pages}
    cleaned = {key: clean_scraped_text(text)[0] for key, text in rendered.items()}
    return _halves(pages, rendered), _halves(pages, cleaned)

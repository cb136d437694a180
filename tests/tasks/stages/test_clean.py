"""Clean stage: the seed article as a golden test, the scraped-text and post-extraction
rules on small inputs, and hostile input. Extraction quality on the shared corpus is in
the evaluation gate (tests/evaluation)."""

from __future__ import annotations

import re

import lxml.html
import pytest
from newsflow.tasks.schema import Article, RejectedArticle
from newsflow.tasks.settings import Settings
from newsflow.tasks.stages.clean import (
    ELEMENT_LOOKUP,
    ReadabilityForText,
    clean_article,
    clean_html,
    clean_scraped_text,
    cut_footer,
    dedupe_paragraphs,
    drop_captions,
    drop_link_paragraphs,
    drop_page_header,
    drop_title_lines,
    normalise_field,
    normalise_text,
    split_breadcrumb,
)
from newsflow.tasks.stages.enrich import enrich_article
from newsflow.tasks.stages.extract import extract_article
from newsflow.tasks.stages.language import detect_article_language
from readability import Document as Readability
from trafilatura.utils import HTML_PARSER, load_html

from tests.corpus import (
    corpus_pages,
    language_sentences,
    make_article,
    processed_seed,
    seed_text,
)

SEED_TITLE = (
    "The Governments of Russia and Cuba agree to fight against Western "
    "\u201cinterference\u201d and \u201cextremism\u201d"
)
# A distinctive phrase of each passage the seed repeats as a pull quote.
SEED_REPEATED = [
    "International Criminal Police Organization or International Police",
    "Under this law, which includes a list of organizations",
    "The Russian minister delighted the Cuban leaders",
]


def _seed_body_paragraphs() -> list[str]:
    """The seed's real paragraphs, read from the file itself: those between the title line
    and the underscore rule, less the three that a neighbour contains."""
    paragraphs = [p.strip() for p in seed_text().split("\n\n") if p.strip()]
    start = paragraphs.index(SEED_TITLE) + 1
    end = next(i for i, p in enumerate(paragraphs) if re.fullmatch(r"_{4,}", p))
    body = paragraphs[start:end]
    return [p for p in body if not any(p != other and p in other for other in body)]


# --- the seed ---------------------------------------------------------------------------


def test_seed_title_is_the_breadcrumb_title() -> None:
    assert processed_seed().title == SEED_TITLE


@pytest.mark.parametrize(
    "furniture", ["Home \u00bb", "Collaborate with our work", "Leave a Comment", "Akismet", "____"]
)
def test_seed_furniture_is_gone(furniture: str) -> None:
    assert furniture not in processed_seed().text


def test_seed_title_line_is_not_in_the_body() -> None:
    assert SEED_TITLE not in processed_seed().text


@pytest.mark.parametrize("phrase", SEED_REPEATED)
def test_seed_repeated_passages_appear_once(phrase: str) -> None:
    assert processed_seed().text.count(phrase) == 1


def test_seed_keeps_every_real_paragraph_in_order() -> None:
    expected = _seed_body_paragraphs()
    assert expected[0].startswith("The visit of the Russian Interior Minister")
    assert expected[-1].endswith("Russian oligarchies.")
    assert len(expected) == 14
    assert processed_seed().text.split("\n\n") == expected


# --- scraped-text rules -----------------------------------------------------------------


def test_normalise_text_repairs_mojibake_and_keeps_curly_quotes() -> None:
    text = "Caf\u00c3\u00a9  \u201cquoted\u201d\r\n\r\n\r\n  second\tparagraph \u00a0 "
    assert normalise_text(text) == "Caf\u00e9 \u201cquoted\u201d\n\nsecond paragraph"


def test_normalise_text_joins_hard_wrapped_lines_inside_blank_line_paragraphs() -> None:
    assert normalise_text("one\ntwo\n\nthree") == "one two\n\nthree"
    assert normalise_text("one\ntwo\nthree") == "one\n\ntwo\n\nthree"


def test_normalise_field_collapses_whitespace_and_empties_to_none() -> None:
    assert normalise_field("  A\n title\u00a0 ") == "A title"
    assert normalise_field(" \n ") is None
    assert normalise_field(None) is None


@pytest.mark.parametrize(
    ("line", "title"),
    [
        ("Home \u00bb today \u00bb News \u00bb Storm hits the coast", "Storm hits the coast"),
        ("Inicio \u203a Internacional \u203a Tormenta en la costa", "Tormenta en la costa"),
        ("Home > World > Europe > Storm hits the coast", "Storm hits the coast"),
        ("Startseite \u00bb Sturm an der K\u00fcste\u2026", "Sturm an der K\u00fcste"),
    ],
)
def test_breadcrumb_is_dropped_and_gives_the_title(line: str, title: str) -> None:
    assert split_breadcrumb([line, "Body."]) == (["Body."], title)


@pytest.mark.parametrize(
    "line",
    [
        "Prices rose 3 > 2 percent / year | analysts said so on Monday in a long note",
        "The ratio is 1 / 2 and nothing more.",
        "Plain first paragraph of an article.",
    ],
)
def test_prose_is_not_a_breadcrumb(line: str) -> None:
    assert split_breadcrumb([line, "Body."]) == ([line, "Body."], None)


def test_title_line_is_dropped_and_a_truncated_title_completed() -> None:
    body = ["Storm hits the coast, leaving thousands without power", "Text."]
    assert drop_title_lines(body, "Storm hits the coast") == (["Text."], body[0])
    assert drop_title_lines(["STORM HITS THE COAST", "Text."], "Storm hits the coast") == (
        ["Text."],
        "Storm hits the coast",
    )


def test_scraped_text_without_breadcrumb_takes_a_headline_shaped_first_line() -> None:
    body = "A storm hit the coast, officials said.\n\nMore rain is expected tonight."
    assert clean_scraped_text(f"Big storm hits the coast\n\n{body}") == (
        body,
        "Big storm hits the coast",
    )
    sentence = f"{body}\n\nRoads stay closed until Friday."
    assert clean_scraped_text(sentence) == (sentence, None)


def test_menus_and_link_lists_around_the_prose_are_dropped() -> None:
    prose = [
        "A storm hit the coast on Monday night, officials said, leaving thousands of homes "
        "without power and closing the main road north.",
        "Crews worked through the night to clear fallen trees.",
        "More rain is expected on Wednesday, forecasters said, though winds should ease "
        "by the weekend across the region.",
    ]
    menu = ["Home", "World", "Business", "Sport", "Weather"]
    links = ["Most read", "Ten things to do", "Bridge reopens", "Local team wins"]
    text = "\n\n".join(menu + prose + links)
    assert clean_scraped_text(text)[0] == "\n\n".join(prose)


@pytest.mark.parametrize("code", ["ja", "zh"])
def test_menus_around_prose_without_spaces_are_dropped(code: str) -> None:
    """Chinese and Japanese lines have no spaces to count words by, nor a Latin full stop."""
    sentences = language_sentences(code)[:40]
    prose = ["".join(sentences[i : i + 4]) for i in range(0, 40, 4)]
    menu = ["Home", "World News Today", "Business and Markets", "Sport results"]
    links = ["Most read", "Ten things to do this weekend", "Bridge reopens after repairs"]
    text = "\n\n".join(menu + prose + links)
    assert clean_scraped_text(text)[0] == normalise_text("\n\n".join(prose))


def test_headline_standfirst_and_caption_above_the_byline_are_dropped() -> None:
    """The byline and date line stay at the top, where the extract stage reads them."""
    prose = [
        "A storm hit the coast on Monday night, officials said, leaving thousands of homes "
        "without power and closing the main road north of the city for most of the day.",
        "Crews worked through the night to clear fallen trees from the roads and railway.",
        "More rain is expected on Wednesday, forecasters said, though winds should ease "
        "by the weekend across the region and the roads are expected to reopen on Friday.",
    ]
    head = [
        "Storm hits the coast",
        "Thousands are without power after the worst storm in a decade hit on Monday.",
        "Fallen trees block the main road north of the city on Tuesday morning.",
        "By Jane Doe",
        "November 19, 2019, 9:02 AM",
    ]
    raw = "\n\n".join(["Home", "News", *head, *prose])
    assert clean_scraped_text(raw)[0] == "\n\n".join(head[3:] + prose)
    article = make_article(raw)
    for stage in (clean_article, detect_article_language, extract_article):
        article = stage(article, Settings())
    assert article.author == "Jane Doe"
    assert article.published_at is not None
    assert article.published_at.date().isoformat() == "2019-11-19"


def test_a_comment_thread_after_the_article_is_cut_however_long() -> None:
    prose = [
        f"Paragraph {i} of the article says what happened on Monday, who was there, and why "
        "it matters to the people of the town and to the council."
        for i in range(3)
    ]
    comment = (
        "I think this is the right call, and I have said so for years at every meeting of "
        "the council, though nobody listened to me then."
    )
    thread = ["[ 167 comments ]", "Top Rated Comments"] + [
        line for i in range(8) for line in (f"user{i}", "2 days ago at 07:52 am", comment)
    ]
    assert clean_scraped_text("\n\n".join(["Home", *prose, *thread]))[0] == "\n\n".join(prose)


def test_a_related_box_inside_the_article_does_not_end_it() -> None:
    prose = [
        f"Paragraph {i} of the article says what happened on Monday, who was there, and why "
        "it matters to the people of the town and to the council."
        for i in range(6)
    ]
    box = ["Related articles", "Council meets on Friday"]
    text = "\n\n".join(["Home", *prose[:3], *box, *prose[3:]])
    kept = clean_scraped_text(text)[0].split("\n\n")
    assert [p for p in kept if p in prose] == prose


def _teaser(i: int) -> str:
    return (
        f"Teaser {i} sums up another story on the site in thirty words or so, with enough "
        "of its opening to tempt a reader to follow the link and read the rest of it"
    )


STORY = [
    f"Paragraph {i} of the article says what happened on Monday, who was there, and why it "
    "matters to the town."
    for i in range(3)
]


def test_a_ticker_shown_above_and_below_the_article_is_not_the_article() -> None:
    """The ticker outweighs the article, but a page shows its article once; prose it also
    shows outside the chosen stretch is a widget."""
    ticker = [line for i in range(5) for line in (f"Headline {i} of the ticker", _teaser(i))]
    menu = [f"Section {i}" for i in range(30)]
    text = "\n\n".join(["Home", *ticker, *STORY, *menu, *ticker])
    assert clean_scraped_text(text)[0] == "\n\n".join(STORY)


def test_the_passage_does_not_run_across_a_copyright_notice() -> None:
    """The grid of teasers after the page's copyright line would add to the article's
    stretch, net of its short lines; a photo credit with a year inside the article is not
    that line."""
    photo = ["Crews clear a fallen tree.", "Photo: \u00a9 2019 Ann Roe/Getty Images"]
    story = [*STORY[:2], *photo, STORY[2]]
    grid = [line for i in range(2) for line in (f"Story {i}", _teaser(i), "2H ago")]
    text = "\n\n".join(["Home", *story, "\u00a9 2019 Example Media. All rights reserved.", *grid])
    assert clean_scraped_text(text)[0] == "\n\n".join(STORY)


def test_a_stock_quote_is_not_a_date_line() -> None:
    """A date uses one separator throughout; "225.86-12.99-5.44%" is a price, so the
    paragraph above it is not a header to drop."""
    quote = "EXMP EXAMPLE STORES INC. 225.86-12.99-5.44%"
    text = "\n\n".join(["Home", STORY[0], quote, *STORY[1:]])
    assert clean_scraped_text(text)[0] == "\n\n".join([STORY[0], quote, *STORY[1:]])
    standfirst = "Thousands are without power after the worst storm in a decade hit the town."
    dated = "\n\n".join(["Home", "Storm hits the coast", standfirst, "19.11.2019", *STORY])
    assert clean_scraped_text(dated)[0] == "\n\n".join(["19.11.2019", *STORY])


def test_photo_captions_are_dropped() -> None:
    body = [
        "First paragraph.",
        "Protesters marched on Monday (Image: GETTY )",
        "Second paragraph.",
        "Officials handed out masks to schoolchildren amid the smog.",
        "Jane Roe/Hindustan Times/Getty Images",
        "Third paragraph.",
        "He did not win.Credit...Doug Mills/The New York Times",
    ]
    assert drop_captions(body) == ["First paragraph.", "Second paragraph.", "Third paragraph."]


def test_stated_title_wins_over_the_breadcrumb() -> None:
    text = "Home \u00bb News \u00bb Short crumb\n\nStated title\n\nBody text of the article."
    assert clean_scraped_text(text, "Stated title") == ("Body text of the article.", "Stated title")


LONG = (
    "The minister said the agreement covers training, equipment and exchanges of experts "
    "from Moscow"
)


def test_pull_quote_contained_in_a_neighbour_is_dropped_either_side() -> None:
    quote = "the agreement covers training, equipment and exchanges of experts from Moscow"
    before = ["Intro.", f"\u201c{quote.capitalize()}\u201d", f"{LONG} from 2024.", "End."]
    after = ["Intro.", f"{LONG} from 2024.", f"{quote}\u2026", "End."]
    assert dedupe_paragraphs(before) == ["Intro.", f"{LONG} from 2024.", "End."]
    assert dedupe_paragraphs(after) == ["Intro.", f"{LONG} from 2024.", "End."]


def test_repeated_paragraph_is_kept_once_at_its_first_position() -> None:
    assert dedupe_paragraphs([LONG, "Other.", LONG, "End."]) == [LONG, "Other.", "End."]
    assert dedupe_paragraphs(["Same.", "Same.", "End."]) == ["Same.", "End."]


def test_short_repeats_and_distant_repeats_are_content() -> None:
    listing = ["Phone for $200", "See it now: Amazon", "Speaker for $400", "See it now: Amazon"]
    assert dedupe_paragraphs(listing) == listing
    distant = [LONG, "a.", "b.", "c.", "d.", LONG]
    assert dedupe_paragraphs(distant) == distant
    short_inside = ["Yes indeed.", "He said yes indeed and went home after the long meeting."]
    assert dedupe_paragraphs(short_inside) == short_inside


@pytest.mark.parametrize(
    "footer",
    [
        ["________________________", "Collaborate with our work:", "We invite you to support us."],
        ["Leave a Comment", "This site uses Akismet to reduce spam. Learn how."],
        ["Share this:", "Twitter", "Facebook"],
        ["Related articles", "Another story entirely"],
        ["Deja un comentario", "Tu correo no ser\u00e1 publicado."],
        ["Laisser un commentaire"],
        ["Lascia un commento"],
        ["\u041f\u043e\u0434\u0435\u043b\u0438\u0442\u044c\u0441\u044f"],
        ["Your email address will not be published. Required fields are marked *"],
    ],
)
def test_footer_is_cut(footer: list[str]) -> None:
    body = [f"Paragraph {i} of the article, long enough to be prose." for i in range(4)]
    assert cut_footer(body + footer) == body


def test_furniture_inside_the_body_is_dropped_without_cutting() -> None:
    body = ["First paragraph.", "Share on Facebook", "Second paragraph.", "Third paragraph."]
    assert cut_footer(body) == ["First paragraph.", "Second paragraph.", "Third paragraph."]
    body = ["One.", "Two.", "Three.", "Read more: Another headline", "Four.", "\u00a9 Reuters"]
    assert cut_footer(body) == ["One.", "Two.", "Three.", "Four."]


def test_ad_slot_labels_are_dropped_without_cutting() -> None:
    body = ["One.", "Advertisement", "Two.", "ADVERTISEMENT", "Three.", "Continue Reading Below"]
    assert cut_footer([*body, "Anzeige", "Four."]) == ["One.", "Two.", "Three.", "Four."]


def test_prose_starting_like_a_marker_is_kept() -> None:
    body = [
        "One.",
        "Two.",
        "Share prices fell sharply on Monday after the company warned that profits would "
        "miss expectations for the third quarter running.",
    ]
    assert cut_footer(body) == body


def test_stated_fields_are_normalised_and_kept() -> None:
    article = make_article(
        "Body text of an article that is long enough to pass the minimum length rule here.",
        title="  Stated\n title ",
        author="Caf\u00c3\u00a9 Writer",
        url=" https://example.com/a ",
    )
    clean_article(article, Settings())
    assert (article.title, article.author, article.url) == (
        "Stated title",
        "Caf\u00e9 Writer",
        "https://example.com/a",
    )


# --- HTML ------------------------------------------------------------------------------


def test_html_metadata_is_read_for_the_extract_stage() -> None:
    page = corpus_pages()[0]
    _text, metadata = clean_html(page.html)
    assert metadata["title"].startswith("Google Stadia, Microsoft xCloud, Apple Arcade")
    assert metadata["date"] == "2019-11-19"
    assert metadata["url"].startswith("https://www.wsj.com/articles/")


def test_pages_are_parsed_with_the_c_element_lookup() -> None:
    form = load_html("<html><body><form><input name='q'></form><p>Text</p></body></html>")
    assert type(form.find(".//form")) is type(form.find(".//p")) is lxml.html.HtmlElement


def test_the_c_element_lookup_cleans_every_corpus_page_as_lxml_html_does() -> None:
    """77 of the 88 pages have forms or inputs, the only elements the lookups tell apart."""
    pages = [page.html for page in corpus_pages()]
    ours = [clean_html(html) for html in pages]
    HTML_PARSER.set_element_class_lookup(lxml.html.HtmlElementClassLookup())
    try:
        theirs = [clean_html(html) for html in pages]
    finally:
        HTML_PARSER.set_element_class_lookup(ELEMENT_LOOKUP)
    assert sum(bool(text) for text, _metadata in ours) >= 80
    assert ours == theirs


def _summary_text(document: Readability) -> str:
    return lxml.html.fromstring(document.summary(html_partial=True)).text_content()


def test_readability_without_its_javascript_pass_reads_every_corpus_page_the_same() -> None:
    for page in corpus_pages():
        ours = _summary_text(ReadabilityForText(load_html(page.html)))
        assert ours.strip()
        assert ours == _summary_text(Readability(load_html(page.html))), page.page_id


@pytest.mark.parametrize(
    "title",
    [
        "Storm hits the coast",
        "Storm hits the coast | Example News",
        "Opinion | Storm hits the coast",
    ],
)
def test_headline_and_its_standfirst_come_off_the_top(title: str) -> None:
    standfirst = "Thousands are without power after the worst storm in a decade."
    body = ["Storm hits the coast", standfirst, "A storm hit the coast on Monday.", "More."]
    assert drop_page_header(body, title, standfirst) == body[2:]


def test_a_lead_that_is_the_description_stays_without_a_headline_above() -> None:
    body = ["A storm hit the coast on Monday, officials said.", "More."]
    assert drop_page_header(body, "Storm hits the coast", body[0]) == body


def test_paragraphs_that_are_a_whole_link_are_dropped() -> None:
    links = frozenset({"sean spicer eliminated from the show", "dawson s creek"})
    body = ["Intro.", "SEAN SPICER ELIMINATED FROM THE SHOW", "Dawson's Creek", "End."]
    assert drop_link_paragraphs(body, links) == ["Intro.", "Dawson's Creek", "End."]


def test_a_link_showing_its_own_address_is_kept() -> None:
    """A bare address under a list item was pasted in by the author, not a headline."""
    links = frozenset({"http example com 2ab3cd", "www example com offers"})
    body = ["1) A toy train", "http://example.com/2ab3cd", "www.example.com/offers", "End."]
    assert drop_link_paragraphs(body, links) == body


def test_newsletter_boxes_and_wire_credits_are_dropped_without_cutting() -> None:
    body = [
        "First paragraph.",
        "Pick Six Newsletter",
        "Get the day's big stories and fun stuff you love, delivered to your inbox.",
        "Get Example Monthly delivered through your letterbox. 12 issues for \u00a311.99.",
        "Second paragraph.",
        "Third paragraph.",
        "Reporting by Jane Doe; additional reporting by John Roe, Ann Poe and Bob Loe; "
        "Editing by Max Moe and Liz Low",
    ]
    assert cut_footer(body) == ["First paragraph.", "Second paragraph.", "Third paragraph."]


# --- hostile input ----------------------------------------------------------------------

HOSTILE = {
    "empty text": ("", "text"),
    "whitespace text": (" \n\t\u00a0\n ", "text"),
    "empty html": ("", "html"),
    "html without text": ("<html><head><title>x</title></head><body></body></html>", "html"),
    "html of scripts": (
        "<html><body>" + "<script>var a = 1;</script>" * 50 + "</body></html>",
        "html",
    ),
    "nested divs": ("<div>" * 10_000 + "Deep text." + "</div>" * 10_000, "html"),
    "binary as text": (bytes(range(256)).decode("latin-1") * 20, "text"),
    "binary as html": (bytes(range(256)).decode("latin-1") * 20, "html"),
    "nul bytes": ("\x00" * 500, "text"),
    "markup debris": ("<<<>>> ||| ### 12345 %%% " * 40, "text"),
    "unclosed tags": ("<p>" * 500 + "<b>Bold words but", "html"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_input_is_rejected_or_becomes_an_article(name: str) -> None:
    raw, content_type = HOSTILE[name]
    settings = Settings()
    article = make_article(raw, content_type)
    try:
        for stage in (clean_article, detect_article_language, extract_article, enrich_article):
            article = stage(article, settings)
    except RejectedArticle as rejected:
        assert rejected.reason
    else:
        assert isinstance(article, Article)
        assert len(article.text) >= settings.min_text_chars


@pytest.mark.parametrize(
    "name", ["empty text", "whitespace text", "html without text", "nul bytes"]
)
def test_no_text_is_rejected_with_a_reason(name: str) -> None:
    raw, content_type = HOSTILE[name]
    with pytest.raises(RejectedArticle, match="no article text"):
        clean_article(make_article(raw, content_type), Settings())


def test_stated_title_at_the_start_of_the_body_keeps_the_body() -> None:
    """A first sentence that begins with the stated title's words is body, not a headline
    (taken for an over-long title, the whole text would be dropped)."""
    body = (
        "Story 2 version 1. The harbour strike in Rotterdam went on for a second week.\n\n"
        "Talks between the union and the terminal operators stalled again on Monday."
    )
    text, title = clean_scraped_text(body, "Story 2")
    assert (text, title) == (body, "Story 2")

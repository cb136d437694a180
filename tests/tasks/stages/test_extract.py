"""Extract stage: metadata precedence, dates and bylines from text, and named entities on
the seed article: the English model, and the rules other Latin-script languages get."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from functools import partial

import pytest
from newsflow.tasks.settings import Settings
from newsflow.tasks.stages import entities
from newsflow.tasks.stages.extract import (
    MIN_CONFIDENCE,
    author_from_text,
    date_from_text,
    extract_article,
    find_entities,
    find_mentions,
    parse_date,
    rule_mentions,
    token_hints,
)

from tests.corpus import corpus_pages, make_article, processed_seed, run_stages

SEED_PEOPLE = ["Kolokoltsev", "Díaz-Canel", "Raúl Castro", "Boris Titov", "Putin"]
SEED_PLACES = ["Havana", "Moscow", "Nicaragua"]


@pytest.mark.parametrize("name", SEED_PEOPLE + SEED_PLACES)
def test_seed_entities_are_found(name: str) -> None:
    assert any(name in entity.text for entity in processed_seed().entities)


@pytest.mark.parametrize(
    "name", ["Vladimir Kolokoltsev", "Kolokoltsev", "Raúl Castro", "Boris Titov", "Putin"]
)
def test_seed_people_are_persons(name: str) -> None:
    labels = {e.label for e in processed_seed().entities if e.text == name}
    assert labels == {"PERSON"}


@pytest.mark.parametrize("name", SEED_PLACES)
def test_seed_places_are_locations(name: str) -> None:
    assert {e.label for e in processed_seed().entities if e.text == name} == {"LOC"}


def test_seed_entities_are_unique_clean_and_in_the_three_labels() -> None:
    entities = processed_seed().entities
    pairs = [(e.text, e.label) for e in entities]
    assert len(pairs) == len(set(pairs))
    assert {e.label for e in entities} <= {"PERSON", "ORG", "LOC"}
    assert not [e.text for e in entities if e.text.endswith(("\u2019s", "'s", "\u2019"))]
    assert not [e.text for e in entities if e.text.lower().startswith("the ")]


def test_mentions_point_at_their_text() -> None:
    article = processed_seed()
    text = f"{article.title}\n\n{article.text}"
    mentions = find_mentions(text, "en")
    assert len(mentions) > 20
    assert all(text[m.start : m.end] == m.text for m in mentions)


def test_threads_tag_side_by_side_as_one_alone() -> None:
    """Small runs run stage tasks in threads: a tagger shared by two of them read another
    line's marginals ("position 32 out of range of 32")."""
    article = processed_seed()
    text = f"{article.title}\n\n{article.text}"
    hints = partial(token_hints, language="en")
    alone = entities.model_mentions(text, "en", hints)
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads take turns as often as they can: races show
    try:
        with ThreadPoolExecutor(8) as pool:
            side_by_side = list(
                pool.map(lambda _: entities.model_mentions(text, "en", hints), range(64))
            )
    finally:
        sys.setswitchinterval(switch_interval)
    assert all(mentions == alone for mentions in side_by_side)


def test_english_has_a_model_and_drops_unsure_organisations() -> None:
    assert entities.model_languages() == {"de", "en"}
    article = processed_seed()
    text = f"{article.title}\n\n{article.text}"
    hints = partial(token_hints, language="en")
    tagged = [m for m in entities.model_mentions(text, "en", hints) if m.label == "ORG"]
    kept = {m.text for m in find_mentions(text, "en") if m.label == "ORG"}
    sure = {m.text for m in tagged if m.confidence >= MIN_CONFIDENCE["ORG"]}
    assert {"NATO", "Facebook", "Cuba-Russia Business Council"} <= kept == sure
    assert {"Western", "International Police"} <= {m.text for m in tagged} - kept


def test_organisations_only_where_a_model_reaches_the_precision() -> None:
    """The Afrikaans article of issue 15 got Town, Maleisië, Lente and Hallo as ORG."""
    text = "Town het gesê dat Maleisië en Lente met Hallo gepraat het. Die Stad Kaapstad wag."
    assert {m.label for m in rule_mentions(text, "af")} >= {"ORG"}
    assert "ORG" not in {e.label for e in find_entities(text, "af")}


def test_tokens_as_conll_cuts_them() -> None:
    line = "The U.S.-based Acme Inc. said Bitar's 10,000 (shares) rose; B. Young left."
    assert [line[a:b] for a, b in entities.tokenize(line)] == [
        "The", "U.S.", "-", "based", "Acme", "Inc.", "said", "Bitar", "'s", "10,000", "(",
        "shares", ")", "rose", ";", "B.", "Young", "left", ".",
    ]  # fmt: skip


def test_tags_become_mentions_without_possessives() -> None:
    line = "Putin's aide met John Smith in New York"
    spans = entities.tokenize(line)
    tags = ["B-PER", "I-PER", "O", "O", "B-PER", "I-PER", "O", "B-LOC", "I-LOC"]
    confidences = [0.9, 0.3, 0.99, 0.99, 0.7, 0.6, 0.99, 0.5, 0.4]
    found = entities.tagged_mentions(line, spans, tags, confidences.__getitem__)
    assert [(m.text, m.label, m.confidence) for m in found] == [
        ("Putin", "PERSON", 0.9),  # the possessive's own confidence is not the name's
        ("John Smith", "PERSON", 0.6),
        ("New York", "LOC", 0.4),
    ]


def test_a_surname_alone_is_the_person_and_nationalities_are_no_entities() -> None:
    text = "Police chief Vladimir Kolokoltsev spoke in Moscow.\nRussian officials agreed, said Kolokoltsev."
    found = {(e.text, e.label) for e in find_entities(text, "en")}
    assert ("Kolokoltsev", "PERSON") in found
    assert not [name for name, _label in found if name == "Russian"]


def test_possessives_and_articles_are_trimmed() -> None:
    texts = {e.text for e in find_entities("The talks in London ended. Putin\u2019s plan failed.")}
    assert "Putin" in texts
    assert "London" in texts


def test_entities_stop_at_the_configured_lead() -> None:
    article = make_article("")
    article.language = "en"
    article.text = (
        "Officials met in Paris on Monday. " + "Nothing happened. " * 50 + "Angela Merkel came."
    )
    extract_article(article, Settings(entity_max_chars=200))
    assert [e.text for e in article.entities] == ["Paris"]


def test_entities_in_other_latin_script_languages() -> None:
    article = make_article("")
    article.language = "de"
    article.text = (
        "Bundeskanzler Olaf Scholz traf am Montag in Berlin den französischen Präsidenten."
    )
    extract_article(article, Settings())
    assert {(e.text, e.label) for e in article.entities} == {
        ("Olaf Scholz", "PERSON"),
        ("Berlin", "LOC"),
    }


def test_other_scripts_get_no_entities_rather_than_wrong_ones() -> None:
    article = make_article("")
    article.language = "ru"
    article.text = "Владимир Путин прибыл в Москву в понедельник."
    assert extract_article(article, Settings()).entities == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Officials met Rafael Nadal in Madrid.", {("Rafael Nadal", "PERSON"), ("Madrid", "LOC")}),
        ("US President Donald Trump spoke.", {("US", "LOC"), ("Donald Trump", "PERSON")}),
        ("He spoke to the Interior Ministry on Monday.", {("Interior Ministry", "ORG")}),
        (
            "He sold shares of Ernst & Young, NASA said.",
            {("Ernst & Young", "ORG"), ("NASA", "ORG")},
        ),
        ("A storm hit Washington, DC today.", {("Washington", "LOC"), ("DC", "LOC")}),
        ("The Cuban and Russian delegations met.", set()),
        (
            "It beat the Wild, said coach Bruce Boudreau.",
            {("Wild", "ORG"), ("Bruce Boudreau", "PERSON")},
        ),
    ],
)
def test_entity_rules(text: str, expected: set[tuple[str, str]]) -> None:
    """The rules, which languages without a model get (less their organisations)."""
    assert {(m.text, m.label) for m in rule_mentions(text)} == expected


def test_stated_fields_win_over_page_metadata() -> None:
    stated = datetime(2020, 5, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    article = make_article("", title="Stated", published_at=stated, url="https://a.example/x")
    article.page_metadata = {"title": "Meta", "date": "2019-01-01", "url": "https://b.example"}
    article.language = "und"
    extract_article(article, Settings())
    assert (article.title, article.url) == ("Stated", "https://a.example/x")
    assert article.published_at == datetime(2020, 5, 1, 10, tzinfo=UTC)


def test_page_metadata_fills_missing_fields() -> None:
    article = make_article("")
    article.page_metadata = {
        "title": "Meta title",
        "author": "Jane Doe",
        "date": "2019-11-19",
        "url": "https://example.com/story",
    }
    extract_article(article, Settings())
    assert (article.title, article.author, article.url) == (
        "Meta title",
        "Jane Doe",
        "https://example.com/story",
    )
    assert article.published_at == datetime(2019, 11, 19, tzinfo=UTC)


def test_html_page_gets_its_metadata_end_to_end() -> None:
    page = corpus_pages()[0]
    article = run_stages(make_article(page.html, "html"), Settings(entity_max_chars=0))
    assert article.title is not None
    assert article.title.startswith("Google Stadia, Microsoft xCloud, Apple Arcade")
    assert article.published_at == datetime(2019, 11, 19, tzinfo=UTC)
    assert article.url == page.url


@pytest.mark.parametrize(
    ("text", "language", "expected"),
    [
        ("Headline\n\nPublished: March 5, 2021 10:30 am\n\nBody.", "en", datetime(2021, 3, 5)),
        ("Headline\n\n5 de marzo de 2021\n\nCuerpo.", "es", datetime(2021, 3, 5)),
        ("Headline\n\nUpdated 2022-07-14T08:00:00Z\n\nBody.", "und", datetime(2022, 7, 14, 8)),
        ("Headline\n\n14. Juli 2022\n\nText.", "de", datetime(2022, 7, 14)),
    ],
)
def test_date_from_the_first_lines(text: str, language: str, expected: datetime) -> None:
    assert date_from_text(text, language) == expected.replace(tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    [
        "He said this Wednesday that the plan works.",
        "In 1850 the town was founded, on May 3, 1850, by settlers.",
        "No date here at all.\n\nNor here.",
        "Planned for 1 January 2999.",
    ],
)
def test_no_implausible_or_relative_dates(text: str) -> None:
    assert date_from_text(text, "en") is None


def test_byline_from_the_first_lines() -> None:
    assert author_from_text("Headline\n\nBy Jane Doe | Reuters\n\nBody.") == "Jane Doe"
    assert author_from_text("Titular\n\nPor María de la Cruz\n\nCuerpo.") == "María de la Cruz"
    assert author_from_text("By the way, the minister said nothing.") is None


@pytest.mark.parametrize("value", ["2019-11-19", "2019-11-19T10:00:00+02:00", "2019-11-19 08:00"])
def test_parse_date_is_utc(value: str) -> None:
    parsed = parse_date(value)
    assert parsed is not None
    assert parsed.utcoffset() == timedelta(0)


def test_parse_date_rejects_garbage() -> None:
    assert parse_date("yesterday") is None

"""Enrich stage: counts, keywords, the exact-copy hash and the near-duplicate bands, the
last on copies and different stories built from the shared corpus."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import regex
from newsflow.tasks.settings import Settings
from newsflow.tasks.stages.clean import clean_html
from newsflow.tasks.stages.enrich import (
    BANDS,
    content_hash,
    count_words,
    duplicate_bands,
    enrich_article,
    extract_keywords,
    reading_minutes,
)
from newsflow.tasks.stages.stopwords import yake_stopwords

from tests.corpus import corpus_pages, make_article, processed_seed, run_stages


def _bodies() -> list[str]:
    """Ground-truth bodies of the corpus pages long enough to be stories (80+ words)."""
    return [page.body for page in corpus_pages() if len(page.body.split()) > 80]


def _syndicated_copy(text: str, seed: int) -> str:
    """The same story as another site runs it: its own byline and footer, a paragraph
    cut, and 2 % of the words changed."""
    rng = random.Random(seed)
    words = [w if rng.random() > 0.02 else "reportedly" for w in text.split(" ")]
    paragraphs = " ".join(words).split("\n\n")
    if len(paragraphs) > 3:
        del paragraphs[rng.randrange(len(paragraphs))]
    return "\n\n".join(
        ["By the wire desk | Example News", *paragraphs, "© 2024 Example News. Follow us."]
    )


def test_seed_counts_and_keywords() -> None:
    seed = processed_seed()
    assert 800 < seed.word_count < 950
    assert 3.4 < seed.reading_minutes < 4.2  # 800-950 words at 230 words a minute
    assert len(seed.keywords) == 10
    assert any("Kolokoltsev" in k for k in seed.keywords)
    assert len(seed.content_hash) == 32
    assert len(seed.dup_bands) == BANDS


def test_word_count_counts_each_ideograph() -> None:
    assert count_words("Two words") == 2
    assert count_words("It's 3.5 km\u2014far, 10,000 steps!") == 6
    assert count_words("東京都に住む") == 6
    assert count_words("서울에 산다") == 2


def test_reading_minutes_round_to_a_tenth() -> None:
    assert reading_minutes(230, 230) == 1.0
    assert reading_minutes(100, 230) == 0.4
    assert reading_minutes(0, 230) == 0.0


def test_keywords_follow_the_article_language_and_count() -> None:
    text = (
        "Die Bundesregierung hat am Montag in Berlin ein neues Klimaschutzgesetz beschlossen. "
        "Das Klimaschutzgesetz soll die Emissionen der Industrie bis 2030 halbieren. "
        "Kritiker halten das Klimaschutzgesetz für zu schwach."
    )
    keywords = extract_keywords(text, "de", 5)
    assert 0 < len(keywords) <= 5
    assert "Klimaschutzgesetz" in keywords
    assert not {"die", "das", "der"} & {k.casefold() for k in keywords}
    assert len({k.casefold() for k in keywords}) == len(keywords)
    assert extract_keywords(text, "de", 0) == []
    assert extract_keywords(text, "und", 3)  # a language without stopwords still works


def test_contractions_with_typographic_apostrophes_are_no_keywords() -> None:
    """YAKE splits "n't" off at an ASCII apostrophe only: at a typographic one (U+2019),
    YAKE alone makes "n't" and "n't trust" keywords of this text."""
    text = (
        "Residents say they don\u2019t trust the council\u2019s flood plan. The council\u2019s engineers "
        "haven\u2019t finished the survey, and residents say they\u2019re worried the river won\u2019t "
        "hold. The flood plan goes to a vote on Monday; residents who can\u2019t attend may write "
        "to the council. Engineers say they\u2019ll publish the survey when it\u2019s finished."
    )
    keywords = extract_keywords(text, "en", 10)
    assert {"council", "flood", "plan"} <= set(keywords)
    assert not [k for k in keywords if "\u2019" in k or "'" in k]


def test_a_run_of_apostrophes_gets_no_keywords() -> None:
    assert extract_keywords("'" * 3000, "en", 10) == []
    assert extract_keywords("Flood plan vote. The flood plan.", "en", 3)


def test_content_hash_ignores_case_and_layout_only() -> None:
    text = "The Storm hit.\n\nPeople  left."
    assert content_hash(text) == content_hash("the storm HIT. people left.")
    assert content_hash(text) != content_hash("The storm hit. People stayed.")


def test_duplicate_bands_are_deterministic_int64s() -> None:
    """Stored bands must match across processes and runs (Python salts str hashes per
    process), or articles ingested on different days would never group."""
    text = _bodies()[0]
    bands = duplicate_bands(text)
    elsewhere = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys; from newsflow.tasks.stages.enrich import duplicate_bands; "
            "print(json.dumps(duplicate_bands(sys.stdin.read())))",
        ],
        input=text,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    assert json.loads(elsewhere.stdout) == bands
    assert len(bands) == BANDS
    assert all(-(2**63) <= band < 2**63 for band in bands)
    assert duplicate_bands("") == []
    assert len(duplicate_bands("one")) == BANDS


def test_syndicated_copies_share_a_band() -> None:
    """Measured: 99 % of such copies share a band (5 % of words changed: 92 %)."""
    bodies = _bodies()
    shared = [
        bool(set(duplicate_bands(body)) & set(duplicate_bands(_syndicated_copy(body, i))))
        for i, body in enumerate(bodies)
    ]
    assert sum(shared) / len(shared) >= 0.95


@pytest.mark.parametrize("index", [0, 10, 20, 30])
def test_extracted_page_and_its_ground_truth_share_a_band(index: int) -> None:
    page = [p for p in corpus_pages() if len(p.body.split()) > 80][index]
    assert set(duplicate_bands(page.body)) & set(duplicate_bands(clean_html(page.html)[0]))


def test_different_stories_share_no_band() -> None:
    bands = [set(duplicate_bands(body)) for body in _bodies()]
    collisions = [
        (i, j) for i in range(len(bands)) for j in range(i + 1, len(bands)) if bands[i] & bands[j]
    ]
    assert collisions == []


def test_enrich_article_fills_every_field() -> None:
    article = make_article("")
    article.text = "A storm hit the coast on Monday. Thousands of homes lost power overnight."
    article.title = "Storm hits the coast"
    article.language = "en"
    enrich_article(article, Settings(keyword_count=3))
    assert article.word_count == 13
    assert article.reading_minutes == 0.1
    assert 0 < len(article.keywords) <= 3
    assert article.content_hash == content_hash(article.text)
    assert article.dup_bands == duplicate_bands(article.text)


# The alphabets of the two languages whose yake lists are in legacy encodings.
ALPHABETS = {
    "lt": set("aąbcčdeęėfghiįyjklmnoprsštuųūvzž"),
    "sk": set("aáäbcčdďeéfghiíjklĺľmnňoóôpqrŕsštťuúvwxyýzž"),
}


@pytest.mark.parametrize("language", sorted(ALPHABETS))
def test_legacy_encoded_stopword_lists_decode_to_their_alphabet(language: str) -> None:
    words = yake_stopwords(language)
    assert len(words) > 40
    letters = {c for word in words for c in word if c.isalpha()}
    assert letters <= ALPHABETS[language]
    assert letters & (ALPHABETS[language] - set("abcdefghijklmnopqrstuvwxyz"))


def test_every_stopword_list_is_read() -> None:
    assert {"the", "of"} <= yake_stopwords("en") and "daß" in yake_stopwords("de")
    assert {"apie", "nėra", "čia"} <= yake_stopwords("lt")
    assert {"aký", "avšak", "keď"} <= yake_stopwords("sk")
    assert yake_stopwords("cs") and yake_stopwords("und") == frozenset()


SAMPLES = Path(__file__).resolve().parents[3] / "flows" / "samples"
# The verbs of the demo samples' headlines, which YAKE's n-grams ended keyphrases with
# ("Rotterdam extend", "workers extend", "Róterdam prolongan", "Bundesbahn kündigt").
HEADLINE_VERBS = {"extend", "prolongan", "kündigt"}


def _sample_keywords() -> dict[str, list[str]]:
    """Keyphrases of the demo samples' stories, as the enrich stage gives them."""
    stories = [json.loads((SAMPLES / "huelga.json").read_text(encoding="utf-8"))]
    lines = (SAMPLES / "wire.jsonl").read_text(encoding="utf-8").splitlines()
    stories += [
        json.loads(line) for line in lines if line.startswith(('{"id": "w-1"', '{"id": "w-2"'))
    ]
    languages = {"ed-2026-1187": "es", "w-1": "en", "w-2": "de"}
    found = {
        story["title"]: extract_keywords(
            f"{story['title']}\n\n{story['text']}", languages[story["id"]], 10
        )
        for story in stories
    }
    page = run_stages(make_article((SAMPLES / "port-strike.html").read_text(), "html"), Settings())
    found[page.title or ""] = page.keywords
    return found


def test_no_phrase_ends_with_a_headline_verb_and_no_keyphrase_is_a_stopword() -> None:
    """The verb alone can still be a keyword ("prolongan"): no tagger tells it apart."""
    for title, keywords in _sample_keywords().items():
        assert keywords, title
        for keyword in keywords:
            words = keyword.casefold().split()
            assert len(words) == 1 or words[-1] not in HEADLINE_VERBS, (title, keyword)
            assert len(words) > 1 or words[0] not in yake_stopwords("en"), (title, keyword)


def test_a_title_cased_headline_gives_words_not_names() -> None:
    text = (
        "Solar Units Generate Power For Remote Town\n\n"
        "Solar units installed last spring now generate most of the power used in the town, "
        "the council said. The solar units were paid for by a regional grant."
    )
    keywords = extract_keywords(text, "en", 10)
    assert "Units Generate" not in keywords and "Generate Power" not in keywords
    assert "solar units" in {k.casefold() for k in keywords}  # said twice in the text


# The Japanese clause that came out whole as one keyword, and a katakana word that came
# out cut ("トカットキ").
JAPANESE = (
    "ショートカットキーで操作できます。App Store にない非公式アプリを利用することも"
    "できるようになるとのことです。ショートカットキーは非公式アプリでも使えます。"
)


def test_japanese_keyphrases_are_nouns_not_clauses_or_cut_words() -> None:
    keywords = extract_keywords(JAPANESE, "ja", 10)
    assert "ショートカットキー" in keywords and "App Store" in keywords
    assert "非公式アプリ" in keywords  # kanji and katakana runs said together twice
    assert not [k for k in keywords if regex.search(r"\p{Hiragana}", k)]
    assert all(k in JAPANESE for k in keywords)


def test_chinese_is_cut_into_words() -> None:
    text = (
        "北京大学的研究人员发布了新的自然语言处理模型。研究人员表示。自然语言处理模型将免费开放。"
    )
    keywords = extract_keywords(text, "zh", 10)
    assert {"北京大学", "自然语言", "模型"} <= set(keywords)
    assert all(k in text and 2 <= len(k) <= 8 for k in keywords)  # words, no clause

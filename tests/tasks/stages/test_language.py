"""Language stage on real sentences of the shared corpus: accuracy, article-length text,
determinism, and `und` where the text can't be trusted."""

from __future__ import annotations

from itertools import chain

import numpy as np
import pytest
from newsflow.evaluation.corpus import language_codes
from newsflow.tasks.stages.language import (
    _LOG_PROBABILITIES,
    _SMOOTHING,
    UNDETERMINED,
    _factory,
    _langdetect_words,
    _word_ngrams,
    _word_rows,
    detect_article_language,
    detect_language,
    split_passages,
)

from tests.corpus import corpus_pages, language_sentences, make_article, processed_seed

# A spread of scripts and families langdetect knows, including its weak pairs' members.
LANGUAGES = [
    "en",
    "de",
    "fr",
    "es",
    "pt",
    "it",
    "nl",
    "ru",
    "pl",
    "tr",
    "ar",
    "hi",
    "ja",
    "zh",
    "ko",
    "ca",
    "cs",
]
# The corpus's Norwegian Bokmål file is `nb`; langdetect (and ISO 639-1) say `no`.
ARTICLE_LANGUAGES = [
    "en",
    "de",
    "fr",
    "es",
    "pt",
    "it",
    "nl",
    "ru",
    "pl",
    "ar",
    "ja",
    "zh",
    "ko",
    "nb",
]
EXPECTED = {"nb": "no"}


def test_seed_is_english() -> None:
    assert processed_seed().language == "en"
    assert processed_seed().language_confidence > 0.99


def test_single_sentence_accuracy() -> None:
    """Measured 0.981 on the first 100 sentences of these 17 languages, Catalan and Czech
    the weakest (sampled langdetect with a fixed seed: 0.971); the whole corpus is in the
    evaluation gate."""
    results = [
        detect_language(sentence)[0] == code
        for code in LANGUAGES
        for sentence in language_sentences(code)[:100]
    ]
    assert sum(results) / len(results) >= 0.979


@pytest.mark.parametrize(("code", "weak"), [("ca", 0.86), ("nb", 0.91)])
def test_the_confused_pairs_beat_langdetect_alone(code: str, weak: float) -> None:
    """Raw langdetect gets Catalan and Bokmål right 86 % and 91 % of the time (corpus
    README); the second opinion must do clearly better (measured 88 %, a file with Spanish
    and English lines in it, and 97.5 %)."""
    expected = EXPECTED.get(code, code)
    sentences = language_sentences(code)
    right = sum(detect_language(s)[0] == expected for s in sentences) / len(sentences)
    assert right >= weak + 0.015


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("Ask me if you have any questions.", "en"),  # langdetect alone: French
        ("Cadou ghizbi pentru o inima tanara.", "ro"),  # Portuguese
        ("Vid ansökan till James Cook University bifogas:", "sv"),  # English
        ("Elimu ilisonga mbele.", "sw"),  # Estonian
    ],
)
def test_lingua_is_asked_when_langdetect_is_unsure(text: str, code: str) -> None:
    assert detect_language(text)[0] == code


def test_a_mixed_text_takes_the_language_most_of_it_is_in() -> None:
    """Each sentence is read alone: one English sentence, however English its n-grams,
    weighs by its length; the share left for the answer shows in the confidence."""
    german = " ".join(language_sentences("de")[:4])
    english = language_sentences("en")[0]
    language, confidence = detect_language(f"{english} {german}")
    assert language == "de"
    assert 0.6 < confidence < 0.95
    assert detect_language(german) == ("de", 1.0)


def test_fragments_are_read_with_the_next_sentence() -> None:
    """Each passage comes with its letters, counted over the fragments it joins."""
    text = "Dr. Josep Cemeli Pons. Bu farw yn 1360. Això és una frase llarga en català."
    assert split_passages(text) == [
        ("Dr. Josep Cemeli Pons. Bu farw yn 1360.", 25),
        ("Això és una frase llarga en català.", 28),
    ]


def _langdetect_texts() -> list[str]:
    """Real text of every corpus language, sentences alone and joined by lines, the corpus
    pages' article bodies, and a text past langdetect's 10,000 characters."""
    texts = [page.body for page in corpus_pages()]
    for code in language_codes():
        sentences = language_sentences(code)[:20]
        texts += [*sentences, "\n".join(sentences)]
    return [*texts, " ".join(language_sentences("vi"))]


def test_the_n_grams_are_langdetect_s_own() -> None:
    """The text prepared, normalised and cut into n-grams as langdetect's Detector does
    (same n-grams, same order), and their log-probabilities summed to the same floats as
    langdetect's profile lists: reading it faster changes no result."""
    profiles = _factory().word_lang_prob_map
    log_probabilities: dict[str, np.ndarray] = {}
    for text in _langdetect_texts():
        detector = _factory().create()
        detector.append(text)
        detector.cleaning_text()
        expected = detector._extract_ngrams()
        words = _langdetect_words(text)
        assert list(chain.from_iterable(map(_word_ngrams, words))) == expected, text
        if expected:
            for g in expected:
                if g not in log_probabilities:
                    log_probabilities[g] = np.log(np.asarray(profiles[g]) + _SMOOTHING)
            scores = np.sum([log_probabilities[g] for g in expected], axis=0)
            rows = list(chain.from_iterable(map(_word_rows, words)))
            assert np.array_equal(_LOG_PROBABILITIES.sum(rows), scores), text


def test_latin_boilerplate_around_another_script_does_not_decide() -> None:
    urdu = language_sentences("ur")[:2]
    text = f"Share to Twitter Share to Facebook Breaking News Latest {urdu[0]}"
    assert detect_language(text)[0] == "ur"
    english = " ".join(language_sentences("en")[:3])
    assert detect_language(f"{english} {urdu[1][:20]}")[0] == "en"


def test_chinese_without_hangul_is_not_korean() -> None:
    for sentence in language_sentences("zh")[:50]:
        assert detect_language(sentence)[0] == "zh", sentence


@pytest.mark.parametrize("code", ARTICLE_LANGUAGES)
def test_article_length_text_is_always_right(code: str) -> None:
    sentences = language_sentences(code)[:100]
    for start in range(0, len(sentences), 5):
        text = " ".join(sentences[start : start + 5])
        assert detect_language(text)[0] == EXPECTED.get(code, code), text


def test_chinese_is_zh() -> None:
    text = " ".join(language_sentences("zh")[:5])
    language, confidence = detect_language(text)
    assert (language, confidence > 0.9) == ("zh", True)


def test_detection_is_deterministic_whatever_came_before() -> None:
    ambiguous = "Hi ha edicions que surten i hi ha edicions que no surten gens."
    first = detect_language(ambiguous)
    for sentence in language_sentences("es")[:20] + language_sentences("ca")[:20]:
        detect_language(sentence)
    assert detect_language(ambiguous) == first


@pytest.mark.parametrize(
    "text", ["", "   ", "OK", "12345 678 90", "!!! ??? ...", "Hi there", "\u0926\u093f\u0935"]
)
def test_too_little_text_is_undetermined(text: str) -> None:
    assert detect_language(text) == (UNDETERMINED, 0.0)


def test_long_text_is_sampled_not_decided_by_its_opening() -> None:
    german = " ".join(language_sentences("de")[:60])
    text = " ".join(language_sentences("en")[:3]) + " " + german
    assert len(text) > 3000
    assert detect_language(text)[0] == "de"


def test_article_language_uses_title_and_text() -> None:
    article = make_article("", title="Le gouvernement annonce une réforme")
    article.text = "La réforme des retraites sera présentée mercredi au conseil des ministres."
    detect_article_language(article, None)  # type: ignore[arg-type]
    assert article.language == "fr"

"""Language detection accuracy on the corpus's sentences, for the languages langdetect
knows: single sentences (the hard case) and five-sentence texts (article length).

The first 100 sentences of each language are where the stage was developed (its
thresholds chosen), the last 100 confirm it; both halves are reported. A five-sentence
text counts as development when it starts in the first 100.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from langdetect.detector_factory import PROFILES_DIRECTORY
from newsflow.evaluation.corpus import DEFAULT_CORPUS, language_codes, language_sentences
from newsflow.tasks.stages.language import detect_language

# The corpus names Norwegian Bokmål `nb`; langdetect (and the lake) say `no`.
EXPECTED_CODES = {"nb": "no"}
ARTICLE_SENTENCES = 5
DEVELOPMENT_SENTENCES = 100


@dataclass(frozen=True, slots=True)
class LanguageResult:
    code: str
    sentences: int
    correct_development: int
    correct_confirmation: int
    texts: int
    correct_texts: int
    errors: tuple[tuple[str, str], ...]  # (detected, text) of wrong article-length texts

    @property
    def sentence_accuracy(self) -> float:
        return (self.correct_development + self.correct_confirmation) / self.sentences


def expected_code(code: str) -> str:
    return EXPECTED_CODES.get(code, code)


def langdetect_codes(corpus: Path = DEFAULT_CORPUS) -> list[str]:
    """The corpus languages that langdetect has a profile for (Chinese in either script)."""
    profiles = {p.name.split("-")[0] for p in Path(PROFILES_DIRECTORY).iterdir()}
    return [c for c in language_codes(corpus) if expected_code(c) in profiles]


def evaluate_language(code: str, corpus: Path = DEFAULT_CORPUS) -> LanguageResult:
    expected = expected_code(code)
    sentences = language_sentences(code, corpus)
    right = [detect_language(s)[0] == expected for s in sentences]
    texts = [
        " ".join(sentences[i : i + ARTICLE_SENTENCES])
        for i in range(0, len(sentences) - ARTICLE_SENTENCES + 1, ARTICLE_SENTENCES)
    ]
    detected = [detect_language(t)[0] for t in texts]
    errors = tuple((d, t) for d, t in zip(detected, texts, strict=True) if d != expected)
    return LanguageResult(
        code=code,
        sentences=len(sentences),
        correct_development=sum(right[:DEVELOPMENT_SENTENCES]),
        correct_confirmation=sum(right[DEVELOPMENT_SENTENCES:]),
        texts=len(texts),
        correct_texts=len(texts) - len(errors),
        errors=errors,
    )


def evaluate_languages(corpus: Path = DEFAULT_CORPUS) -> list[LanguageResult]:
    return [evaluate_language(code, corpus) for code in langdetect_codes(corpus)]

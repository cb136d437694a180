"""Language stage: an ISO 639-1 code and a confidence for each article's cleaned text.

langdetect, made deterministic: every call gets a fresh detector with a fixed seed, so
an article's language depends on its text alone, not on what was detected before it or
in which worker process.
"""

from __future__ import annotations

from concurrent.futures import Executor
from functools import cache

import regex
from langdetect import DetectorFactory
from langdetect.detector_factory import PROFILES_DIRECTORY
from langdetect.lang_detect_exception import LangDetectException
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.batch import Batch, run_stage
from tasks.schema import Article
from tasks.settings import Settings

UNDETERMINED = "und"
# Below this much evidence (about two short words) langdetect's answer is a coin toss.
# Letters count one each; a Han, kana or Hangul character, worth a short word, three.
MIN_LETTERS = 10
_DENSE_SCRIPT = regex.compile(r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}]")
# A top probability below this means the text is mixed or unlike any profile.
MIN_CONFIDENCE = 0.5
SEED = 0
# langdetect's cost grows with the text; a few hundred words decide any article. Long
# texts are sampled at the start, middle and end so one foreign quote can't decide it.
SAMPLE_CHARS = 600
SAMPLES = 3
# langdetect distinguishes scripts of Chinese; the lake stores the ISO 639-1 code.
_CODES = {"zh-cn": "zh", "zh-tw": "zh"}


@cache
def _factory() -> DetectorFactory:
    """langdetect's profiles (~0.6 s, ~90 MB), loaded once per process."""
    factory = DetectorFactory()
    factory.load_profile(PROFILES_DIRECTORY)
    factory.seed = SEED
    return factory


def _sample(text: str) -> str:
    if len(text) <= SAMPLE_CHARS * SAMPLES:
        return text
    step = (len(text) - SAMPLE_CHARS) // (SAMPLES - 1)
    return " ".join(text[i * step : i * step + SAMPLE_CHARS] for i in range(SAMPLES))


def detect_language(text: str) -> tuple[str, float]:
    """ISO 639-1 code (`zh` for Chinese) and probability; `und` with the probability found
    (0.0 when too short to try) when the text can't be trusted to one language."""
    evidence = sum(c.isalpha() for c in text) + 2 * len(_DENSE_SCRIPT.findall(text))
    if evidence < MIN_LETTERS:
        return UNDETERMINED, 0.0
    detector = _factory().create()
    detector.append(_sample(text))
    try:
        best = detector.get_probabilities()[0]
    except (LangDetectException, IndexError):  # no usable features, e.g. only digits
        return UNDETERMINED, 0.0
    if best.prob < MIN_CONFIDENCE:
        return UNDETERMINED, best.prob
    return _CODES.get(best.lang, best.lang), best.prob


def detect_article_language(article: Article, settings: Settings) -> Article:
    """Detect on title and cleaned text: boilerplate would skew it, the title helps short
    articles."""
    title = article.title or article.page_metadata.get("title")
    text = f"{title}\n\n{article.text}" if title else article.text
    article.language, article.language_confidence = detect_language(text)
    return article


@task(name="language", cache_policy=NO_CACHE)
def detect_language_batch(batch: Batch, settings: Settings, pool: Executor | None) -> Batch:
    """Keywords and entities need the article's language; analysts filter on it."""
    result = run_stage(batch, "language", detect_article_language, settings, pool)
    undetermined = sum(a.language == UNDETERMINED for a in result.articles)
    get_run_logger().info(
        "Detected the language of %d articles (%d undetermined)",
        len(result.articles),
        undetermined,
    )
    return result

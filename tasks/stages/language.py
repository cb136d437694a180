"""Language stage: an ISO 639-1 code and a confidence for each article's cleaned text.

langdetect is the detector, evaluated exhaustively: its profiles score every character
n-gram of the text instead of a random sample of them, so an article's language depends
on its text alone (not on a seed, on what was detected before it, or on the worker) and
short texts use all their evidence. Its reading of a text (normalisation, n-grams) is
redone here word by word, tested against its own: half its cost, a sixth for the words
met before (they are cached). Corrections follow for what n-gram profiles cannot see:

- scripts: Latin boilerplate (a site header, share buttons) around text in another script
  is set aside, and Korean needs Hangul, Japanese kana, Chinese Han without either;
- a second opinion: when langdetect is less than 99 % sure, its posterior is multiplied
  by lingua's (low-accuracy mode, langdetect's languages);
- close groups: when the answer is one of a group of languages langdetect is known to
  confuse (Catalan/Spanish, Czech/Slovak/Slovene/Croatian, Bokmål/Danish, the Cyrillic
  South and East Slavic languages, Afrikaans/Dutch), lingua's high-accuracy mode,
  restricted to that group, decides with it between them;
- passages: a text is read sentence by sentence and takes the language most of its
  letters are in, so a quoted or boilerplate sentence weighs by its length only.

Codes are ISO 639-1 as langdetect names them: `zh` for Chinese in either script, `no` for
Norwegian (Bokmål), `und` when the text is too short or its language too uncertain.
"""

from __future__ import annotations

import threading
from functools import cache, lru_cache
from itertools import chain

import numpy as np
import regex
from langdetect import DetectorFactory
from langdetect.detector import Detector
from langdetect.detector_factory import PROFILES_DIRECTORY
from langdetect.utils.ngram import NGram
from lingua import IsoCode639_1, Language, LanguageDetector, LanguageDetectorBuilder
from newsflow.tasks.schema import Article
from newsflow.tasks.settings import Settings
from newsflow.tasks.stages.batch import Batch, StagePool, run_stage
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

UNDETERMINED = "und"
# Below this much evidence (about two short words) any answer is a coin toss. Letters and
# the vowel signs attached to them count one each; a Han, kana or Hangul character, worth
# a short word, three.
MIN_LETTERS = 10
# Counted run by run: one match per word, not per letter, is half the cost.
_EVIDENCE = regex.compile(r"[\p{L}\p{M}]+")
_DENSE_SCRIPT = regex.compile(r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}]+")
# A winner (or, for a confusable group, the group) with less posterior probability than
# this, langdetect's and lingua's combined, is a guess: on single sentences, answers below
# it are right 2 times in 6 (development) and 2 in 5 (confirmation), from it to 0.8 four
# times in 10 and 5 in 12, from 0.8 to 0.99 17 in 24 and 20 in 28, above 99.4 %.
MIN_CONFIDENCE = 0.6
# The lake stores confidence as float32; rounding also hides lingua's last-bit
# differences between runs (its sums are parallel), so equal text gives equal output.
CONFIDENCE_DIGITS = 4
# langdetect's smoothing of unseen n-grams (its ALPHA_DEFAULT / BASE_FREQ).
_SMOOTHING = 0.5 / 10_000
# langdetect's text preparation (Detector.append and cleaning_text) as regexes: it reads
# at most this many characters (its default max_text_length), collapses runs of spaces,
# and drops the ASCII letters (its 'A'..'z' range, brackets included) when they are fewer
# than half the characters from U+0300 on (it means to spare Vietnamese's Latin Extended
# Additional block there, but its test of the block never matches).
_MAX_TEXT_LENGTH = 10_000
_SPACES = regex.compile(" {2,}")
_ASCII_RANGE = regex.compile("[A-z]+")
_FROM_U0300 = regex.compile("[\u0300-\U0010ffff]+")
# Words whose n-gram rows are kept, least recently used dropped first: ~400 bytes each
# (13 MB), the everyday vocabulary of a few languages, so that in a stream of articles
# most words are looked up, not read again.
WORD_CACHE_SIZE = 1 << 15
# langdetect reads 1-, 2- and 3-grams, so each character is counted three times over:
# the posterior divides the log-likelihoods by this to count it once.
_NGRAM_ORDERS = 3
# Cost grows with the text; a few hundred words decide any article. Long texts are
# sampled at the start, middle and end so one foreign passage can't decide it.
SAMPLE_CHARS = 600
SAMPLES = 3
# Latin letters are boilerplate (site names, share buttons, HTTP headers in scraped
# pages) when another script holds at least this share of the letters: real Latin-script
# articles quote other scripts far more sparingly.
MIN_OTHER_SCRIPT_SHARE = 1 / 3
_LATIN = regex.compile(r"\p{Latin}+")
_HANGUL = regex.compile(r"\p{Hangul}")
_KANA = regex.compile(r"[\p{Hiragana}\p{Katakana}]")
_HAN = regex.compile(r"\p{Han}")
# Languages langdetect's profiles confuse with each other, in its codes.
CONFUSABLE = (
    ("ca", "es"),
    ("cs", "sk", "sl", "hr"),
    ("no", "da"),
    ("bg", "mk", "ru", "uk"),
    ("af", "nl"),
)
_LINGUA_CODES = {"no": "nb"}
# Above this posterior langdetect's answer stands alone; below it lingua is asked too. On
# the development sentences 71 % are above it, and asking lingua there changes no answer.
SURE = 0.99
# lingua's and langdetect's probabilities are multiplied; a language one of them gives 0
# keeps this much, so the other can still outvote it when very sure.
_FLOOR = 1e-9
# Inside a confusable group lingua's high-accuracy read counts fully, langdetect's to
# this power: the group's members share most n-grams, which langdetect sees less well.
GROUP_LANGDETECT_WEIGHT = 0.25
# Texts are read sentence by sentence, short sentences joined to the next up to this
# many letters (twice MIN_LETTERS), so a fragment ("Dr.", "Vol. 2.") is never read alone.
MIN_PASSAGE_LETTERS = 20
_SENTENCE_END = regex.compile(r"(?<=[.!?\u0964\u061f])\s+|(?<=[\u3002\uff01\uff1f])|\n+")
# The same split for texts without ideographic stops, where the empty match after one
# can't occur: trying it at every character is most of the cost.
_IDEOGRAPHIC_STOP = regex.compile(r"[\u3002\uff01\uff1f]")
_SENTENCE_END_WITHOUT_IDEOGRAPHIC = regex.compile(r"(?<=[.!?\u0964\u061f])\s+|\n+")
# langdetect distinguishes scripts of Chinese; the lake stores the ISO 639-1 code.
_CODES = {"zh-cn": "zh", "zh-tw": "zh"}


@cache
def _factory() -> DetectorFactory:
    """langdetect's profiles (~0.6 s, ~90 MB), loaded once per process."""
    factory = DetectorFactory()
    factory.load_profile(PROFILES_DIRECTORY)
    return factory


@cache
def _codes() -> tuple[str, ...]:
    """langdetect's languages in its order, Chinese scripts both `zh`."""
    return tuple(_CODES.get(c, c) for c in _factory().get_lang_list())


@cache
def _merged_codes() -> tuple[tuple[str, ...], np.ndarray]:
    """Each code once, in the order first met, and where each profile's code is in it."""
    merged = tuple(dict.fromkeys(_codes()))
    return merged, np.array([merged.index(c) for c in _codes()])


class _LogProbabilities:
    """Smoothed log P(n-gram | language) for every profile, in langdetect's order, in one
    matrix so that a passage's rows are gathered at once: a row per n-gram met so far,
    the rest of its 39 MB reserved but never touched, so not in memory. Rows are added
    under a lock and published after they are written, so threads read while one adds."""

    def __init__(self) -> None:
        self._index: dict[str, int] = {}
        self._table = np.empty((0, 0))  # sized on first use, when the profiles load
        self._lock = threading.Lock()

    def rows(self, ngrams: list[str]) -> tuple[int, ...]:
        """The rows of these n-grams, added if new."""
        if not all(map(self._index.__contains__, ngrams)):
            self._add(ngrams)
        return tuple(map(self._index.__getitem__, ngrams))

    def sum(self, rows: list[int]) -> np.ndarray:
        """The rows added up in their order, as langdetect's n-gram list is: the same
        floats as summing its lists."""
        return self._table[rows].sum(axis=0)

    def _add(self, ngrams: list[str]) -> None:
        profiles = _factory().word_lang_prob_map
        with self._lock:
            if not self._table.size:
                self._table = np.empty((len(profiles), len(_codes())))
            for ngram in ngrams:
                if ngram in self._index:
                    continue
                row = len(self._index)
                # Row by row, as langdetect's lists are: the same floats whatever the batch.
                self._table[row] = np.log(np.asarray(profiles[ngram]) + _SMOOTHING)
                self._index[ngram] = row


# One per process, created at import: threads asking for it at once must share it, as
# the rows cached per word point into it.
_LOG_PROBABILITIES = _LogProbabilities()


class _Normalized(dict[int, str]):
    """langdetect's NGram.normalize as a str.translate table, filled on first use of each
    character: normalising a text then costs one C call instead of a block search per
    character."""

    def __missing__(self, code: int) -> str:
        self[code] = NGram.normalize(chr(code))
        return self[code]


_NORMALIZED = _Normalized()


@cache
def _lingua_known() -> frozenset[str]:
    """langdetect's codes that lingua knows: all but Kannada, Malayalam and Nepali."""
    return frozenset(_lingua_code(lang) for lang in _lingua_all_languages())


def _lingua_all_languages() -> list[Language]:
    iso = {_LINGUA_CODES.get(c, c).upper() for c in _codes()}
    return [lang for lang in Language.all() if lang.iso_code_639_1.name in iso]


@cache
def _lingua_all() -> LanguageDetector:
    """lingua over langdetect's languages in low-accuracy mode (trigrams only): ~60 MB,
    against ~1 GB for the high-accuracy mode over all of them."""
    return (
        LanguageDetectorBuilder.from_languages(*_lingua_all_languages())
        .with_low_accuracy_mode()
        .build()
    )


@cache
def _second_opinion(group: tuple[str, ...]) -> LanguageDetector:
    """lingua restricted to one confusable group, loaded on first use: 80-160 MB a group.
    Its high-accuracy mode (n-grams up to five) is worth +0.5 points on single sentences
    over the low-accuracy one, which needs a third of the memory."""
    languages = [
        Language.from_iso_code_639_1(getattr(IsoCode639_1, _LINGUA_CODES.get(c, c).upper()))
        for c in group
    ]
    return LanguageDetectorBuilder.from_languages(*languages).build()


def warm_up() -> None:
    """Load langdetect's profiles and lingua's models of the Latin-script languages now
    (~1 s), once for all stage workers (`tasks/workers.py`), rather than in each worker's
    first article. Asking lingua a question loads the models it needs on the calling
    thread; its own preloading would load them on a thread pool, which the workers forked
    afterwards would inherit broken. The confusable groups' models (80-160 MB each, up to
    1.5 s) load in a worker when a text of the group comes: loading them all before the
    fork would make every run wait for them."""
    _factory()
    _lingua_all().compute_language_confidence_values("Warm-up: une phrase, ein Satz, una frase.")


def _sample(text: str) -> str:
    if len(text) <= SAMPLE_CHARS * SAMPLES:
        return text
    step = (len(text) - SAMPLE_CHARS) // (SAMPLES - 1)
    return " ".join(text[i * step : i * step + SAMPLE_CHARS] for i in range(SAMPLES))


def main_script_text(text: str) -> str:
    """The text without its Latin letters when another script carries the content."""
    letters = _count(_EVIDENCE, text)
    latin = _count(_LATIN, text)
    if letters and letters - latin >= MIN_OTHER_SCRIPT_SHARE * letters:
        return _LATIN.sub(lambda run: " " * len(run[0]), text)
    return text


def _script_allows(text: str) -> np.ndarray:
    """For each of langdetect's languages, whether the text's scripts allow it."""
    return _allowed(*(bool(script.search(text)) for script in (_HANGUL, _KANA, _HAN)))


@cache
def _allowed(hangul: bool, kana: bool, han: bool) -> np.ndarray:
    """Korean is written with Hangul, Japanese with kana, Chinese with Han and neither."""
    allows = {"ko": hangul, "ja": kana, "zh": han and not (hangul or kana)}
    return np.array([allows.get(c, True) for c in _codes()])


def _langdetect_words(text: str) -> list[str]:
    """The text as langdetect reads it (Detector.append, cleaning_text, NGram.normalize),
    word by word, each with the spaces langdetect's n-grams see around it: one before,
    one after unless it ends the text."""
    text = Detector.MAIL_RE.sub(" ", Detector.URL_RE.sub(" ", text))
    text = _SPACES.sub(" ", NGram.normalize_vi(text)[:_MAX_TEXT_LENGTH])
    if 2 * _count(_ASCII_RANGE, text) < _count(_FROM_U0300, text):
        text = _ASCII_RANGE.sub("", text)
    *words, last = text.translate(_NORMALIZED).split(" ")
    return [f" {word} " for word in words if word] + ([f" {last}"] if last else [])


def _word_ngrams(word: str) -> list[str]:
    """langdetect's n-grams of one spaced word, in its order (Detector._extract_ngrams,
    NGram.add_char): at each character its 1-, 2- and 3-gram ending there, those in the
    profiles and not a lone space, none where it and the one before are both capitals."""
    known = _factory().word_lang_prob_map
    ngrams: list[str] = []
    for end in range(2, len(word) + 1):
        char = word[end - 1]
        if char.isupper() and word[end - 2].isupper():
            continue
        if char != " " and char in known:
            ngrams.append(char)
        if (bigram := word[end - 2 : end]) in known:
            ngrams.append(bigram)
        if end > 2 and (trigram := word[end - 3 : end]) in known:
            ngrams.append(trigram)
    return ngrams


@lru_cache(maxsize=WORD_CACHE_SIZE)
def _word_rows(word: str) -> tuple[int, ...]:
    """The log-probability rows of a spaced word's n-grams, kept: most words of a text
    were met before."""
    return _LOG_PROBABILITIES.rows(_word_ngrams(word))


def _langdetect_posterior(text: str) -> dict[str, float]:
    """langdetect's profiles over every n-gram of the text: each language's posterior
    probability (uniform prior), Chinese scripts merged; empty without features."""
    rows = list(chain.from_iterable(map(_word_rows, _langdetect_words(text))))
    if not rows:
        return {}
    scores = _LOG_PROBABILITIES.sum(rows) / _NGRAM_ORDERS
    allowed = _script_allows(text)
    if allowed.any():
        scores = np.where(allowed, scores, -np.inf)
    weights = np.exp(scores - scores.max())
    codes, merged_as = _merged_codes()
    # bincount adds each code's shares in profile order from 0.0: the floats of a loop.
    shares = np.bincount(merged_as, weights=weights / weights.sum(), minlength=len(codes))
    return dict(zip(codes, shares.tolist(), strict=True))


@cache
def _lingua_code(language: Language) -> str:
    code = language.iso_code_639_1.name.lower()
    return next((c for c, lc in _LINGUA_CODES.items() if lc == code), code)


def _with_lingua(text: str, posterior: dict[str, float]) -> dict[str, float]:
    """langdetect's posterior times lingua's (low-accuracy, all of langdetect's languages
    it knows), renormalised: two independent reads of the text, each vetoing what the
    other finds implausible. langdetect alone when it is sure, when lingua has nothing to
    say, or when its answer is one lingua doesn't know (Kannada, Malayalam, Nepali)."""
    best = max(posterior, key=posterior.__getitem__)
    if posterior[best] >= SURE or best not in _lingua_known():
        return posterior
    values = {
        _lingua_code(v.language): v.value
        for v in _lingua_all().compute_language_confidence_values(text)
    }
    if not any(values.values()):
        return posterior
    known = [c for c in posterior if c in values]
    scores = np.log([posterior[c] + _FLOOR for c in known]) + np.log(
        [values[c] + _FLOOR for c in known]
    )
    weights = np.exp(scores - scores.max())
    return dict(zip(known, (weights / weights.sum()).tolist(), strict=True))


def _decide_within_group(
    text: str, best: str, posterior: dict[str, float]
) -> tuple[str, float, float]:
    """The member of `best`'s confusable group that lingua (high accuracy, restricted to
    the group) and langdetect agree on, the posterior of the group (the evidence for the
    answer), and the confidence: that posterior times the member's share within it."""
    group = next((g for g in CONFUSABLE if best in g), None)
    values = _second_opinion(group).compute_language_confidence_values(text) if group else []
    if not (group and values and any(v.value for v in values)):
        return best, posterior[best], posterior[best]
    lingua = {_lingua_code(v.language): v.value for v in values}
    scores = np.array(
        [
            GROUP_LANGDETECT_WEIGHT * np.log(posterior.get(c, 0.0) + _FLOOR)
            + np.log(lingua.get(c, 0.0) + _FLOOR)
            for c in group
        ]
    )
    shares = np.exp(scores - scores.max())
    shares /= shares.sum()
    member = int(shares.argmax())
    evidence = sum(posterior.get(c, 0.0) for c in group)
    return group[member], evidence, evidence * float(shares[member])


def _detect_passage(text: str) -> tuple[str, float, float] | None:
    """(code, evidence, confidence) of one passage, None without usable features."""
    posterior = _langdetect_posterior(text)
    if not posterior:  # e.g. only digits and symbols
        return None
    posterior = _with_lingua(text, posterior)
    best = max(posterior, key=posterior.__getitem__)
    return _decide_within_group(text, best, posterior)


def _count(characters: regex.Pattern[str], text: str) -> int:
    return sum(map(len, characters.findall(text)))


def _evidence(text: str) -> int:
    return _count(_EVIDENCE, text) + 2 * _count(_DENSE_SCRIPT, text)


def split_passages(text: str) -> list[tuple[str, int]]:
    """Sentences, short ones joined to the next until each has MIN_PASSAGE_LETTERS, with
    their evidence (counted piece by piece: it adds up, and each piece is read once)."""
    passages: list[tuple[str, int]] = []
    current, evidence = "", 0
    ideographic = _IDEOGRAPHIC_STOP.search(text)
    sentence_end = _SENTENCE_END if ideographic else _SENTENCE_END_WITHOUT_IDEOGRAPHIC
    for piece in sentence_end.split(text):
        current = f"{current} {piece}" if current else piece
        evidence += _evidence(piece)
        if evidence >= MIN_PASSAGE_LETTERS:
            passages.append((current, evidence))
            current, evidence = "", 0
    if current.strip():
        if passages:
            last, last_evidence = passages[-1]
            passages[-1] = (f"{last} {current}", last_evidence + evidence)
        else:
            passages.append((current, evidence))
    return passages


def detect_language(text: str) -> tuple[str, float]:
    """ISO 639-1 code (`zh` for Chinese, `no` for Norwegian) and confidence; `und` with
    the confidence found (0.0 when too short to try) when the text can't be trusted to
    one language."""
    # Most texts have the evidence in their first sample: not counted over the whole text.
    if _evidence(text[:SAMPLE_CHARS]) < MIN_LETTERS and _evidence(text) < MIN_LETTERS:
        return UNDETERMINED, 0.0
    sample = main_script_text(_sample(text))
    # Each passage is read on its own and weighs by its letters: a passage in another
    # language (a quote, a header) then costs its length, not the strength of its n-grams.
    letters: dict[str, float] = {}
    support: dict[str, float] = {}
    confidence: dict[str, float] = {}
    total = 0.0
    for passage, weight in split_passages(sample):
        total += weight
        found = _detect_passage(passage)
        if found is None:
            continue
        code, passage_support, passage_confidence = found
        letters[code] = letters.get(code, 0.0) + weight
        support[code] = support.get(code, 0.0) + weight * passage_support
        confidence[code] = confidence.get(code, 0.0) + weight * passage_confidence
    if not letters:
        return UNDETERMINED, 0.0
    code = max(letters, key=letters.__getitem__)
    # A mixed text takes the language most of it is in, with the confidence that share
    # leaves; `und` only when the passages in that language are themselves unsure.
    rounded = round(confidence[code] / total, CONFIDENCE_DIGITS)
    if support[code] / letters[code] < MIN_CONFIDENCE:
        return UNDETERMINED, rounded
    return code, rounded


def detect_article_language(article: Article, settings: Settings) -> Article:
    """Detect on title and cleaned text: boilerplate would skew it, the title helps short
    articles."""
    title = article.title or article.page_metadata.get("title")
    text = f"{title}\n\n{article.text}" if title else article.text
    article.language, article.language_confidence = detect_language(text)
    return article


@task(name="language", cache_policy=NO_CACHE)
def detect_language_batch(batch: Batch, settings: Settings, pool: StagePool | None) -> Batch:
    """Keywords and entities need the article's language; analysts filter on it."""
    result = run_stage(batch, "language", detect_article_language, settings, pool)
    undetermined = sum(a.language == UNDETERMINED for a in result.articles)
    get_run_logger().info(
        "Detected the language of %d articles (%d undetermined)",
        len(result.articles),
        undetermined,
    )
    return result

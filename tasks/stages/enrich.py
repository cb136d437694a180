"""Enrich stage: word count, reading time, keywords, an exact-copy hash and a
near-duplicate signature.

The signature is MinHash over word shingles split into LSH bands, each band hashed to one
int64: two articles are near-duplicate candidates when they share any band value, which
a query finds with a plain join on the `dup_bands` column, no index service needed.
"""

from __future__ import annotations

import hashlib
import math
from functools import cache, lru_cache

import numpy as np
import regex
import rjieba
from datasketch import MinHash
from newsflow.tasks.schema import Article
from newsflow.tasks.settings import Settings
from newsflow.tasks.stages.batch import Batch, StagePool, run_stage
from newsflow.tasks.stages.stopwords import yake_stopwords
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

# A word for counting: letters and digits, with inner apostrophes and number separators
# ("It's", "3.5", "10,000"), or one ideograph or kana, since Chinese and Japanese don't
# separate words and a character is close to a word's reading time.
_IDEOGRAPHIC = r"\p{Han}\p{Hiragana}\p{Katakana}"
_WORD = regex.compile(rf"[{_IDEOGRAPHIC}]|[^\W{_IDEOGRAPHIC}]+(?:['\u2019.,][^\W{_IDEOGRAPHIC}]+)*")
# Keyphrases: the article's most frequent content words, an earlier first mention
# weighing a little, and phrases that stand as units: a run of two or three capitalised
# words (a name: "Donald Trump", "Port" and "Rotterdam" apart) or of content words said
# at least twice ("dock workers"). A content word is no stopword of the language, no
# number, and 3+ letters (2+ characters in Chinese and Japanese). Phrases never cross
# punctuation or a stopword, so no clause comes out, and a headline in title case
# ("Units Generate Power For Town") gives words, not names. A phrase covers its words:
# once it is chosen they are not chosen alone. Chinese is cut into words by jieba
# (rjieba, its Rust port), Japanese into runs of one script: kanji and katakana runs
# are its nouns, hiragana the grammar between them.
# Measured (docs/quality.md): on 500N-KPCrowd, F1@10 0.174 / F1@5 0.112 (published YAKE
# 0.173) where YAKE's package scores 0.079 / 0.045 the same way; on the publisher-tag
# measure P 0.305 / R 0.572; about 1 ms CPU an article. Choices, weighed on both
# measures: 1,500 characters (the whole text: 500N 0.169); a phrase weighs 0.2 of its
# best word's weight per mention (0.3: 500N 0.171, tags P 0.317; 1.0: 0.148, P 0.290;
# no phrases, 3,000 characters: 0.178, P 0.267).
KEYWORD_MAX_CHARS = 1500
PHRASE_MAX_WORDS = 3
PHRASE_MIN_COUNT = 2
PHRASE_WEIGHT = 0.2
POSITION_WEIGHT = 0.3
MIN_WORD_CHARS = 3
_TOKEN = regex.compile(
    r"[\p{L}\p{M}\p{N}]+(?:['\u2019\u2018\-][\p{L}\p{M}\p{N}]+)*|[^\s\p{L}\p{M}\p{N}]"
)
_CONTENT_SCRIPTS = regex.compile(r"[\p{Han}\p{Katakana}\p{Latin}\p{N}]")
_JAPANESE_RUN = regex.compile(
    r"[\p{Han}々]+|[\p{Katakana}ー]+|\p{Hiragana}+|[^\s\p{Han}々\p{Katakana}ー\p{Hiragana}]+"
)
_HAN = regex.compile(r"\p{Han}")
_APOSTROPHE = regex.compile("['\u2019\u2018]")
# Near-duplicate signature. Shingles of SHINGLE_WORDS words: one edited word spoils only
# three, and unrelated articles still share almost none. BANDS x ROWS = NUM_PERM
# permutations; a pair becomes a candidate with probability 1 - (1 - J^ROWS)^BANDS for
# shingle Jaccard J, whose midpoint (1/BANDS)^(1/ROWS) is 0.53: J 0.3 → 6 %, 0.5 → 55 %,
# 0.7 → 98 %. Measured on the shared corpus: a copy with other furniture, a paragraph
# dropped and 2 % / 5 % of words changed shares a band 99 % / 92 % of the time, trafilatura's
# extraction and the hand-made ground truth of the same page 100 %, and none of the 3,741
# pairs of different pages.
SHINGLE_WORDS = 3
BANDS = 25
ROWS = 5
NUM_PERM = BANDS * ROWS
# Fixed so that signatures are comparable across runs, machines and library defaults.
MINHASH_SEED = 1
MINHASH_SCHEME = "affine32"


def normalise_for_hash(text: str) -> str:
    """Casefolded, whitespace collapsed: copies differing only in case or layout match."""
    return " ".join(text.casefold().split())


def content_hash(text: str) -> str:
    """blake2b-128 hex of the normalised text."""
    return hashlib.blake2b(normalise_for_hash(text).encode(), digest_size=16).hexdigest()


def count_words(text: str) -> int:
    return len(_WORD.findall(text))


def reading_minutes(word_count: int, words_per_minute: int) -> float:
    return round(word_count / words_per_minute, 1)


def _segment(line: str, language: str) -> str:
    """The line with spaces between words, for the languages that write none."""
    if language == "zh" or (language == "und" and _HAN.search(line)):
        return " ".join(rjieba.cut(line))
    if language == "ja":
        return " ".join(_JAPANESE_RUN.findall(line))
    return line


# Words recur within and across articles: the per-word tests are memoised, bounded.
_WORD_CACHE = 1 << 16


@lru_cache(maxsize=_WORD_CACHE)
def _without_clitics(token: str) -> str:
    """The word of "council's" and "l'accord"; a contraction ("don't", "they're") is
    left whole, and no content word."""
    parts = _APOSTROPHE.split(token)
    if len(parts) != 2 or not all(parts):
        return token
    if parts[1].casefold() == "s":
        return parts[0]
    if len(parts[0]) <= 2:
        return parts[1]
    return token


@lru_cache(maxsize=_WORD_CACHE)
def _is_content(word: str, stop: frozenset[str], language: str) -> bool:
    folded = word.casefold()
    if folded in stop or word.isdigit() or _APOSTROPHE.search(word):
        return False
    if language in ("zh", "ja"):
        # One Han character or a hiragana run is mostly grammar; loanwords and compounds
        # are what a reader looks for.
        return len(word) > 1 and _CONTENT_SCRIPTS.search(word) is not None
    return len(word) >= MIN_WORD_CHARS


def _join(words: list[str]) -> str:
    """Segmented words as the text writes them: a space only between two Latin words."""
    joined = words[0]
    for word in words[1:]:
        space = joined[-1].isascii() and word[0].isascii()
        joined += f" {word}" if space else word
    return joined


def _title_cased(words: list[str], stop: frozenset[str]) -> bool:
    """A headline in title case: every longer content word capitalised."""
    long = [w for w in words if len(w) > 3 and w.casefold() not in stop]
    return len(long) >= 3 and all(w[:1].isupper() for w in long)


def extract_keywords(text: str, language: str, count: int) -> list[str]:
    """The `count` most salient words and phrases of the text, best first, each once
    whatever its case, each as written in the text."""
    if count == 0:
        return []
    stop = yake_stopwords(language)
    words: dict[str, list] = {}  # folded -> [count, first position, {form: count}]
    phrases: dict[tuple[str, ...], list] = {}
    position = 0
    for line in text[:KEYWORD_MAX_CHARS].splitlines():
        tokens = _TOKEN.findall(_segment(line, language))
        titled = _title_cased([t for t in tokens if t[0].isalnum()], stop)
        run: list[str] = []
        for token in [*tokens, "."]:
            token = _without_clitics(token)
            if token[0].isalnum() and _is_content(token, stop, language):
                entry = words.setdefault(token.casefold(), [0, position, {}])
                entry[0] += 1
                entry[2][token] = entry[2].get(token, 0) + 1
                position += 1
                run.append(token)
                continue
            position += 1
            _count_phrases(run, phrases, titled, language)
            run = []
    ranked: list[tuple[float, str, tuple[str, ...]]] = []
    weight = {
        k: n / (1 + POSITION_WEIGHT * math.log(2 + first)) for k, (n, first, _) in words.items()
    }
    for folded, (_n, _first, forms) in words.items():
        ranked.append((weight[folded], max(forms, key=forms.__getitem__), (folded,)))
    for key, (n, is_name, forms) in phrases.items():
        if n >= PHRASE_MIN_COUNT or is_name:
            score = PHRASE_WEIGHT * max(weight[k] for k in key) * (1 + (n - 1) / len(key))
            ranked.append((score, max(forms, key=forms.__getitem__), key))
    ranked.sort(key=lambda r: (-r[0], -len(r[2])))
    chosen: list[str] = []
    covered: set[tuple[str, ...]] = set()
    for _score, form, key in ranked:
        if key in covered:
            continue
        chosen.append(form)
        covered.update(key[i:j] for i in range(len(key)) for j in range(i + 1, len(key) + 1))
        if len(chosen) == count:
            break
    return chosen


def _count_phrases(
    run: list[str], phrases: dict[tuple[str, ...], list], titled: bool, language: str
) -> None:
    """Count the run's phrases of 2 to PHRASE_MAX_WORDS words; a name is one all of whose
    words are capitalised, outside a title-cased headline."""
    for size in range(2, PHRASE_MAX_WORDS + 1):
        for start in range(len(run) - size + 1):
            part = run[start : start + size]
            key = tuple(w.casefold() for w in part)
            entry = phrases.setdefault(key, [0, False, {}])
            entry[0] += 1
            entry[1] = entry[1] or (not titled and all(w[:1].isupper() for w in part))
            form = _join(part) if language in ("zh", "ja") else " ".join(part)
            entry[2][form] = entry[2].get(form, 0) + 1


@cache
def _permutations() -> tuple[np.ndarray, np.ndarray]:
    """MinHash permutation parameters, drawn once per process rather than per article."""
    return MinHash(num_perm=NUM_PERM, seed=MINHASH_SEED, scheme=MINHASH_SCHEME).permutations


def duplicate_bands(text: str) -> list[int]:
    """LSH band values of the text's MinHash, each a signed int64 tagged with its band
    number (equal values in different bands must not match); empty for empty text."""
    words = regex.findall(r"\w+", normalise_for_hash(text))
    if not words:
        return []
    span = min(SHINGLE_WORDS, len(words))
    shingles = {" ".join(words[i : i + span]) for i in range(len(words) - span + 1)}
    minhash = MinHash(
        num_perm=NUM_PERM,
        seed=MINHASH_SEED,
        scheme=MINHASH_SCHEME,
        permutations=_permutations(),
    )
    # No sort first: the signature is a minimum per permutation, whatever the order.
    minhash.update_batch([s.encode() for s in shingles])
    values = minhash.hashvalues.astype("<u8")
    bands = []
    for band in range(BANDS):
        chunk = band.to_bytes(2, "little") + values[band * ROWS : (band + 1) * ROWS].tobytes()
        digest = hashlib.blake2b(chunk, digest_size=8).digest()
        bands.append(int.from_bytes(digest, "little", signed=True))
    return bands


def enrich_article(article: Article, settings: Settings) -> Article:
    """Fill counts, keywords, hash and near-duplicate bands from the cleaned text."""
    article.word_count = count_words(article.text)
    article.reading_minutes = reading_minutes(article.word_count, settings.words_per_minute)
    title = article.title or ""
    article.keywords = extract_keywords(
        f"{title}\n\n{article.text}".strip(), article.language, settings.keyword_count
    )
    article.content_hash = content_hash(article.text)
    article.dup_bands = duplicate_bands(article.text)
    return article


@task(name="enrich", cache_policy=NO_CACHE)
def enrich_batch(batch: Batch, settings: Settings, pool: StagePool | None) -> Batch:
    """Counts, keywords and duplicate signatures let analysts search and group stories."""
    result = run_stage(batch, "enrich", enrich_article, settings, pool)
    get_run_logger().info(
        "Enriched %d articles with counts, keywords and duplicate signatures",
        len(result.articles),
    )
    return result

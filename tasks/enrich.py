"""Enrich stage: word count, reading time, keywords, an exact-copy hash and a
near-duplicate signature.

The signature is MinHash over word shingles split into LSH bands, each band hashed to one
int64: two articles are near-duplicate candidates when they share any band value, which
a query finds with a plain join on the `dup_bands` column, no index service needed.
"""

from __future__ import annotations

import hashlib
from functools import cache

import numpy as np
import regex
from datasketch import MinHash
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from yake_rust import Yake

from tasks.batch import Batch, StagePool, run_stage
from tasks.schema import Article
from tasks.settings import Settings
from tasks.stopwords import yake_stopwords

# A word for counting: letters and digits, with inner apostrophes and number separators
# ("It's", "3.5", "10,000"), or one ideograph or kana, since Chinese and Japanese don't
# separate words and a character is close to a word's reading time.
_IDEOGRAPHIC = r"\p{Han}\p{Hiragana}\p{Katakana}"
_WORD = regex.compile(rf"[{_IDEOGRAPHIC}]|[^\W{_IDEOGRAPHIC}]+(?:['\u2019.,][^\W{_IDEOGRAPHIC}]+)*")
# Keywords are YAKE's, computed by yake-rust, a port of the reference implementation:
# 2.9 ms an article on 3,000 characters of the benchmark pages where the Python package
# (yake 0.7.3) took 18 ms, and better on the publisher-tag measure
# (`evaluation/keywords.py`, 42 pages): recall 0.553 / precision 0.343 against 0.516 /
# 0.295. YAKE reads the title and the lead, where news states its topics. On that measure
# 1,500 characters (about 250 words) do as well as any length, on both halves of the
# pages: R 0.581 / P 0.348 (F1 0.435; 3,000: 0.423; whole text 0.421), at 1.8 ms; they
# give 75 % of the keywords the whole text gives (3,000: 88 %), the rest being topics
# that appear only further down.
KEYWORD_MAX_CHARS = 1500
# Up to two-word phrases. With three, the top ten fill with overlapping fragments of one
# name ("South Dakota", "South Dakota Gov", "South Dakota governor", ...): recall of the
# publisher's tags falls to 0.522 while precision, which counts each fragment, rises to
# 0.426. Single words split names: recall 0.607, precision 0.264.
KEYWORD_MAX_WORDS = 2
# YAKE's tokenizer splits contractions off at ASCII apostrophes only: with typographic
# ones (U+2019) "n't", "'re" and "'ll" were keywords of one benchmark article in ten.
_TYPOGRAPHIC_APOSTROPHES = str.maketrans("\u2019\u2018", "''")

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


@cache
def _keyword_extractor(language: str) -> Yake:
    """One extractor per language and process, with the `yake` package's stopword list for
    the language (none for languages it has no list for, and `und`)."""
    return Yake(stopwords=set(yake_stopwords(language)), ngrams=KEYWORD_MAX_WORDS)


def extract_keywords(text: str, language: str, count: int) -> list[str]:
    """The `count` most relevant phrases, best first, each once whatever its case."""
    if count == 0:
        return []
    sample = text[:KEYWORD_MAX_CHARS].translate(_TYPOGRAPHIC_APOSTROPHES)
    try:
        found = _keyword_extractor(language).get_n_best(sample, n=count)
    except BaseException as error:
        # yake-rust panics when its tokenizer's regex runs out of backtracking (1,500
        # apostrophes in a row do it), and a panic is no Exception that the stage would
        # turn into a reject: such a text gets no keywords.
        if type(error).__name__ != "PanicException":
            raise
        return []
    return [phrase for phrase, _score in found]


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
    minhash.update_batch([s.encode() for s in sorted(shingles)])
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

"""Named entities by a linear-chain CRF (CRFsuite) over word features, for the languages
it has a model for: a small file per language in `tasks/stages/models/`, trained by
`python -m newsflow.evaluation.train_entities` (docs/quality.md: data, method, figures).

`entities-en.crfsuite.gz` is trained on wikigold (Balasuriya et al. 2009), the Broad
Twitter Corpus (Derczynski et al. 2016) and WNUT17 (Derczynski et al. 2017), each under
CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/); `entities-de.crfsuite.gz` on
the development split of GermEval 2014 (Benikova et al. 2014), CC BY 4.0.

Text is cut into lines and tokens as CoNLL data is (words, "U.S.", "Inc.", "'s" and
punctuation apart); each token is described by its lower-cased form, shape, affixes and
its neighbours', and the model tags the line as B-/I- PER, LOC, ORG or MISC. MISC
(events, nationalities, products) is not one of the lake's labels and is dropped.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources

import pycrfsuite
import regex
from newsflow.tasks.schema import EntityLabel

MODEL_FOLDER = "models"
LABELS: dict[str, EntityLabel] = {"PER": "PERSON", "LOC": "LOC", "ORG": "ORG"}
_ABBREVIATIONS = "Jr|Sr|Inc|Corp|Co|Ltd|Mr|Mrs|Ms|Dr|St|Rep|Sen|Gov|Gen|Prof|Lt|Col|Sgt|Mt|No"
_TOKEN = regex.compile(
    rf"(?:{_ABBREVIATIONS})\.|(?:\p{{Lu}}\.){{2,}}|\p{{Lu}}\.(?=\s\p{{Lu}})"
    r"|[\p{L}\p{M}\d]+(?:(?:[-&./]|(?<=\d),(?=\d)|['\u2019](?![sS]\b))[\p{L}\p{M}\d]+)*"
    r"|['\u2019][sS]\b|\S"
)
_SENTENCE_START_AFTER = frozenset(".!?:;\"'\u201c\u201d\u2018\u2019-\u2013\u2014|")
_WORD_CACHE = 1 << 16
# What else is known of each token of a line (its start and end in it), as model
# features: word lists ("place", "first_name", …), the rules' tags.
Hints = Callable[[str, list[tuple[int, int]]], list[tuple[str, ...]]]


@dataclass(frozen=True, slots=True)
class Mention:
    """One mention of an entity: `text[start:end]` is `text`. A model's mention carries
    the least marginal probability of its tokens' tags."""

    start: int
    end: int
    text: str
    label: EntityLabel
    confidence: float = 1.0

    # Built directly, not by dataclasses.replace: every mention of every line is shifted,
    # and replace's generic walk over the fields costs three times the construction.
    def shifted(self, offset: int) -> Mention:
        return Mention(
            self.start + offset, self.end + offset, self.text, self.label, self.confidence
        )

    def relabelled(self, label: EntityLabel) -> Mention:
        return Mention(self.start, self.end, self.text, label, self.confidence)


def tokenize(line: str) -> list[tuple[int, int]]:
    """Start and end of each token of a line."""
    return [m.span() for m in _TOKEN.finditer(line)]


def _shape(word: str) -> str:
    """Letters as X/x, digits as d, runs of one kind shortened to two: "McDonald" is
    "XxXx", "1996-12-06" "dd-dd-dd"."""
    shape = "".join(
        "X" if c.isupper() else "x" if c.isalpha() else "d" if c.isdigit() else c for c in word
    )
    return regex.sub(r"(.)\1{2,}", r"\1\1", shape)


_POSSESSIVES = frozenset({"'s", "\u2019s", "'", "\u2019"})
_OFFSETS = (-2, -1, 1, 2)
_EDGES = {offset: (f"{offset}edge",) for offset in _OFFSETS}


@lru_cache(maxsize=_WORD_CACHE)
def _word(word: str) -> tuple[tuple[str, ...], dict[int, tuple[str, str]], str, str]:
    """A word's own features, those it gives the words 2 and 1 before and after it, its
    lower-cased form and its shape."""
    lower = word.lower()
    shape = _shape(word)
    own = ("b", f"w={lower}", f"s={shape}", f"p3={lower[:3]}", f"x3={lower[-3:]}")
    own += (f"x2={lower[-2:]}",)
    near = {offset: (f"{offset}w={lower}", f"{offset}s={shape}") for offset in _OFFSETS}
    return own, near, lower, shape


@lru_cache(maxsize=_WORD_CACHE)
def _hint(known: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Features of what is known of a token: for itself, as the token before another, as
    the token after another."""
    return (
        tuple(f"g={k}" for k in known),
        tuple(f"-1g={k}" for k in known),
        tuple(f"1g={k}" for k in known),
    )


def token_features(words: list[str], known: list[tuple[str, ...]]) -> list[list[str]]:
    """CRF features of each token of a line: its own, its neighbours' words and shapes
    two either side, whether it starts a sentence, and what else is `known` of it and of
    the tokens beside it (word lists, rules)."""
    described = [_word(w) for w in words]
    hints = [_hint(k) for k in known]
    last = len(words) - 1
    features: list[list[str]] = []
    for i, (own, _near, lower, _shape) in enumerate(described):
        row = [*own, *hints[i][0]]
        if i == 0 or words[i - 1] in _SENTENCE_START_AFTER:
            row.append("start")
        if i:
            row += hints[i - 1][1]
        if i < last:
            row += hints[i + 1][2]
        for offset in _OFFSETS:
            j = i + offset
            row += described[j][1][offset] if 0 <= j <= last else _EDGES[offset]
        row.append(f"ws={lower}|{described[i + 1][3] if i < last else ''}")
        features.append(row)
    return features


@cache
def model_languages() -> frozenset[str]:
    """Languages with a model shipped in `tasks/stages/models/`."""
    folder = resources.files("newsflow.tasks.stages") / MODEL_FOLDER
    names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
    return frozenset(
        n.removeprefix("entities-").removesuffix(".crfsuite.gz")
        for n in names
        if n.startswith("entities-") and n.endswith(".crfsuite.gz")
    )


@cache
def _model(language: str) -> bytes:
    """The model file, unpacked. CRFsuite reads it in place: it must outlive the tagger."""
    path = (
        resources.files("newsflow.tasks.stages") / MODEL_FOLDER / f"entities-{language}.crfsuite.gz"
    )
    return gzip.decompress(path.read_bytes())


_THIS_THREAD = threading.local()


def _tagger(language: str) -> pycrfsuite.Tagger:
    """This thread's tagger: a tagger keeps the line it tagged last, which `marginal`
    reads, so threads (stage tasks of small runs run in-process, side by side) must not
    share one."""
    taggers: dict[str, pycrfsuite.Tagger] = _THIS_THREAD.__dict__.setdefault("taggers", {})
    if language not in taggers:
        taggers[language] = pycrfsuite.Tagger()
        taggers[language].open_inmemory(_model(language))
    return taggers[language]


def warm_up(language: str) -> None:
    _tagger(language)


def tagged_mentions(
    line: str, spans: list[tuple[int, int]], tags: list[str], confidence: Callable[[int], float]
) -> list[Mention]:
    """Mentions from a line's B-/I- tags (an I- after another type starts a mention),
    without a possessive ending ("Putin's"); `confidence(i)` is token i's."""
    found: list[Mention] = []
    start, kind = -1, ""
    for i, tag in enumerate([*tags, "O"]):
        tag_kind = tag[2:] if tag != "O" else ""
        if start >= 0 and (tag == "O" or tag.startswith("B-") or tag_kind != kind):
            end = i
            while end > start + 1 and line[spans[end - 1][0] : spans[end - 1][1]] in _POSSESSIVES:
                end -= 1
            if kind in LABELS:
                begin, finish = spans[start][0], spans[end - 1][1]
                least = min(confidence(j) for j in range(start, end))
                found.append(Mention(begin, finish, line[begin:finish], LABELS[kind], least))
            start = -1
        if tag != "O" and start < 0:
            start, kind = i, tag_kind
    return found


def model_mentions(text: str, language: str, hints: Hints) -> list[Mention]:
    """Every PER/LOC/ORG mention the language's model tags, in order, with offsets and
    confidence."""
    tagger = _tagger(language)
    found: list[Mention] = []
    offset = 0
    for line in text.split("\n"):
        spans = tokenize(line)
        if spans:
            words = [line[a:b] for a, b in spans]
            tags = tagger.tag(token_features(words, hints(line, spans)))

            def confidence(i: int, tags: list[str] = tags) -> float:
                return tagger.marginal(tags[i], i)

            found += [m.shifted(offset) for m in tagged_mentions(line, spans, tags, confidence)]
        offset += len(line) + 1
    return found

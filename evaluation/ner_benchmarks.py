"""Named entities on public news NER benchmarks, scored per type and per language.

The benchmark files may not be redistributed, so they stay outside the repository: give
their folder with `NEWSFLOW_NER_DATA` (or `--ner-data`); a benchmark whose file is absent
is skipped. Layout under that folder and sources: docs/quality.md.

Scoring is the CoNLL one: an entity is right when its token span and its type both match
a labelled one exactly; precision, recall and F1 are counted over all entities of a set.
Only PER, LOC and ORG are scored, the lake's three labels. MISC (CoNLL), OTH and the
derived and part-of-word classes (GermEval: "deutschen", "EU-Kommission") are removed
from the gold: a prediction on one of them counts as a false positive.

The tokens are put back together as running text (no space before "," or "'s", none
after "("), one sentence per line, and every document goes through the extractor as the
pipeline sends it an article. CoNLL-2002 Spanish has no document breaks: its sentences go
in consecutive groups of SPANISH_SENTENCES_PER_DOCUMENT. GermEval's sentences are
separate citations and go one by one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from newsflow.evaluation.corpus import Scores

LABELS = ("PER", "LOC", "ORG")
SPANISH_SENTENCES_PER_DOCUMENT = 20
_NO_SPACE_BEFORE = frozenset([*",.;:!?)]}%'", "'s", "n't", "'re", "'ve", "'ll", "'d", "'m"])
_NO_SPACE_AFTER = frozenset("([{$¿¡")

# WNUT17's types (emerging entities in social media) as CoNLL's.
TRAINING_TYPES = {
    "person": "PER",
    "location": "LOC",
    "corporation": "ORG",
    "group": "ORG",
    "product": "MISC",
    "creative-work": "MISC",
}

# tokens with their (B-/I-) tags, per sentence, per document
Document = list[list[tuple[str, str]]]
Span = tuple[int, int, str]  # token start, token end, label
# text and language -> (character start, character end, label) of each mention
Extractor = Callable[[str, str], Sequence[tuple[int, int, str]]]


@dataclass(frozen=True, slots=True)
class Benchmark:
    name: str
    language: str
    path: str  # under the data folder
    reader: Callable[[Path], list[Document]]
    published: str  # figures published for the same test set, with their source


@dataclass(slots=True)
class BenchmarkScores:
    benchmark: Benchmark
    documents: int
    tokens: int
    cpu_seconds: float
    counts: dict[str, list[int]] = field(default_factory=dict)  # label -> [tp, fp, fn]

    def scores(self, label: str | None = None) -> Scores:
        rows = [self.counts[label]] if label else list(self.counts.values())
        tp, fp, fn = (sum(r[i] for r in rows) for i in range(3))
        return Scores.of(tp / (tp + fp) if tp + fp else 0.0, tp / (tp + fn) if tp + fn else 0.0)

    @property
    def ms_per_600_tokens(self) -> float:
        return 1000 * self.cpu_seconds / self.tokens * 600


def ner_data_folder(default: Path | None = None) -> Path | None:
    """The folder of benchmark files: NEWSFLOW_NER_DATA, else `default`."""
    value = os.environ.get("NEWSFLOW_NER_DATA")
    return Path(value) if value else default


def _bio(tag: str, keep: Callable[[str], str | None]) -> str:
    """A B-/I- tag with its type mapped by `keep` (None: outside)."""
    if tag == "O" or "-" not in tag:
        return "O"
    prefix, kind = tag.split("-", 1)
    label = keep(kind)
    return f"{prefix}-{label}" if label else "O"


def _conll_label(kind: str) -> str | None:
    return kind if kind in LABELS else None


def _read_columns(path: Path, encoding: str = "utf-8") -> Iterator[tuple[str, str] | None]:
    """(token, last column) per line, None at a sentence break, ("-DOCSTART-", "") at a
    document break."""
    for line in path.read_text(encoding=encoding).splitlines():
        parts = line.split()
        if not parts:
            yield None
        elif parts[0] == "-DOCSTART-":
            yield ("-DOCSTART-", "")
        else:
            yield parts[0], parts[-1]


def read_conll(path: Path, sentences_per_document: int | None = None) -> list[Document]:
    """CoNLL-2002/2003 files: documents at -DOCSTART-, else groups of sentences."""
    documents: list[Document] = [[]]
    sentence: list[tuple[str, str]] = []
    for row in [*_read_columns(path), None]:
        if row is not None and row[0] != "-DOCSTART-":
            sentence.append((row[0], _bio(row[1], _conll_label)))
            continue
        if sentence:
            if sentences_per_document and len(documents[-1]) >= sentences_per_document:
                documents.append([])
            documents[-1].append(sentence)
            sentence = []
        if row is not None and documents[-1]:
            documents.append([])
    return [d for d in documents if d]


def read_conll_tagged(path: Path) -> list[list[tuple[str, str]]]:
    """The sentences of a CoNLL file with all its types (MISC too), for training, in
    IOB2 (a B- at every entity's start; IOB1 files mark only adjacent ones), WNUT17's
    types as CoNLL's (TRAINING_TYPES)."""
    sentences: list[list[tuple[str, str]]] = []
    sentence: list[tuple[str, str]] = []
    for row in [*_read_columns(path), None]:
        if row is not None and row[0] != "-DOCSTART-":
            prefix, _dash, kind = row[1].partition("-")
            tag = f"{prefix}-{TRAINING_TYPES.get(kind, kind)}" if kind else "O"
            previous = sentence[-1][1] if sentence else "O"
            if tag.startswith("I-") and previous[2:] != tag[2:]:
                tag = "B-" + tag[2:]
            sentence.append((row[0], tag))
        elif sentence:
            sentences.append(sentence)
            sentence = []
    return sentences


def read_germeval_tagged(path: Path) -> list[list[tuple[str, str]]]:
    """GermEval 2014 TSV sentences for training: outer tags, OTH as MISC, the -deriv and
    -part classes outside."""
    kinds = {"PER": "PER", "LOC": "LOC", "ORG": "ORG", "OTH": "MISC"}
    return [
        [(token, _bio(tag, kinds.get)) for token, tag in document[0]]
        for document in _read_germeval_outer(path)
    ]


def read_spanish_conll(path: Path) -> list[Document]:
    return read_conll(path, SPANISH_SENTENCES_PER_DOCUMENT)


def _read_germeval_outer(path: Path) -> list[Document]:
    """GermEval 2014 TSV: each sentence its own document, with its outer-level tags."""
    documents: list[Document] = []
    sentence: list[tuple[str, str]] = []
    for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        if line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) >= 3:
            sentence.append((parts[1], parts[2]))
        elif sentence:
            documents.append([sentence])
            sentence = []
    return documents


def read_germeval(path: Path) -> list[Document]:
    """GermEval 2014 TSV for scoring: PER, LOC and ORG only."""
    return [
        [[(token, _bio(tag, _conll_label)) for token, tag in document[0]]]
        for document in _read_germeval_outer(path)
    ]


BENCHMARKS = (
    Benchmark(
        "CoNLL-2003 English test (Reuters)",
        "en",
        "conll2003/test.txt",
        read_conll,
        "best of the shared task (Florian et al. 2003) 88.76 F1 on all four types",
    ),
    Benchmark(
        "CoNLL-2002 Spanish test (EFE)",
        "es",
        "conll2002/esp.testb",
        read_spanish_conll,
        "best of the shared task (Carreras et al. 2002) 81.39 F1 on all four types",
    ),
    Benchmark(
        "CoNLL-2002 Dutch test (De Morgen)",
        "nl",
        "conll2002/ned.testb",
        read_conll,
        "best of the shared task (Carreras et al. 2002) 77.05 F1 on all four types",
    ),
    Benchmark(
        "GermEval 2014 test (Wikipedia and news)",
        "de",
        "germeval2014/NER-de-test.tsv",
        read_germeval,
        "best of the shared task (ExB) 76.38 F1 on its official metric, which also scores"
        " nested names and the -deriv/-part classes",
    ),
)


def detokenize(tokens: Sequence[str]) -> tuple[str, list[int]]:
    """Running text from tokens, and each token's character offset in it."""
    text = ""
    offsets: list[int] = []
    glue = True
    for token in tokens:
        if not glue and token not in _NO_SPACE_BEFORE:
            text += " "
        offsets.append(len(text))
        text += token
        glue = token in _NO_SPACE_AFTER
    return text, offsets


def gold_spans(tags: Sequence[str]) -> set[Span]:
    """Token spans of the entities in B-/I- tags (an I- after another type starts one)."""
    spans: set[Span] = set()
    start, label = -1, ""
    for i, tag in enumerate([*tags, "O"]):
        kind = tag[2:] if tag != "O" else ""
        if start >= 0 and (tag == "O" or tag.startswith("B-") or kind != label):
            spans.add((start, i, label))
            start = -1
        if tag != "O" and start < 0:
            start, label = i, kind
    return spans


def _token_spans(
    mentions: Sequence[tuple[int, int, str]], starts: dict[int, int], ends: dict[int, int]
) -> set[Span]:
    """Mentions as token spans; one whose edges fall inside a token matches nothing."""
    spans: set[Span] = set()
    for start, end, label in mentions:
        first, last = starts.get(start, -1), ends.get(end, -1)
        spans.add((first, last + 1, label) if first >= 0 and last >= 0 else (-start - 1, 0, label))
    return spans


def evaluate_benchmark(benchmark: Benchmark, folder: Path, extract: Extractor) -> BenchmarkScores:
    documents = benchmark.reader(folder / benchmark.path)
    result = BenchmarkScores(benchmark, len(documents), 0, 0.0, {k: [0, 0, 0] for k in LABELS})
    warm_up = " ".join(token for sentence in documents[0] for token, _tag in sentence)
    extract(warm_up, benchmark.language)  # models and word lists load once per process
    for document in documents:
        tokens = [token for sentence in document for token, _tag in sentence]
        tags = [tag for sentence in document for _token, tag in sentence]
        lines = [detokenize([t for t, _ in sentence]) for sentence in document]
        text = "\n".join(line for line, _ in lines)
        offsets: list[int] = []
        base = 0
        for line, line_offsets in lines:
            offsets += [base + o for o in line_offsets]
            base += len(line) + 1
        starts = {o: i for i, o in enumerate(offsets)}
        ends = {o + len(tokens[i]): i for i, o in enumerate(offsets)}
        started = time.process_time()
        mentions = extract(text, benchmark.language)
        result.cpu_seconds += time.process_time() - started
        result.tokens += len(tokens)
        found = _token_spans(mentions, starts, ends)
        gold = gold_spans(tags)
        for span in found:
            result.counts[span[2]][0 if span in gold else 1] += 1
        for span in gold - found:
            result.counts[span[2]][2] += 1
    return result


def pipeline_extractor(text: str, language: str) -> list[tuple[int, int, str]]:
    """The extract stage's entities, with its labels mapped to CoNLL's."""
    from newsflow.tasks.stages.extract import find_mentions

    labels = {"PERSON": "PER", "LOC": "LOC", "ORG": "ORG"}
    return [(m.start, m.end, labels[m.label]) for m in find_mentions(text, language)]


def evaluate_ner_benchmarks(
    folder: Path, extract: Extractor = pipeline_extractor
) -> list[BenchmarkScores]:
    """Scores on each benchmark whose test file is in `folder`."""
    return [
        evaluate_benchmark(b, folder, extract) for b in BENCHMARKS if (folder / b.path).is_file()
    ]

"""Keyphrases on a public news benchmark: 500N-KPCrowd v1.1 (Marujo et al., LREC 2012),
500 English news stories with the keyphrases most of 18-20 crowd readers chose.

The data is not in the repository: `NEWSFLOW_KPCROWD_DIR` (default
`/work/data-keyphrases/500N-KPCrowd-v1.1`) names the folder unpacked from
`datasets/500N-KPCrowd-v1.1.zip` of github.com/LIAAD/KeywordExtractor-Datasets, with
`docsutf8/<id>.txt` and `keys/<id>.key`; the evaluation is skipped when it is absent.

Matching is the standard one of the YAKE and pke papers: a keyphrase and a reference
match when their words, lower-cased and Porter-stemmed, are equal. F1@k is per document
(precision over the k keyphrases returned, or fewer when fewer come out, recall over the
document's references), macro-averaged over the documents. Each document goes through
the enrich stage's `extract_keywords` as an English article whose first line is its
title, the way the pipeline runs it.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import regex
import snowballstemmer
from newsflow.tasks.stages.enrich import extract_keywords

DEFAULT_DIR = Path("/work/data-keyphrases/500N-KPCrowd-v1.1")
CUTOFFS = (5, 10)
_WORD = regex.compile(r"[\p{L}\p{N}]+")
# Published F1@10 on this data, LIAAD/yake's README (Campos et al., Information Sciences
# 509, 2020): YAKE 0.173, the best of ten other unsupervised methods TopicRank 0.172.
PUBLISHED_F1_AT_10 = {"YAKE": 0.173, "TopicRank (best other unsupervised)": 0.172}


@dataclass(frozen=True, slots=True)
class KeyphraseScores:
    documents: int
    f1: dict[int, float]  # cutoff -> macro-averaged F1
    precision: dict[int, float]
    recall: dict[int, float]
    cpu_ms_per_document: float


def benchmark_dir() -> Path | None:
    """The unpacked benchmark, or None when this machine has none."""
    folder = Path(os.environ.get("NEWSFLOW_KPCROWD_DIR", DEFAULT_DIR))
    return folder if (folder / "docsutf8").is_dir() and (folder / "keys").is_dir() else None


@cache
def _porter() -> snowballstemmer.stemmer:
    return snowballstemmer.stemmer("porter")


def normalise(phrase: str) -> str:
    """Lower-cased, Porter-stemmed words joined by one space."""
    return " ".join(_porter().stemWords(_WORD.findall(phrase.lower())))


def load_documents(folder: Path) -> list[tuple[str, str, set[str]]]:
    """(id, text, normalised references) of every document, in id order."""
    documents = []
    for key_file in sorted((folder / "keys").glob("*.key")):
        text = (folder / "docsutf8" / f"{key_file.stem}.txt").read_text(encoding="utf-8")
        lines = key_file.read_text(encoding="utf-8").splitlines()
        references = {n for line in lines if (n := normalise(line))}
        documents.append((key_file.stem, text, references))
    return documents


def evaluate_keyphrases(folder: Path, count: int = max(CUTOFFS)) -> KeyphraseScores:
    """F1@5 and F1@10 of the enrich stage's keyphrases, and their CPU cost."""
    documents = load_documents(folder)
    scores: dict[int, list[tuple[float, float, float]]] = {k: [] for k in CUTOFFS}
    cpu = 0.0
    for _id, text, references in documents:
        started = time.process_time()
        keyphrases = extract_keywords(text.strip(), "en", count)
        cpu += time.process_time() - started
        found = list(dict.fromkeys(n for k in keyphrases if (n := normalise(k))))
        for cutoff in CUTOFFS:
            top = found[:cutoff]
            right = sum(phrase in references for phrase in top)
            precision = right / len(top) if top else 0.0
            recall = right / len(references) if references else 0.0
            f1 = 2 * precision * recall / (precision + recall) if right else 0.0
            scores[cutoff].append((precision, recall, f1))
    return KeyphraseScores(
        documents=len(documents),
        f1={k: statistics.mean(s[2] for s in v) for k, v in scores.items()},
        precision={k: statistics.mean(s[0] for s in v) for k, v in scores.items()},
        recall={k: statistics.mean(s[1] for s in v) for k, v in scores.items()},
        cpu_ms_per_document=1000 * cpu / len(documents),
    )

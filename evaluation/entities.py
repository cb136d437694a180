"""Named-entity precision and recall on small hand-labelled sets.

`entities.json` is our own annotation of the lead (first paragraphs, up to LEAD_CHARS) of
24 English corpus articles' ground-truth bodies, which the extraction rules were written
against; `entities-holdout.json` annotates 14 other articles (12 English, 2 Portuguese)
the same way, labelled without sight of the extractor: its figures are the honest ones.
Both mark every person, organisation (companies,
agencies, teams, publications, parties) and place (countries, cities, regions, named
buildings) as written, in the lake's three labels. Nationalities, products, events,
indexes and celestial bodies are not entities here, as in the stage. Scoring is per
article on distinct names: a found entity is right when its name and label match a
labelled one, or when it is a PERSON whose words all belong to a labelled person's name
(the surname mentions after the first).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from newsflow.evaluation.corpus import DEFAULT_CORPUS, corpus_pages
from newsflow.tasks.stages.extract import find_entities
from newsflow.tasks.stages.language import detect_language

LABELS_FILE = Path(__file__).with_name("entities.json")
HOLDOUT_FILE = Path(__file__).with_name("entities-holdout.json")
# The labelled lead: ground-truth paragraphs while they fit in this many characters.
LEAD_CHARS = 700
_POSSESSIVE = re.compile(r"'s?$")


@dataclass(frozen=True, slots=True)
class EntityScores:
    articles: int
    labelled: int
    found: int
    precision: float
    recall: float
    per_label: dict[str, tuple[float, float]]  # label -> (precision, recall)


def lead(body: str) -> str:
    """The first ground-truth paragraphs, up to LEAD_CHARS (at least one paragraph)."""
    kept: list[str] = []
    for paragraph in (p for p in body.split("\n") if p.strip()):
        if kept and len("\n".join(kept)) + len(paragraph) > LEAD_CHARS:
            break
        kept.append(paragraph)
    return "\n".join(kept)


def _norm(text: str) -> str:
    text = " ".join(text.replace("\u2019", "'").casefold().split())
    return _POSSESSIVE.sub("", text.removeprefix("the ")).removesuffix(".")


def _right(name: str, label: str, gold: set[tuple[str, str]]) -> bool:
    if (name, label) in gold:
        return True
    person_words = {w for n, lab in gold if lab == "PERSON" for w in n.split()}
    return label == "PERSON" and set(name.split()) <= person_words


def evaluate_entities(
    corpus: Path = DEFAULT_CORPUS, labels_file: Path = LABELS_FILE
) -> EntityScores:
    """Scores of the stage's extractor, run as the pipeline runs it: in the detected language."""
    labels = json.loads(labels_file.read_text(encoding="utf-8"))
    bodies = {p.page_id: p.body for p in corpus_pages(corpus)}
    counts = {label: [0, 0, 0, 0] for label in ("PERSON", "ORG", "LOC")}  # tp_p, fp, tp_r, fn
    for page_id, entities in labels.items():
        gold = {(_norm(e["text"]), e["label"]) for e in entities}
        text = lead(bodies[page_id])
        language, _confidence = detect_language(text)
        found = {(_norm(e.text), e.label) for e in find_entities(text, language)}
        for name, label in found:
            counts[label][0 if _right(name, label, gold) else 1] += 1
        for name, label in gold:
            counts[label][2 if (name, label) in found else 3] += 1
    per_label = {
        label: (tp / (tp + fp) if tp + fp else 1.0, hit / (hit + miss) if hit + miss else 1.0)
        for label, (tp, fp, hit, miss) in counts.items()
    }
    tp, fp, hit, miss = (sum(c[i] for c in counts.values()) for i in range(4))
    return EntityScores(
        articles=len(labels),
        labelled=hit + miss,
        found=tp + fp,
        precision=tp / (tp + fp) if tp + fp else 1.0,
        recall=hit / (hit + miss) if hit + miss else 1.0,
        per_label=per_label,
    )

"""The public-benchmark scorer on a small CoNLL file written here: reading, running text,
exact span + type matching, MISC out of the gold."""

from __future__ import annotations

from pathlib import Path

from newsflow.evaluation.ner_benchmarks import (
    Benchmark,
    detokenize,
    evaluate_benchmark,
    gold_spans,
    read_conll,
    read_conll_tagged,
)

CONLL = """-DOCSTART- -X- O

Bitar B-PER
's O
goal O
for O
Japan B-LOC
( O
U.S. B-LOC
) O
. O

The O
Asian B-MISC
Cup I-MISC
in O
New B-LOC
York I-LOC
. O

-DOCSTART- -X- O

Acme I-ORG
Widgets I-ORG
won O
"""


def test_running_text_and_offsets() -> None:
    tokens = ["Bitar", "'s", "goal", "(", "U.S.", ")", "."]
    text, offsets = detokenize(tokens)
    assert text == "Bitar's goal (U.S.)."
    assert [text[o : o + len(t)] for o, t in zip(offsets, tokens, strict=True)] == tokens


def test_gold_spans_with_iob1_and_types() -> None:
    assert gold_spans(["B-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG"]) == {
        (0, 2, "PER"),
        (3, 4, "LOC"),
        (4, 5, "LOC"),
        (5, 6, "ORG"),
    }


def test_documents_and_training_tags(tmp_path: Path) -> None:
    path = tmp_path / "test.txt"
    path.write_text(CONLL, encoding="utf-8")
    documents = read_conll(path)
    assert [len(d) for d in documents] == [2, 1]
    assert documents[0][1][1] == ("Asian", "O")  # MISC is out of the gold
    tagged = read_conll_tagged(path)
    assert tagged[1][1:3] == [("Asian", "B-MISC"), ("Cup", "I-MISC")]
    assert tagged[2][:2] == [("Acme", "B-ORG"), ("Widgets", "I-ORG")]  # IOB1 made IOB2


def test_exact_span_and_type_scoring(tmp_path: Path) -> None:
    (tmp_path / "test.txt").write_text(CONLL, encoding="utf-8")
    benchmark = Benchmark("tiny", "en", "test.txt", read_conll, "")

    texts: list[str] = []

    def extract(text: str, language: str) -> list[tuple[int, int, str]]:
        texts.append(text)
        wanted = {
            "Bitar": "PER",  # right
            "Japan": "ORG",  # right span, wrong type
            "U.S": "LOC",  # edge inside a token: matches nothing
            "Asian Cup": "ORG",  # MISC in the gold: a false positive
            "New York": "LOC",  # right
            "Acme": "ORG",  # too short
        }
        found = []
        for name, label in wanted.items():
            at = text.find(name)
            if at >= 0:
                found.append((at, at + len(name), label))
        return found

    result = evaluate_benchmark(benchmark, tmp_path, extract)
    assert texts[1:] == [  # after one untimed warm-up call
        "Bitar's goal for Japan (U.S.).\nThe Asian Cup in New York.",
        "Acme Widgets won",
    ]
    assert (result.documents, result.tokens) == (2, 19)
    assert result.counts == {"PER": [1, 0, 0], "LOC": [1, 1, 2], "ORG": [0, 3, 1]}
    assert round(result.scores().precision, 3) == round(2 / 6, 3)
    assert round(result.scores().recall, 3) == round(2 / 5, 3)

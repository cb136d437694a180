"""Train the entity model of a language from CoNLL-format (or GermEval TSV) files:

    python -m newsflow.evaluation.train_entities --language en --train PATH [PATH ...] \
        [--iterations N]

writes `tasks/stages/models/entities-<language>.crfsuite.gz`. The features are the stage's own
(`newsflow.tasks.stages.entities.token_features`), one sequence per sentence, all four CoNLL types
(MISC too, so that the model learns what is not a person, place or organisation).
"""

from __future__ import annotations

import argparse
import gzip
import tempfile
import time
from pathlib import Path

import pycrfsuite
from newsflow.evaluation.ner_benchmarks import detokenize, read_conll_tagged, read_germeval_tagged
from newsflow.tasks.stages.entities import MODEL_FOLDER, token_features
from newsflow.tasks.stages.extract import token_hints

MODELS = Path(__file__).resolve().parents[1] / "tasks" / "stages" / MODEL_FOLDER


def _read_tagged(path: Path) -> list[list[tuple[str, str]]]:
    """A training file's sentences: GermEval's TSV (`.tsv`) or CoNLL columns."""
    return read_germeval_tagged(path) if path.suffix == ".tsv" else read_conll_tagged(path)


def train_model(train: list[Path], language: str, iterations: int, c1: float, c2: float) -> Path:
    """Fit the model and write it, gzipped, beside the stage; returns its path."""
    trainer = pycrfsuite.Trainer(verbose=False)
    for sentence in (s for path in train for s in _read_tagged(path)):
        words = [t for t, _ in sentence]
        line, offsets = detokenize(words)
        spans = [(o, o + len(w)) for o, w in zip(offsets, words, strict=True)]
        trainer.append(
            token_features(words, token_hints(line, spans, language)), [t for _, t in sentence]
        )
    trainer.set_params(
        {
            "c1": c1,
            "c2": c2,
            "max_iterations": iterations,
            "feature.possible_transitions": True,
        }
    )
    with tempfile.TemporaryDirectory() as folder:
        model = Path(folder) / "model.crfsuite"
        trainer.train(str(model))
        target = MODELS / f"entities-{language}.crfsuite.gz"
        target.write_bytes(gzip.compress(model.read_bytes(), compresslevel=9, mtime=0))
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--language", required=True)
    parser.add_argument("--train", type=Path, nargs="+", required=True)
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--c1", type=float, default=0.2)
    parser.add_argument("--c2", type=float, default=0.01)
    args = parser.parse_args()
    started = time.process_time()
    path = train_model(args.train, args.language, args.iterations, args.c1, args.c2)
    print(f"{path}: {path.stat().st_size:,} bytes, {time.process_time() - started:.0f} CPU s")


if __name__ == "__main__":
    main()

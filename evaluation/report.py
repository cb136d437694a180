"""Every quality figure on the shared corpus, as `newsflow evaluate` prints them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from newsflow.evaluation.corpus import DEFAULT_CORPUS, Scores, corpus_pages
from newsflow.evaluation.duplicates import evaluate_duplicates
from newsflow.evaluation.entities import HOLDOUT_FILE, LABELS_FILE, evaluate_entities
from newsflow.evaluation.extraction import HalfScores, evaluate_html, evaluate_scraped
from newsflow.evaluation.keyphrases import PUBLISHED_F1_AT_10, benchmark_dir, evaluate_keyphrases
from newsflow.evaluation.keywords import evaluate_keywords
from newsflow.evaluation.language import DEVELOPMENT_SENTENCES, evaluate_languages
from newsflow.evaluation.metadata import evaluate_metadata
from newsflow.evaluation.ner_benchmarks import LABELS, evaluate_ner_benchmarks, ner_data_folder


def _scores(scores: Scores) -> str:
    return f"P {scores.precision:.3f}  R {scores.recall:.3f}  F1 {scores.f1:.3f}"


def _halves(name: str, result: HalfScores) -> Iterator[str]:
    yield f"  {name}"
    yield f"    development half   {_scores(result.development)}"
    yield f"    confirmation half  {_scores(result.confirmation)}"
    yield f"    all pages          {_scores(result.overall)}"


def _ner_benchmark_lines() -> Iterator[str]:
    folder = ner_data_folder()
    yield ""
    if folder is None:
        yield "Entities on public NER benchmarks: skipped (set NEWSFLOW_NER_DATA to their folder)"
        return
    yield f"Entities on public NER benchmarks in {folder} (exact span and type, PER/LOC/ORG):"
    for result in evaluate_ner_benchmarks(folder):
        yield (
            f"  {result.benchmark.name}: {result.documents} documents, {result.tokens} tokens,"
            f" {result.ms_per_600_tokens:.1f} CPU ms per 600 tokens"
        )
        yield f"    all  {_scores(result.scores())}"
        for label in LABELS:
            tp, fp, _fn = result.counts[label]
            yield f"    {label}  {_scores(result.scores(label)) if tp + fp else 'none labelled'}"
        yield f"    published: {result.benchmark.published}"


def report_lines(corpus: Path = DEFAULT_CORPUS) -> Iterator[str]:
    """The report, line by line, computed as it is printed (about a minute in all)."""
    pages = corpus_pages(corpus)
    yield f"Body text: {len(pages)} pages, Article Extraction Benchmark scoring"
    yield from _halves("saved HTML (clean stage)", evaluate_html(pages))
    raw, cleaned = evaluate_scraped(pages)
    yield from _halves("pages rendered to text with menus and footers, uncleaned", raw)
    yield from _halves("the same, through the scraped-text rules", cleaned)

    results = evaluate_languages(corpus)
    sentences = sum(r.sentences for r in results)
    development = sum(r.correct_development for r in results)
    confirmation = sum(r.correct_confirmation for r in results)
    development_total = len(results) * DEVELOPMENT_SENTENCES
    texts, right_texts = sum(r.texts for r in results), sum(r.correct_texts for r in results)
    yield ""
    yield f"Language: {len(results)} languages langdetect knows"
    yield (
        f"  single sentences   {(development + confirmation) / sentences:.2%} of {sentences}"
        f"  (first {DEVELOPMENT_SENTENCES} per language {development / development_total:.2%},"
        f" rest {confirmation / (sentences - development_total):.2%})"
    )
    yield f"  5-sentence texts   {right_texts / texts:.2%} of {texts} ({texts - right_texts} wrong)"
    yield "  per language (single sentences, 5-sentence texts):"
    for r in results:
        yield f"    {r.code:3s} {r.sentence_accuracy:7.1%} {r.correct_texts:4d}/{r.texts}"
    for r in results:
        for detected, text in r.errors:
            yield f"  wrong 5-sentence text: {r.code} read as {detected}: {text[:80]}…"

    for name, labels_file in (("rules written against", LABELS_FILE), ("held out", HOLDOUT_FILE)):
        entities = evaluate_entities(corpus, labels_file)
        yield ""
        yield (
            f"Entities ({name}): {entities.articles} hand-labelled leads, "
            f"{entities.labelled} labelled, {entities.found} found"
        )
        yield f"  all     P {entities.precision:.3f}  R {entities.recall:.3f}"
        for label, (precision, recall) in entities.per_label.items():
            yield f"  {label:7s} P {precision:.3f}  R {recall:.3f}"

    yield from _ner_benchmark_lines()

    yield ""
    yield "Metadata, on the pages whose HTML states the field:"
    for name, accuracy in evaluate_metadata(corpus).items():
        yield f"  {name:6s} {accuracy.accuracy:.1%} of {accuracy.stated}"

    keywords = evaluate_keywords(corpus)
    yield ""
    yield (
        f"Keywords: {len(keywords.pages)} of the {keywords.tagged} pages stating tags have one "
        "whose words are all in the text"
    )
    yield from _halves("keywords naming a tag (P), tags named by a keyword (R)", keywords.scores)
    yield from _keyphrase_benchmark()

    duplicates = evaluate_duplicates(corpus)
    yield ""
    yield f"Near duplicates: {duplicates.stories} stories"
    for kind, rate in duplicates.missed_copies.items():
        yield f"  missed: {kind:34s} {rate:.1%}"
    yield (
        f"  grouped: different stories ({duplicates.different_pairs} pairs)"
        f"{'':9s}{duplicates.false_groupings:.2%}"
    )


def _keyphrase_benchmark() -> Iterator[str]:
    """500N-KPCrowd figures beside the published ones, when the data is on this machine."""
    folder = benchmark_dir()
    yield ""
    if folder is None:
        yield "Keyphrases, 500N-KPCrowd: not on this machine (NEWSFLOW_KPCROWD_DIR)"
        return
    result = evaluate_keyphrases(folder)
    yield (
        f"Keyphrases, 500N-KPCrowd ({result.documents} news stories, Porter-stemmed exact "
        f"match): F1@5 {result.f1[5]:.3f}  F1@10 {result.f1[10]:.3f}  "
        f"({result.cpu_ms_per_document:.1f} CPU ms a story)"
    )
    for method, f1 in PUBLISHED_F1_AT_10.items():
        yield f"  published F1@10: {method} {f1:.3f}"

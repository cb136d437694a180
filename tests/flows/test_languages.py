"""Every language the detector can return, through every stage of the real flow: an
article-length text of each, uploaded to the S3 server, comes back from the lake as an
article in that language with its keyphrases, and no stage fails on it."""

from __future__ import annotations

from pathlib import Path

import pytest
from newsflow.evaluation.corpus import language_codes, language_sentences
from newsflow.flows.ingest import ingest_articles
from newsflow.tasks.lake import Lake
from newsflow.tasks.settings import Settings
from newsflow.tasks.stages.language import _codes

from tests.conftest import read_table

pytestmark = pytest.mark.usefixtures("prefect_api")

# The corpus names Norwegian Bokmål `nb`; the detector (ISO 639-1) says `no`.
CORPUS_FILE = {"no": "nb"}
# Languages langdetect has profiles for but the corpus has no sentences of.
WITHOUT_SENTENCES = {"kn", "ml", "ne"}
SENTENCES = 12


def article_text(code: str) -> str:
    """A dozen sentences of the language (from the corpus file's first 200 lines) as a
    scraped page: a title line, then paragraphs of four sentences."""
    sentences = language_sentences(CORPUS_FILE.get(code, code))[:200][:SENTENCES]
    paragraphs = [" ".join(sentences[i : i + 4]) for i in range(1, SENTENCES, 4)]
    return "\n\n".join([sentences[0], *paragraphs])


def detector_languages() -> list[str]:
    return sorted(set(_codes()))


def test_corpus_covers_the_detector() -> None:
    available = {CORPUS_FILE.get(c, c) for c in detector_languages()} & set(language_codes())
    missing = {c for c in detector_languages() if CORPUS_FILE.get(c, c) not in available}
    assert missing == WITHOUT_SENTENCES


def test_every_language_through_every_stage(s3, bucket: str, tmp_path: Path) -> None:
    codes = [c for c in detector_languages() if c not in WITHOUT_SENTENCES]
    texts = {f"inbox/languages/{code}.txt": article_text(code) for code in codes}
    for key, text in texts.items():
        s3.put_object(Bucket=bucket, Key=key, Body=text.encode())
    output = tmp_path / "lake"
    ingest_articles(input_uri=f"s3://{bucket}/inbox", output_uri=str(output))

    lake = Lake.open(str(output), Settings())
    rejects = read_table(lake, "rejects")
    assert rejects == []
    articles = {a["object_key"]: a for a in read_table(lake, "articles")}
    assert sorted(articles) == sorted(texts)
    for key, article in articles.items():
        code = key.rsplit("/", 1)[1].removesuffix(".txt")
        assert article["language"] == code, key
        assert article["keywords"], f"{code}: no keyphrases"
        written = f"{article['title'] or ''}\n{article['text']}".replace("\u2019", "'")
        folded = written.casefold()
        for keyword in article["keywords"]:
            assert keyword.casefold() in folded, f"{code}: {keyword!r} is not in the text"
        assert isinstance(article["entities"], list)

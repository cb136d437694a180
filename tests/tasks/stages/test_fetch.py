"""Fetch: formats, decoding, limits and hostile input, on bytes and against the S3 server."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime

import pytest
from newsflow.tasks.s3 import ObjectRef, S3Location
from newsflow.tasks.schema import RejectedArticle
from newsflow.tasks.settings import Settings
from newsflow.tasks.stages.fetch import (
    batch_id_for,
    decode_bytes,
    fetch_objects,
    gunzip_bounded,
    list_objects,
    parse_object,
    slugify,
    source_from_key,
)

LOCATION = S3Location.parse("s3://bucket/inbox")
MODIFIED = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def parse(key: str, data: bytes, **settings: int):
    return parse_object(
        ObjectRef(key, "etag", len(data), MODIFIED), data, LOCATION, Settings(**settings)
    )


def only_reject(key: str, data: bytes, **settings: int) -> str:
    articles, rejects = parse(key, data, **settings)
    assert articles == [] and len(rejects) == 1, (articles, rejects)
    assert rejects[0].stage == "fetch" and rejects[0].object_key == key
    return rejects[0].reason


@pytest.mark.parametrize(
    ("key", "prefix", "expected"),
    [
        ("inbox/bbc/2026/x.html", "inbox/", "bbc"),
        ("inbox/Le Monde/x.html", "inbox/", "le-monde"),
        ("inbox/x.html", "inbox/", "unknown"),
        ("inbox/../../etc/passwd.html", "inbox/", "unknown"),
        ("inbox/a=b/x.html", "inbox/", "a-b"),
        ("inbox/Ñandú Times/x.html", "inbox/", "nandu-times"),
        ("inbox/\x00\x1f/x.html", "inbox/", "unknown"),
    ],
)
def test_source_is_a_safe_slug_of_the_first_segment(key: str, prefix: str, expected: str) -> None:
    assert source_from_key(key, prefix) == expected


def test_slug_is_bounded_and_never_a_path() -> None:
    slug = slugify("a/" * 500)
    assert len(slug) <= 64 and "/" not in slug and ".." not in slug


def test_formats_by_extension_case_insensitive_and_gzip() -> None:
    html = b"<html><body><p>Hello</p></body></html>"
    for key, data, content_type in [
        ("inbox/s/a.HTML", html, "html"),
        ("inbox/s/a.htm.gz", gzip.compress(html), "html"),
        ("inbox/s/a.TXT", b"plain text", "text"),
    ]:
        articles, rejects = parse(key, data)
        assert rejects == [] and articles[0].content_type == content_type


def test_json_fields_are_kept_and_published_at_is_utc() -> None:
    body = {
        "text": "Body",
        "title": "T",
        "url": "https://x.example/a",
        "author": ["A", "B"],
        "published_at": "2026-03-01T10:00:00+02:00",
        "source": "The Wire!",
        "id": 7,
    }
    [article], rejects = parse("inbox/s/a.json", json.dumps(body).encode())
    assert rejects == []
    assert (article.title, article.url, article.author) == ("T", "https://x.example/a", "A, B")
    assert article.published_at == datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    assert (
        article.source == "the-wire" and article.stated_id == "7" and article.date == "2026-03-01"
    )


def test_jsonl_bad_line_is_rejected_alone() -> None:
    lines = [
        json.dumps({"text": "first"}),
        "{not json",
        json.dumps({"title": "no body"}),
        json.dumps({"text": "fourth", "id": "x"}),
        json.dumps({"text": "fifth", "id": "x"}),
        "",
        json.dumps({"html": "<p>seventh</p>", "title": 5}),
    ]
    articles, rejects = parse("inbox/s/feed.jsonl", "\n".join(lines).encode())
    assert [a.line_number for a in articles] == [1, 4]
    assert {r.line_number: r.reason.split(":")[0] for r in rejects} == {
        2: "malformed JSON",
        3: "invalid article JSON",
        5: "duplicate id 'x' (first on line 4)",
        7: "invalid article JSON",
    }
    assert len({a.article_id for a in articles}) == 2


@pytest.mark.parametrize(
    ("key", "data", "reason"),
    [
        ("inbox/s/empty.html", b"", "empty object"),
        ("inbox/s/blank.txt", b"  \n\t ", "empty object"),
        ("inbox/s/nul.txt", b"abc\x00def" * 10, "binary content"),
        ("inbox/s/noise.html", bytes(range(1, 32)) * 50, "binary content"),
        ("inbox/s/c1.txt", ("é C1 controls: " + "\x80\x85\x9f" * 20).encode(), "binary content"),
        ("inbox/s/cut.txt.gz", gzip.compress(b"x" * 10_000)[:-12], "truncated gzip"),
        ("inbox/s/notgzip.txt.gz", b"plain text, not gzip", "corrupt gzip"),
        ("inbox/s/list.json", b"[1, 2]", "expected a JSON object"),
        ("inbox/s/bad.json", b'{"text": ', "malformed JSON"),
        (
            "inbox/s/typed.json",
            b'{"text": "x", "published_at": "yesterday"}',
            "invalid article JSON",
        ),
        (
            "inbox/s/deep.json",
            b'{"text": "x", "a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            "malformed JSON",
        ),
        (
            "inbox/s/nested.json",
            b'{"text": "x", "a": ' + b"[" * 100 + b"]" * 100 + b"}",
            "JSON nested deeper",
        ),
        ("inbox/s/doc.pdf", b"%PDF", "unsupported extension '.pdf'"),
        ("inbox/s/noext", b"text", "unsupported extension '(none)'"),
    ],
)
def test_bad_input_becomes_a_reject_with_a_reason(key: str, data: bytes, reason: str) -> None:
    assert only_reject(key, data).startswith(reason)


def test_decompression_bomb_is_bounded() -> None:
    bomb = gzip.compress(b"\0" * (8 * 1024 * 1024))
    assert "decompression bomb" in only_reject(
        "inbox/s/bomb.txt.gz", bomb, max_decoded_bytes=1024 * 1024
    )
    with pytest.raises(RejectedArticle):
        gunzip_bounded(bomb, 1024)


def test_multi_member_gzip_is_read_whole() -> None:
    assert gunzip_bounded(gzip.compress(b"one ") + gzip.compress(b"two"), 100) == b"one two"


def test_latin1_is_decoded_by_detection_not_replaced() -> None:
    text = "Les dockers du port ont décidé de prolonger la grève. Le ministère prévient qu'une grève coûterait cher à l'économie."
    assert decode_bytes(text.encode("latin-1"), is_html=False) == text
    page = f'<html><head><meta charset="iso-8859-1"></head><body><p>{text}</p></body></html>'
    assert text in decode_bytes(page.encode("latin-1"), is_html=True)
    assert decode_bytes("\ufeffBOM text é".encode(), is_html=False) == "BOM text é"
    assert decode_bytes("UTF-16 é".encode("utf-16"), is_html=False) == "UTF-16 é"


def test_a_few_control_characters_are_text_more_than_one_in_a_hundred_binary() -> None:
    text = "Grève au port: les dockers arrêtent le travail. " * 20  # 960 characters
    articles, _ = parse("inbox/s/a.txt", (text[:-9] + "\x07\x85" * 4 + "\x0b").encode())
    assert len(articles) == 1, "9 in 960: text"
    assert "binary content" in only_reject("inbox/s/b.txt", (text + "\x85" * 10).encode())


def test_an_announced_version_is_fetched_as_it_is_or_not_at_all(s3, bucket: str) -> None:
    location = S3Location.parse(f"s3://{bucket}/inbox")
    body = b"The first version of a plain text article, announced."
    etag = s3.put_object(Bucket=bucket, Key="inbox/src/a.txt", Body=body)["ETag"].strip('"')
    first = ObjectRef("inbox/src/a.txt", etag, len(body), MODIFIED)
    gone = ObjectRef("inbox/src/gone.txt", "0123", 10, MODIFIED)
    # Taken as announced, without asking S3: a HEAD would have left out the deleted one.
    assert list(list_objects(s3, location, keys=[first, gone])) == [first, gone]

    batch = fetch_objects(s3, location, [first, gone], Settings())
    assert [(a.object_etag, a.raw) for a in batch.articles] == [(etag, body.decode())]

    s3.put_object(Bucket=bucket, Key="inbox/src/a.txt", Body=b"A second version, uploaded since.")
    replaced = fetch_objects(s3, location, [first], Settings())
    assert replaced.articles == [] and replaced.rejects == [], "the first version's bytes are gone"


def test_batch_id_depends_on_content_not_order() -> None:
    a = ObjectRef("k1", "e1", 1, MODIFIED)
    b = ObjectRef("k2", "e2", 1, MODIFIED)
    assert batch_id_for([a, b]) == batch_id_for([b, a])
    assert batch_id_for([a, b]) != batch_id_for([a, ObjectRef("k2", "e3", 1, MODIFIED)])


def test_listing_and_download_through_the_s3_server(s3, bucket: str) -> None:
    s3.put_object(
        Bucket=bucket, Key="inbox/src/a.txt", Body=b"Hello from S3, a plain text article."
    )
    s3.put_object(Bucket=bucket, Key="inbox/src/big.txt", Body=b"x" * 5000)
    s3.put_object(Bucket=bucket, Key="inbox/dir/", Body=b"")
    s3.put_object(Bucket=bucket, Key="elsewhere/b.txt", Body=b"not under the prefix")
    location = S3Location.parse(f"s3://{bucket}/inbox")
    refs = list(list_objects(s3, location))
    assert [ref.key for ref in refs] == ["inbox/src/a.txt", "inbox/src/big.txt"]
    named = ["inbox/src/a.txt", "inbox/gone.txt", "elsewhere/b.txt", "inbox/src/a.txt"]
    assert list(list_objects(s3, location, keys=named)) == refs[:1]

    batch = fetch_objects(s3, location, refs, Settings(max_object_bytes=1000))
    assert [a.raw for a in batch.articles] == ["Hello from S3, a plain text article."]
    assert [r.reason for r in batch.rejects] == ["object of 5000 bytes exceeds the 1000-byte limit"]

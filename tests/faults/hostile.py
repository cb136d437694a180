"""A deterministic generator of malformed and hostile input objects (≥ 200 of them)."""

from __future__ import annotations

import gzip
import json
import random

MAX_OBJECT_BYTES = 256 * 1024
MAX_DECODED_BYTES = 1024 * 1024

_BODY = (
    "Dock workers in Rotterdam ended a three-day strike on Tuesday after the port authority "
    "agreed to review night-shift pay. Container traffic is expected to recover by Friday."
)
_PAGE = (
    "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Port strike ends</title></head>"
    f"<body><nav>Home › News</nav><article><h1>Port strike ends</h1><p>{_BODY}</p>"  # noqa: RUF001
    f"<p>{_BODY}</p></article><footer>Share this</footer></body></html>"
)

HOSTILE_SOURCES = [
    "../../../tmp/escape",
    "..",
    ".",
    "/",
    "/etc/passwd",
    "a=b",
    "source=x/date=1970-01-01",
    "\x00",
    "\n\r\t",
    "\x1b[31mred",
    "x" * 10_000,
    "",
    "   ",
    "🙂🙂",
    "\u202eevil\u202c",
    "C:\\Windows\\System32",
    "%2e%2e%2f",
    "a/../../b",
    "ÅÄÖ-Ñews",
    "\ud7ff",
    "CON",
    "-",
    "--..--",
    "*?<>|",
    "${jndi:ldap://127.0.0.1/x}",
    "'; DROP TABLE articles; --",
    "source",
    "date=2020-01-01",
    "𝕱𝖗𝖆𝖐𝖙𝖚𝖗",  # noqa: RUF001
    "a" * 64 + "=" + "b" * 64,
]

HOSTILE_KEY_PARTS = [
    "..",
    "../..",
    "a/../../b",
    ".",
    "",
    "src=evil/date=2020-01-01",
    "=",
    "%2e%2e",
    "a\x01b",
    "tab\there",
    "vt\x0bhere",  # moto rejects "\n" in a key (real S3 accepts it)
    "cr\rhere",
    "del\x7f",
    "\u202eright-to-left",
    "trailing space ",
    " leading",
    "x" * 900,
    "CON",
    "back\\slash",
    "quote'\"",
    "🙂",
    "semi;colon",
    "hash#frag",
    "q?uery=1",
    "a//b",
]


def _mutate(data: bytes, rng: random.Random) -> bytes:
    """Flip, delete, duplicate or truncate some bytes."""
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 12)):
        if not buffer:
            break
        position = rng.randrange(len(buffer))
        match rng.randrange(4):
            case 0:
                buffer[position] = rng.randrange(256)
            case 1:
                del buffer[position : position + rng.randint(1, 40)]
            case 2:
                buffer[position:position] = buffer[position : position + rng.randint(1, 200)]
            case 3:
                del buffer[position:]
    return bytes(buffer)


def hostile_objects(prefix: str, seed: int = 0, scale: int = 1) -> dict[str, bytes]:
    """Key -> body. Every object must end as rows or rejects; none may crash the run."""
    rng = random.Random(seed)
    objects: dict[str, bytes] = {}
    page = _PAGE.encode()
    article = json.dumps({"text": _BODY, "title": "Port strike", "source": "wire"}).encode()

    for n in range(30 * scale):  # fuzzed HTML
        objects[f"{prefix}fuzz-html/{n}.html"] = _mutate(page, rng)
    for n in range(30 * scale):  # fuzzed JSON
        objects[f"{prefix}fuzz-json/{n}.json"] = _mutate(article, rng)
    for n in range(20 * scale):  # fuzzed gzip of either
        objects[f"{prefix}fuzz-gz/{n}.html.gz"] = _mutate(gzip.compress(page), rng)
    for n in range(10 * scale):  # JSONL: some lines good, some broken, duplicate ids
        lines = [json.dumps({"id": i % 3, "text": f"{_BODY} Line {i}."}) for i in range(5)] + [
            _mutate(article, rng).decode("utf-8", "replace") for _ in range(3)
        ]
        rng.shuffle(lines)
        objects[f"{prefix}fuzz-jsonl/{n}.jsonl"] = "\n".join(lines).encode()

    json_types = [
        {"text": ["a", "list"]},
        {"text": 12345},
        {"text": None, "html": None},
        {"text": ""},
        {"html": "   "},
        {"text": _BODY, "published_at": "0001-01-01T00:00:00+05:00"},
        {"text": _BODY, "published_at": "9999-12-31T23:59:59-05:00"},
        {"text": _BODY, "published_at": "not a date"},
        {"text": _BODY, "published_at": 1e20},
        {"text": _BODY, "published_at": -62135596800},
        {"text": _BODY, "author": [1, 2, {"x": 1}]},
        {"text": _BODY, "id": {"nested": True}},
        {"text": _BODY, "url": "javascript:alert(1)"},
        {"text": _BODY * 2000},
    ]
    for n, value in enumerate(json_types):
        objects[f"{prefix}json-types/{n}.json"] = json.dumps(value).encode()
    objects[f"{prefix}json-types/array.json"] = b"[1, 2, 3]"
    objects[f"{prefix}json-types/nan.json"] = b'{"text": NaN}'
    objects[f"{prefix}json-types/bigint.json"] = b'{"text": "x", "id": ' + b"9" * 5000 + b"}"
    objects[f"{prefix}json-types/dupkeys.json"] = (
        b'{"text": "short", "text": ' + json.dumps(_BODY).encode() + b"}"
    )

    body = _BODY.encode()
    encodings = {
        "latin1.html": "<html><body><p>Grève à Rotterdam: les dockers arrêtent le travail. "
        "Les négociations reprennent jeudi à l'hôtel de ville.</p></body></html>".encode("latin-1"),
        "utf16-bom.txt": _BODY.encode("utf-16"),
        "utf16-nobom.txt": _BODY.encode("utf-16-le"),
        "utf32.txt": _BODY.encode("utf-32"),
        "shiftjis.txt": ("ロッテルダム港のストライキが終わった。" * 5).encode("shift_jis"),
        "lying-meta.html": b"<meta charset='utf-8'><p>" + "Grève générale".encode("cp1252") * 10,
        "unknown-meta.html": b"<meta charset='x-klingon'><p>" + body,
        "invalid-utf8.txt": body + b"\xc3\x28\xa0\xa1\xe2\x28\xa1\xf0\x28\x8c\xbc" + body,
        "bom-garbage.txt": b"\xef\xbb\xbf" + bytes(rng.randrange(256) for _ in range(500)),
        "utf16-bom-odd.txt": b"\xff\xfe" + body[:-1],
        "nul.txt": body + b"\x00" * 10 + body,
        "random.txt": bytes(rng.randrange(256) for _ in range(4000)),
        "random.html": bytes(rng.randrange(256) for _ in range(4000)),
        "random.json": bytes(rng.randrange(256) for _ in range(4000)),
        "control.txt": ("\x01\x02\x03\x1b" * 200 + _BODY).encode(),
        "whitespace.txt": b" \n\t\r " * 100,
        "one-byte.txt": b"x",
        "surrogates.json": b'{"text": "\\ud800\\udc00 and a lone \\ud800 ' + body + b'"}',
        "overlong-utf8.txt": b"\xc0\xaf\xe0\x80\xaf" + body,
        "mixed.txt": body + "ü".encode("latin-1") + "ü".encode() + body,
    }
    for name, data in encodings.items():
        objects[f"{prefix}encodings/{name}"] = data

    filler = (_BODY + " ").encode()
    big = (filler * (MAX_OBJECT_BYTES // len(filler) + 1))[:MAX_OBJECT_BYTES]
    objects[f"{prefix}sizes/at-limit.txt"] = big
    objects[f"{prefix}sizes/past-limit.txt"] = big + b"x"
    decoded = (filler * (MAX_DECODED_BYTES // len(filler) + 1))[:MAX_DECODED_BYTES]
    objects[f"{prefix}sizes/decoded-at-limit.txt.gz"] = gzip.compress(decoded)
    objects[f"{prefix}sizes/decoded-past-limit.txt.gz"] = gzip.compress(decoded + b"x")
    objects[f"{prefix}sizes/bomb.html.gz"] = gzip.compress(b"\0" * (64 * MAX_DECODED_BYTES))
    objects[f"{prefix}sizes/bomb-text.txt.gz"] = gzip.compress(b"a" * (64 * MAX_DECODED_BYTES))
    objects[f"{prefix}sizes/nested-bomb.txt.gz"] = gzip.compress(
        gzip.compress(b"a" * (64 * MAX_DECODED_BYTES))
    )
    objects[f"{prefix}sizes/multi-member.txt.gz"] = (
        gzip.compress(decoded[: MAX_DECODED_BYTES // 2]) * 3
    )
    objects[f"{prefix}sizes/empty.txt.gz"] = b""
    objects[f"{prefix}sizes/gzip-of-nothing.txt.gz"] = gzip.compress(b"")
    objects[f"{prefix}sizes/not-gzip.txt.gz"] = body
    objects[f"{prefix}sizes/trailing-junk.txt.gz"] = gzip.compress(body) + b"junk"
    objects[f"{prefix}sizes/huge-line.jsonl"] = json.dumps({"text": "w " * 200_000}).encode()

    # Gzipped so that they pass the stored-size limit and reach the parsers whole.
    nesting = {
        f"list-{depth}.json": b'{"text": '
        + json.dumps(_BODY).encode()
        + b', "x": '
        + b"[" * depth
        + b"]" * depth
        + b"}"
        for depth in (31, 32, 33, 1000, 100_000)
    }
    nesting["dict-150000.json"] = b'{"a":' * 150_000 + b"1" + b"}" * 150_000
    nesting["unclosed.json"] = b"[" * 500_000
    for depth in (300, 5000, 80_000):
        nesting[f"div-{depth}.html"] = (
            b"<html><body>" + b"<div>" * depth + body + b"</div>" * depth + b"</body></html>"
        )
        nesting[f"unclosed-{depth}.html"] = b"<b><i>" * (depth // 2) + body
    nesting["table-20000.html"] = b"<table><tr><td>" * 20_000 + body
    nesting["deep-lines.jsonl"] = b"\n".join(
        [b"[" * 100_000, json.dumps({"text": _BODY}).encode(), b'{"a":' * 50_000]
    )
    for name, data in nesting.items():
        assert len(data) <= MAX_DECODED_BYTES, name
        objects[f"{prefix}nesting/{name}.gz"] = gzip.compress(data)

    for n, part in enumerate(HOSTILE_KEY_PARTS):
        objects[f"{prefix}{part}/k{n}.txt"] = body
    objects[f"{prefix}../escape.txt"] = body
    objects[f"{prefix}src/{'y' * 1000}.txt"[:1024]] = body
    objects[f"{prefix}no-source.txt"] = body
    for n, source in enumerate(HOSTILE_SOURCES):
        objects[f"{prefix}sources/{n}.json"] = json.dumps(
            {"text": f"{_BODY} Number {n}.", "source": source}
        ).encode()
    return objects

"""Inputs for the fault suite: small valid articles of every format, plus a few rejects."""

from __future__ import annotations

import gzip
import json

_WORDS = [
    "harbour",
    "strike",
    "Rotterdam",
    "dockers",
    "cranes",
    "council",
    "ministry",
    "talks",
    "union",
    "wages",
    "port",
    "container",
    "ship",
    "night",
    "shift",
    "agreement",
    "vote",
    "city",
    "mayor",
    "freight",
    "delay",
    "workers",
]


def story(n: int, version: int = 1) -> str:
    """A distinct article body, long enough for the cleaner to keep (version changes it)."""
    words = [_WORDS[(n * 7 + i * (version + 2)) % len(_WORDS)] for i in range(40)]
    return f"Story {n} version {version}. " + " ".join(words).capitalize() + "."


def article_objects(
    prefix: str, count: int, version: int = 1, sources: str = "src"
) -> dict[str, bytes]:
    """`count` objects cycling through txt, html, json, gzip and a 3-line JSONL, each valid,
    under three sources (`sources` + 0, 1, 2)."""
    objects: dict[str, bytes] = {}
    for n in range(count):
        source = f"{sources}{n % 3}"
        body = story(n, version)
        match n % 5:
            case 0:
                objects[f"{prefix}{source}/{n}.txt"] = body.encode()
            case 1:
                second = story(n + 1000, version)
                html = f"<html><head><title>Harbour report {n}</title></head><body><article><h1>Harbour report {n}</h1><p>{body}</p><p>{second}</p></article></body></html>"
                objects[f"{prefix}{source}/{n}.html"] = html.encode()
            case 2:
                objects[f"{prefix}{source}/{n}.json"] = json.dumps(
                    {
                        "text": body,
                        "title": f"Harbour report {n}",
                        "published_at": f"2026-03-0{1 + n % 9}T10:00:00Z",
                    }
                ).encode()
            case 3:
                objects[f"{prefix}{source}/{n}.txt.gz"] = gzip.compress(body.encode())
            case 4:
                lines = [
                    json.dumps({"id": f"{n}-{i}", "text": story(n * 10 + i, version)})
                    for i in range(3)
                ]
                objects[f"{prefix}{source}/{n}.jsonl"] = "\n".join(lines).encode()
    return objects


def reject_objects(prefix: str) -> dict[str, bytes]:
    """Inputs that must end as rejects, one per reason family."""
    return {
        f"{prefix}bad/empty.html": b"",
        f"{prefix}bad/report.pdf": b"%PDF-1.4",
        f"{prefix}bad/short.txt": b"Too short.",
        f"{prefix}bad/broken.json": b'{"text": ',
    }

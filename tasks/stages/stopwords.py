"""The `yake` package's stopword lists, decoded with the encoding each file is really in.

yake ships most lists in UTF-8 but Lithuanian in Windows-1257 and Slovak in Windows-1250
(read as UTF-8 they raise UnicodeDecodeError; yake itself falls back to Latin-1, which
turns `š` into `ð`). Decoded with these codecs every word of both lists is spelt in the
language's alphabet (tests/tasks/test_enrich.py checks it).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

_LEGACY_ENCODINGS = {"lt": "cp1257", "sk": "cp1250"}
# yake names its Czech list by the country code.
_FILE_CODES = {"cs": "cz"}


@cache
def yake_stopwords(language: str) -> frozenset[str]:
    """Lower-cased stopwords of an ISO 639-1 language; empty when yake has no list for it."""
    folder = resources.files("yake") / "core" / "StopwordsList"
    path = folder / f"stopwords_{_FILE_CODES.get(language, language)}.txt"
    if not path.is_file():
        return frozenset()
    text = path.read_bytes().decode(_LEGACY_ENCODINGS.get(language, "utf-8"))
    return frozenset(word.strip() for word in text.lower().splitlines()) - {""}

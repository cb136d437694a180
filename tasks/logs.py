"""Third-party loggers, quieted in every process that runs a stage: the command line's
and the stage workers' (`tasks/workers.py`)."""

from __future__ import annotations

import logging

# They log about the document in hand ("parsed tree length: 0" for an empty page); the
# article's reject reason already says what was wrong with it.
DOCUMENT_LOGGERS = (
    "trafilatura",
    "htmldate",
    "courlan",
    "justext",
    "readability",
    "charset_normalizer",
    "dateparser",
    "langdetect",
    "yake",
)
# A line per request, connection or retry below WARNING.
NETWORK_LOGGERS = (
    "urllib3",
    "botocore",
    "boto3",
    "s3transfer",
    "httpx",
    "httpcore",
    "werkzeug",
    "moto",
)


def quiet_library_loggers(verbose: bool) -> None:
    """Document parsers at CRITICAL and network libraries at WARNING; with `verbose`, all
    of them at INFO."""
    for name in DOCUMENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.CRITICAL)
    for name in NETWORK_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)

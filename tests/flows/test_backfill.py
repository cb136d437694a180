"""Which objects a backfill selects, from the ledger's current rows and their partitions."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pyarrow as pa
import pytest
from newsflow.flows.backfill import Selection, select_keys
from newsflow.tasks.schema import LEDGER_SCHEMA, object_fingerprint


def ledger(*rows: tuple[str, str, int, list[str]]) -> pa.Table:
    """(key, batch, day of commit, partitions) per row."""
    return pa.Table.from_pylist(
        [
            {
                "object_fingerprint": object_fingerprint(key, batch),
                "object_key": key,
                "object_etag": batch,
                "batch_id": batch,
                "committed_at": datetime(2026, 11, day, tzinfo=UTC),
                "articles": len(partitions),
                "rejects": 0,
                "partitions": partitions,
            }
            for key, batch, day, partitions in rows
        ],
        schema=LEDGER_SCHEMA,
    )


def part(source: str, day: str) -> str:
    return f"source={source}/date={day}"


LEDGER = ledger(
    ("inbox/bbc/a.html", "b1", 1, [part("bbc", "2026-11-01")]),
    ("inbox/bbc/b.html", "b1", 1, [part("bbc", "2026-11-03")]),
    # Moved to another source by a later commit: only the current row counts.
    ("inbox/wire/feed.jsonl", "b1", 1, [part("bbc", "2026-11-01")]),
    (
        "inbox/wire/feed.jsonl",
        "b2",
        2,
        [part("ap", "2026-11-02"), part("afp", "2026-11-05")],
    ),
    ("inbox/bbc/broken.bin", "b1", 1, []),
)


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        (Selection(source="bbc"), ["inbox/bbc/a.html", "inbox/bbc/b.html", "inbox/bbc/broken.bin"]),
        (Selection(source="ap"), ["inbox/wire/feed.jsonl"]),
        (
            Selection(date_from=date(2026, 11, 2), date_to=date(2026, 11, 3)),
            ["inbox/bbc/b.html", "inbox/wire/feed.jsonl"],
        ),
        (Selection(source="bbc", date_to=date(2026, 11, 2)), ["inbox/bbc/a.html"]),
        (Selection(date_from=date(2026, 11, 4)), ["inbox/wire/feed.jsonl"]),
        (Selection(prefix="inbox/wire/"), ["inbox/wire/feed.jsonl"]),
        (
            Selection(prefix="inbox/bbc/b", source="bbc"),
            ["inbox/bbc/b.html", "inbox/bbc/broken.bin"],
        ),
    ],
)
def test_select_keys(selection: Selection, expected: list[str]) -> None:
    assert select_keys(LEDGER, selection, "inbox/") == expected


def test_selection_needs_a_criterion_and_an_ordered_range() -> None:
    with pytest.raises(ValueError, match="reprocess=True"):
        Selection()
    with pytest.raises(ValueError, match="after"):
        Selection(date_from=date(2026, 2, 1), date_to=date(2026, 1, 1))

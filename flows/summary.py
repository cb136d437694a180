"""A run's summary as the command line prints it (`newsflow run` and `newsflow demo`)."""

from __future__ import annotations

from typing import Any


def print_summary(summary: dict[str, Any]) -> None:
    """What `ingest_articles` returned, for a reader: counts, time, and the breakdowns."""
    print()
    print(f"input   {summary['input']}")
    print(f"output  {summary['output']}")
    print(
        f"objects {summary['objects_listed']} listed, {summary['objects_new']} new; "
        f"{summary['articles']} articles written, {summary['rejects']} rejected "
        f"in {summary['batches']} batches"
    )
    print(f"time    {summary['seconds']:.1f} s ({summary['articles_per_second']:.1f} articles/s)")
    if errors := sum(summary["stage_errors"].values()):
        print(
            f"STAGE ERRORS {errors}: a stage raised on these inputs (see the rejects marked "
            f"stage_error); a bug may be losing articles: {summary['stage_errors']}"
        )
    for title, name in (
        ("per source", "articles_by_source"),
        ("per language", "articles_by_language"),
        ("rejects by reason", "rejects_by_reason"),
    ):
        if summary[name]:
            print(f"{title}:")
            for value, count in summary[name].items():
                print(f"  {count:6d}  {value}")

"""The `newsflow` command: run the ingest flow by hand, or try it all with `newsflow demo`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any


def _print_summary(summary: dict[str, Any]) -> None:
    print()
    print(f"input   {summary['input']}")
    print(f"output  {summary['output']}")
    print(
        f"objects {summary['objects_listed']} listed, {summary['objects_new']} new; "
        f"{summary['articles']} articles written, {summary['rejects']} rejected "
        f"in {summary['batches']} batches"
    )
    print(f"time    {summary['seconds']:.1f} s ({summary['articles_per_second']:.1f} articles/s)")
    for title, name in (
        ("per source", "articles_by_source"),
        ("per language", "articles_by_language"),
        ("rejects by reason", "rejects_by_reason"),
    ):
        if summary[name]:
            print(f"{title}:")
            for value, count in summary[name].items():
                print(f"  {count:6d}  {value}")


def _quiet_prefect_defaults() -> None:
    """No telemetry attempts (there may be no network) unless the user asked for them."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def command_run(args: argparse.Namespace) -> int:
    _quiet_prefect_defaults()
    from flows.ingest import ingest_articles

    summary = ingest_articles(
        input_uri=args.input,
        output_uri=args.output,
        keys=args.key or None,
        reprocess=args.reprocess,
    )
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        _print_summary(summary)
    return 0


def command_demo(args: argparse.Namespace) -> int:
    _quiet_prefect_defaults()
    from flows.demo import run_demo

    run_demo(args.output)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="newsflow", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="process the new objects under an S3 prefix once")
    run.add_argument("--input", required=True, help="s3://BUCKET/PREFIX holding the raw articles")
    run.add_argument(
        "--output", required=True, help="lake root: a local path or s3://BUCKET/PREFIX"
    )
    run.add_argument("--key", action="append", help="process just this object key (repeatable)")
    run.add_argument("--reprocess", action="store_true", help="process every listed object again")
    run.add_argument("--json", action="store_true", help="print the summary as JSON")
    run.set_defaults(handler=command_run)

    demo = commands.add_parser("demo", help="run everything locally on bundled samples")
    demo.add_argument("--output", default="newsflow-demo-lake", help="where to write the demo lake")
    demo.set_defaults(handler=command_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())

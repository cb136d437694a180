"""The `newsflow` command: run the ingest flow by hand, or try it all with `newsflow demo`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any


def print_summary(summary: dict[str, Any]) -> None:
    """A run's summary as `newsflow run` and `newsflow demo` print it."""
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


def _prepare_flow_process() -> None:
    """Before the flow's modules are imported, for a command that runs ingest here: make
    this process's threads share one heap while it has no other thread, then start the
    stage workers, which load their models (seconds) while those imports and Prefect's
    start run."""
    from tasks.batch import share_one_heap, start_workers_early
    from tasks.settings import Settings

    share_one_heap()
    start_workers_early(Settings())


def command_run(args: argparse.Namespace) -> int:
    _quiet_prefect_defaults()
    _prepare_flow_process()
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
        print_summary(summary)
    return 0


def command_demo(args: argparse.Namespace) -> int:
    _quiet_prefect_defaults()
    _prepare_flow_process()
    from flows.demo import run_demo

    run_demo(args.output)
    return 0


def _deployment_settings(args: argparse.Namespace) -> Any:
    from tasks.settings import DeploymentSettings

    overrides = {"input_uri": args.input, "output_uri": args.output, "sweep_cron": args.cron}
    return DeploymentSettings(**{k: v for k, v in overrides.items() if v is not None})


def command_serve(args: argparse.Namespace) -> int:
    _quiet_prefect_defaults()
    # The runs are processes of their own, where Prefect starts threads before the flow
    # does: glibc reads this at their start (see tasks.batch.share_one_heap).
    os.environ.setdefault("MALLOC_ARENA_MAX", "1")
    from prefect import serve

    from deployments.definitions import build_deployments

    settings = _deployment_settings(args)
    # prefect.serve() runs any number of runs at once unless given a limit.
    serve(*build_deployments(settings), limit=settings.serve_limit)
    return 0


def command_deploy(args: argparse.Namespace) -> int:
    _quiet_prefect_defaults()
    from prefect import deploy

    from deployments.definitions import build_deployments

    deploy(*build_deployments(_deployment_settings(args)), work_pool_name=args.pool)
    return 0


def command_listen(args: argparse.Namespace) -> int:
    _quiet_prefect_defaults()
    from tasks.batch import share_one_heap

    share_one_heap()  # first, while this process has no other thread (see its docstring)
    import logging

    import boto3

    from deployments.consumer import Consumer, ingest_in_this_process, run_until_signalled
    from tasks.batch import keep_stage_pool
    from tasks.settings import DeploymentSettings, Settings
    from tasks.storage import S3Location

    overrides = {
        "input_uri": args.input,
        "output_uri": args.output,
        "events_wait_seconds": args.wait,
    }
    settings = DeploymentSettings(**{k: v for k, v in overrides.items() if v is not None})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    consumer = Consumer(
        boto3.client("sqs"),
        args.queue,
        S3Location.parse(settings.input_uri),
        ingest_in_this_process(settings),
        settings,
    )
    with keep_stage_pool(Settings()):
        run_until_signalled(consumer)
    return 0


def command_emit(args: argparse.Namespace) -> int:
    from deployments.events import objects_created_events, parse_object_uri, post_events

    keys: dict[str, list[str]] = {}
    for bucket, key in map(parse_object_uri, args.uri):
        keys.setdefault(bucket, []).append(key)
    events = [e for bucket, ks in keys.items() for e in objects_created_events(bucket, ks)]
    post_events(events)
    print(f"sent {len(events)} events for {len(args.uri)} objects")
    return 0


def command_backfill(args: argparse.Namespace) -> int:
    _quiet_prefect_defaults()
    _prepare_flow_process()
    from flows.backfill import backfill_articles

    summary = backfill_articles(
        input_uri=args.input,
        output_uri=args.output,
        source=args.source,
        date_from=args.date_from,
        date_to=args.date_to,
        prefix=args.prefix,
    )
    print(json.dumps(summary, indent=2, default=str))
    return 0


def command_compact(args: argparse.Namespace) -> int:
    _quiet_prefect_defaults()
    from flows.compact import compact_lake

    print(json.dumps(compact_lake(output_uri=args.output), indent=2, default=str))
    return 0


def command_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from evaluation.corpus import DEFAULT_CORPUS
    from evaluation.report import report_lines

    for line in report_lines(Path(args.corpus) if args.corpus else DEFAULT_CORPUS):
        print(line, flush=True)
    return 0


def _add_deployment_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", help="s3://BUCKET/PREFIX (default: NEWSFLOW_INPUT_URI)")
    parser.add_argument("--output", help="lake root (default: NEWSFLOW_OUTPUT_URI)")
    parser.add_argument("--cron", help="sweep schedule (default: NEWSFLOW_SWEEP_CRON, */15)")


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

    serve = commands.add_parser("serve", help="serve all deployments from this process")
    _add_deployment_arguments(serve)
    serve.set_defaults(handler=command_serve)

    deploy = commands.add_parser("deploy", help="register all deployments with a work pool")
    _add_deployment_arguments(deploy)
    deploy.add_argument("--pool", required=True, help="a process work pool with a worker")
    deploy.set_defaults(handler=command_deploy)

    listen = commands.add_parser(
        "listen", help="ingest the objects S3 notifications in an SQS queue announce"
    )
    listen.add_argument("--queue", required=True, help="SQS queue URL")
    listen.add_argument("--input", help="s3://BUCKET/PREFIX (default: NEWSFLOW_INPUT_URI)")
    listen.add_argument("--output", help="lake root (default: NEWSFLOW_OUTPUT_URI)")
    listen.add_argument(
        "--wait", type=int, help="long-poll seconds, 1-20 (default: NEWSFLOW_EVENTS_WAIT_SECONDS)"
    )
    listen.set_defaults(handler=command_listen)

    emit = commands.add_parser("emit", help="start an on-upload run for uploaded objects")
    emit.add_argument("uri", nargs="+", help="s3://BUCKET/KEY of an uploaded object")
    emit.set_defaults(handler=command_emit)

    backfill = commands.add_parser("backfill", help="reprocess a source, date range or prefix")
    backfill.add_argument("--input", required=True, help="s3://BUCKET/PREFIX of the raw articles")
    backfill.add_argument("--output", required=True, help="lake root")
    backfill.add_argument("--source", help="reprocess this source")
    backfill.add_argument("--from", dest="date_from", help="first partition date, YYYY-MM-DD")
    backfill.add_argument("--to", dest="date_to", help="last partition date, YYYY-MM-DD")
    backfill.add_argument("--prefix", help="reprocess object keys starting with this")
    backfill.set_defaults(handler=command_backfill)

    evaluate = commands.add_parser("evaluate", help="print every quality figure on the corpus")
    evaluate.add_argument("--corpus", help="corpus folder (default: ../shared/corpus)")
    evaluate.set_defaults(handler=command_evaluate)

    compact = commands.add_parser("compact", help="merge each partition's small Parquet files")
    compact.add_argument("--output", required=True, help="lake root")
    compact.set_defaults(handler=command_compact)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())

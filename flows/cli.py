"""The `newsflow` command: run the ingest flow by hand, or try it all with `newsflow demo`.

Every command checks its arguments and settings before Prefect is imported
(`flows/preflight.py`). A failure prints one line on stderr and exits 2 for a usage error
(an argument or a NEWSFLOW_* setting), 1 for anything else; `--verbose` adds the
traceback and the third-party libraries' log lines.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any, NoReturn

from newsflow.flows import preflight
from newsflow.tasks.logs import quiet_library_loggers


def _quiet_prefect_defaults() -> None:
    """No telemetry attempts (there may be no network) unless the user asked for them."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def _prepare_flow_process() -> None:
    """Before the flow's modules are imported, for a command that runs ingest here: make
    this process's threads share one heap while it has no other thread, then start the
    stage workers, which load their models (seconds) while those imports and Prefect's
    start run."""
    from newsflow.tasks.settings import Settings
    from newsflow.tasks.stages.batch import share_one_heap, start_workers_early

    share_one_heap()
    start_workers_early(Settings())


@contextmanager
def _progress_bar() -> Iterator[None]:
    """A live bar while the block runs flows, if stderr is a terminal (`flows/progress.py`).

    It is drawn on the console of Prefect's log handler, so that the log lines scroll
    above it; Prefect sets that handler up when it is imported.
    """
    import logging

    from newsflow.flows.progress import terminal_bar
    from rich.console import Console

    console = next(
        (
            handler.console
            for handler in logging.getLogger().handlers
            if isinstance(getattr(handler, "console", None), Console)
        ),
        None,
    )
    with terminal_bar(console or Console(stderr=True)):
        yield


def check_run(args: argparse.Namespace) -> None:
    preflight.load_settings()
    preflight.check_locations(args.input, args.output)


def command_run(args: argparse.Namespace) -> int:
    _quiet_prefect_defaults()
    _prepare_flow_process()
    from newsflow.flows.ingest import ingest_articles
    from newsflow.flows.summary import print_summary

    with _progress_bar():
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


def check_demo(args: argparse.Namespace) -> None:
    preflight.load_settings()
    if importlib.util.find_spec("moto") is None:
        raise preflight.EnvironmentProblem(
            "the demo's S3 server (moto) is not installed: pip install 'newsflow[demo]'"
        )
    output = preflight.parse_output_uri(args.output)
    if not isinstance(output, Path):
        raise preflight.UsageError(f"--output {args.output!r}: the demo writes a local folder")
    preflight.check_local_output(output)


def command_demo(args: argparse.Namespace) -> int:
    _quiet_prefect_defaults()
    _prepare_flow_process()
    from newsflow.flows.demo import run_demo

    run_demo(args.output)
    return 0


def _deployment_settings(args: argparse.Namespace) -> Any:
    return preflight.load_deployment_settings(args.input, args.output, args.cron)


def check_deployments(args: argparse.Namespace) -> None:
    preflight.load_settings()
    settings = _deployment_settings(args)
    preflight.check_locations(settings.input_uri, settings.output_uri)


def check_listen(args: argparse.Namespace) -> None:
    preflight.check_queue_url(args.queue)
    preflight.load_settings()
    settings = preflight.load_deployment_settings(args.input, args.output, None)
    preflight.check_locations(settings.input_uri, settings.output_uri)


def check_emit(args: argparse.Namespace) -> None:
    preflight.check_object_uris(args.uri)


def command_serve(args: argparse.Namespace) -> int:
    _quiet_prefect_defaults()
    # The runs are processes of their own, where Prefect starts threads before the flow
    # does: glibc reads this at their start (see newsflow.tasks.stages.batch.share_one_heap).
    os.environ.setdefault("MALLOC_ARENA_MAX", "1")
    from newsflow.deployments.definitions import build_deployments
    from prefect import serve

    settings = _deployment_settings(args)
    # prefect.serve() runs any number of runs at once unless given a limit.
    serve(*build_deployments(settings), limit=settings.serve_limit)
    return 0


def command_deploy(args: argparse.Namespace) -> int:
    _quiet_prefect_defaults()
    from newsflow.deployments.definitions import build_deployments
    from prefect import deploy

    deploy(*build_deployments(_deployment_settings(args)), work_pool_name=args.pool)
    return 0


def command_listen(args: argparse.Namespace) -> int:
    _quiet_prefect_defaults()
    from newsflow.tasks.stages.batch import share_one_heap

    share_one_heap()  # first, while this process has no other thread (see its docstring)
    import logging

    import boto3
    from newsflow.deployments.consumer import Consumer, ingest_in_this_process, run_until_signalled
    from newsflow.tasks.s3 import S3Location
    from newsflow.tasks.settings import DeploymentSettings, Settings
    from newsflow.tasks.stages.batch import keep_stage_pool

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
    from newsflow.deployments.events import objects_created_events, parse_object_uri, post_events

    keys: dict[str, list[str]] = {}
    for bucket, key in map(parse_object_uri, args.uri):
        keys.setdefault(bucket, []).append(key)
    events = [e for bucket, ks in keys.items() for e in objects_created_events(bucket, ks)]
    post_events(events)
    print(f"sent {len(events)} events for {len(args.uri)} objects")
    return 0


def check_backfill(args: argparse.Namespace) -> None:
    if not (args.source or args.date_from or args.date_to or args.prefix):
        raise preflight.UsageError(
            "select what to reprocess: --source, --from/--to or --prefix "
            "(`newsflow run --reprocess` reprocesses everything)"
        )
    if args.date_from and args.date_to and args.date_from > args.date_to:
        raise preflight.UsageError(f"--from {args.date_from} is after --to {args.date_to}")
    check_run(args)


def command_backfill(args: argparse.Namespace) -> int:
    _quiet_prefect_defaults()
    _prepare_flow_process()
    from newsflow.flows.backfill import backfill_articles

    with _progress_bar():
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


def check_lake(args: argparse.Namespace) -> None:
    """For a command on the lake at --output: settings, and the output checks."""
    preflight.load_settings()
    preflight.check_locations(None, args.output)


def command_maintain(args: argparse.Namespace) -> int:
    _quiet_prefect_defaults()
    from newsflow.flows.maintain import maintain_lake

    print(json.dumps(maintain_lake(output_uri=args.output), indent=2, default=str))
    return 0


def _open_lake(output: str) -> Any:
    from newsflow.tasks.lake import Lake
    from newsflow.tasks.settings import Settings

    return Lake.open(output, Settings())


def command_status(args: argparse.Namespace) -> int:
    if args.flow:
        _quiet_prefect_defaults()
        from newsflow.flows.status import lake_status_flow

        print(lake_status_flow(output_uri=args.output))
        return 0
    from newsflow.flows.status import lake_status

    print(lake_status(_open_lake(args.output)))
    return 0


def command_history(args: argparse.Namespace) -> int:
    from newsflow.flows.status import history_rows, markdown_table

    print(markdown_table(history_rows(_open_lake(args.output), args.table, args.limit)))
    return 0


def command_restore(args: argparse.Namespace) -> int:
    restored = _open_lake(args.output).restore(args.version)
    if not restored:
        print(f"articles is at version {args.version} already: nothing to restore")
    for name, version in restored.items():
        print(f"{name}: restored to version {version}")
    return 0


def command_migrate(args: argparse.Namespace) -> int:
    from newsflow.tasks.lake import migrate_legacy
    from newsflow.tasks.settings import Settings

    report = migrate_legacy(args.output, Settings())
    print(
        f"converted {args.output}: {report.articles_files} article files and "
        f"{report.rejects_files} reject files are now Delta tables; "
        f"{report.stale_files_deleted} replaced files deleted; "
        f"{report.ledger_objects} objects in the ledger"
    )
    return 0


def _corpus(args: argparse.Namespace) -> Path:
    from newsflow.evaluation.corpus import DEFAULT_CORPUS

    return Path(args.corpus) if args.corpus else DEFAULT_CORPUS


def check_evaluate(args: argparse.Namespace) -> None:
    if not _corpus(args).is_dir():
        raise preflight.UsageError(
            f"no corpus folder at {str(_corpus(args))!r}: pass --corpus DIR, or put "
            "../shared beside the checkout"
        )


def command_evaluate(args: argparse.Namespace) -> int:
    from newsflow.evaluation.report import report_lines

    for line in report_lines(_corpus(args)):
        print(line, flush=True)
    return 0


def _add_deployment_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", help="s3://BUCKET/PREFIX (default: NEWSFLOW_INPUT_URI)")
    parser.add_argument("--output", help="lake root (default: NEWSFLOW_OUTPUT_URI)")
    parser.add_argument("--cron", help="sweep schedule (default: NEWSFLOW_SWEEP_CRON, */15)")


def _iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date: give YYYY-MM-DD") from None


class _OneLineParser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (the usage is one `--help` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _no_check(args: argparse.Namespace) -> None:
    """For a command with nothing to check before it starts."""


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="tracebacks, and the third-party libraries' log lines",
    )
    parser = _OneLineParser(prog="newsflow", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help: str, handler: Any, check: Any = _no_check) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=help, parents=[common])
        command.set_defaults(handler=handler, check=check)
        return command

    run = add("run", "process the new objects under an S3 prefix once", command_run, check_run)
    run.add_argument("--input", required=True, help="s3://BUCKET/PREFIX holding the raw articles")
    run.add_argument(
        "--output", required=True, help="lake root: a local path or s3://BUCKET/PREFIX"
    )
    run.add_argument("--key", action="append", help="process just this object key (repeatable)")
    run.add_argument("--reprocess", action="store_true", help="process every listed object again")
    run.add_argument("--json", action="store_true", help="print the summary as JSON")

    demo = add("demo", "run everything locally on bundled samples", command_demo, check_demo)
    demo.add_argument("--output", default="newsflow-demo-lake", help="where to write the demo lake")

    serve = add(
        "serve", "serve all deployments from this process", command_serve, check_deployments
    )
    _add_deployment_arguments(serve)

    deploy = add(
        "deploy", "register all deployments with a work pool", command_deploy, check_deployments
    )
    _add_deployment_arguments(deploy)
    deploy.add_argument("--pool", required=True, help="a process work pool with a worker")

    listen = add(
        "listen",
        "ingest the objects S3 notifications in an SQS queue announce",
        command_listen,
        check_listen,
    )
    listen.add_argument("--queue", required=True, help="SQS queue URL")
    listen.add_argument("--input", help="s3://BUCKET/PREFIX (default: NEWSFLOW_INPUT_URI)")
    listen.add_argument("--output", help="lake root (default: NEWSFLOW_OUTPUT_URI)")
    listen.add_argument(
        "--wait", type=int, help="long-poll seconds, 1-20 (default: NEWSFLOW_EVENTS_WAIT_SECONDS)"
    )

    emit = add("emit", "start an on-upload run for uploaded objects", command_emit, check_emit)
    emit.add_argument("uri", nargs="+", help="s3://BUCKET/KEY of an uploaded object")

    backfill = add(
        "backfill", "reprocess a source, date range or prefix", command_backfill, check_backfill
    )
    backfill.add_argument("--input", required=True, help="s3://BUCKET/PREFIX of the raw articles")
    backfill.add_argument("--output", required=True, help="lake root")
    backfill.add_argument("--source", help="reprocess this source")
    backfill.add_argument(
        "--from", dest="date_from", type=_iso_date, help="first partition date, YYYY-MM-DD"
    )
    backfill.add_argument(
        "--to", dest="date_to", type=_iso_date, help="last partition date, YYYY-MM-DD"
    )
    backfill.add_argument("--prefix", help="reprocess object keys starting with this")

    evaluate = add(
        "evaluate", "print every quality figure on the corpus", command_evaluate, check_evaluate
    )
    evaluate.add_argument("--corpus", help="corpus folder (default: ../shared/corpus)")

    maintain = add(
        "maintain",
        "compact small files, checkpoint and vacuum the lake",
        command_maintain,
        check_lake,
    )
    maintain.add_argument("--output", required=True, help="lake root")

    status = add(
        "status", "versions, last runs, recent articles, rejects", command_status, check_lake
    )
    status.add_argument("--output", required=True, help="lake root")
    status.add_argument(
        "--flow", action="store_true", help="run as a flow: publish it as a Prefect artifact"
    )

    history = add(
        "history", "a table's versions and what each run did", command_history, check_lake
    )
    history.add_argument("--output", required=True, help="lake root")
    history.add_argument("--table", default="articles", choices=["articles", "rejects", "ledger"])
    history.add_argument("--limit", type=int, default=20, help="newest N versions")

    restore = add(
        "restore", "put the lake back as it was at an articles version", command_restore, check_lake
    )
    restore.add_argument("--output", required=True, help="lake root")
    restore.add_argument("--version", type=int, required=True, help="articles table version")

    migrate = add(
        "migrate",
        "convert a lake of the pre-Delta format into Delta tables, in place",
        command_migrate,
        check_lake,
    )
    migrate.add_argument("--output", required=True, help="lake root")
    return parser


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    if args.verbose:
        traceback.print_exc()
    print(f"newsflow {args.command}: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.verbose:
        os.environ["NEWSFLOW_VERBOSE"] = "true"  # the stage workers read it (tasks/workers.py)
    quiet_library_loggers(args.verbose)
    try:
        args.check(args)
        return int(args.handler(args))
    except preflight.PreflightError as error:
        return _fail(args, str(error), error.exit_code)
    except KeyboardInterrupt:
        return _fail(args, "interrupted", 130)
    except Exception as error:
        first_line = next(iter(str(error).strip().splitlines()), "")
        hint = "" if args.verbose else " (--verbose shows the traceback)"
        return _fail(args, f"{type(error).__name__}: {first_line}{hint}", 1)


if __name__ == "__main__":
    sys.exit(main())

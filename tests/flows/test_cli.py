"""`newsflow` as a user runs it: every usage and environment error is one line on stderr,
exit 2 (usage) or 1 (environment), in under 3 s, before Prefect is imported or started.

Each case is a process of its own (`python -X importtime -m newsflow.flows.cli`): its import log
shows whether `prefect` was imported, and its PREFECT_HOME whether a server made a
database there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port

REPOSITORY = Path(__file__).resolve().parents[2]
# A bucket no test creates.
MISSING = "newsflow-no-such-bucket"


@dataclass
class Outcome:
    code: int
    lines: list[str]  # stdout and stderr, without the import log
    seconds: float
    imported_prefect: bool
    prefect_database: bool


def newsflow(
    args: list[str],
    home: Path,
    env: dict[str, str] | None = None,
    drop: tuple[str, ...] = (),
    command: list[str] | None = None,
) -> Outcome:
    environment = {**os.environ, "PREFECT_HOME": str(home), **(env or {})}
    for name in drop:
        environment.pop(name, None)
    started = time.monotonic()
    done = subprocess.run(
        [*(command or [sys.executable, "-X", "importtime", "-m", "newsflow.flows.cli"]), *args],
        cwd=REPOSITORY,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    seconds = time.monotonic() - started
    imports = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
    modules = {line.rsplit("|", 1)[1].strip() for line in imports}
    output = done.stdout.splitlines() + [
        line for line in done.stderr.splitlines() if not line.startswith("import time:")
    ]
    return Outcome(
        done.returncode,
        output,
        seconds,
        any(m == "prefect" or m.startswith("prefect.") for m in modules),
        any(home.rglob("*.db")),
    )


def assert_fails_fast(outcome: Outcome, code: int, *expected: str) -> None:
    assert outcome.code == code, outcome.lines
    assert len(outcome.lines) == 1, outcome.lines
    for text in expected:
        assert text in outcome.lines[0], outcome.lines[0]
    assert outcome.seconds < 3, f"{outcome.seconds:.1f} s"
    assert not outcome.imported_prefect
    assert not outcome.prefect_database


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "prefect-home"


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("not a folder")
    return path


USAGE_ERRORS = [
    (
        ["run", "--input", "notaurl", "--output", "lake"],
        {},
        ["newsflow run: --input 'notaurl' is not an S3 location", "s3://BUCKET/PREFIX"],
    ),
    (["run", "--input", "s3://raw/in"], {}, ["required: --output", "--help"]),
    ([], {}, ["required: command"]),
    (["run", "--input", "s3://raw/in", "--output", "gs://lake/x"], {}, ["a local path or s3://"]),
    (
        ["run", "--input", "s3://raw/in", "--output", "lake"],
        {"NEWSFLOW_BATCH_SIZE": "many", "NEWSFLOW_WORKERS": "0"},
        ["NEWSFLOW_BATCH_SIZE='many'", "integer", "NEWSFLOW_WORKERS='0'"],
    ),
    (
        ["run", "--input", "s3://raw/in", "--output", "lake"],
        {"AWS_ENDPOINT_URL": "notaurl"},
        ["AWS_ENDPOINT_URL", "notaurl"],
    ),
    (["backfill", "--input", "s3://raw/in", "--output", "lake"], {}, ["--source, --from/--to"]),
    (
        ["backfill", "--input", "s3://raw/in", "--output", "lake", "--from", "2026-02-30"],
        {},
        ["'2026-02-30' is not a date", "YYYY-MM-DD"],
    ),
    (
        [
            *("backfill", "--input", "s3://raw/in", "--output", "lake"),
            *("--from", "2026-03-02", "--to", "2026-03-01"),
        ],
        {},
        ["--from 2026-03-02 is after --to 2026-03-01"],
    ),
    (["backfill", "--input", "raw", "--output", "lake", "--source", "bbc"], {}, ["--input 'raw'"]),
    (["maintain", "--output", "s3://"], {}, ["--output 's3://'"]),
    (["serve"], {}, ["pass --input or NEWSFLOW_INPUT_URI", "--output or NEWSFLOW_OUTPUT_URI"]),
    (["deploy", "--input", "s3://raw", "--output", "ftp://x", "--pool", "p"], {}, ["ftp://x"]),
    (["listen", "--queue", "my-queue"], {}, ["not an SQS queue URL"]),
    (["emit", "s3://raw/"], {}, ["'s3://raw/' is not one object", "s3://BUCKET/KEY"]),
    (["evaluate", "--corpus", "no-such-folder"], {}, ["no corpus folder", "--corpus"]),
]


@pytest.mark.parametrize(("args", "env", "expected"), USAGE_ERRORS)
def test_a_usage_error_is_one_line_and_exit_2(
    args: list[str], env: dict[str, str], expected: list[str], home: Path
) -> None:
    drop = ("NEWSFLOW_INPUT_URI", "NEWSFLOW_OUTPUT_URI")
    assert_fails_fast(newsflow(args, home, env, drop), 2, *expected)


def test_an_output_that_cannot_be_written_is_an_environment_error(home: Path, a_file: Path) -> None:
    for args in (
        ["run", "--input", f"s3://{MISSING}/in", "--output", f"{a_file}/lake"],
        ["demo", "--output", f"{a_file}/lake"],
        ["maintain", "--output", str(a_file)],
    ):
        outcome = newsflow(args, home)
        assert_fails_fast(outcome, 1, "is a file, not a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_read_only_output_folder_is_an_environment_error(home: Path, tmp_path: Path) -> None:
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o500)
    outcome = newsflow(["maintain", "--output", str(folder / "lake")], home)
    assert_fails_fast(outcome, 1, "is not writable")


def test_missing_buckets_and_queues_are_named(
    s3_endpoint: str, bucket: str, home: Path, tmp_path: Path
) -> None:
    lake = str(tmp_path / "lake")
    cases = [
        (["run", "--input", f"s3://{MISSING}/in", "--output", lake], "input bucket"),
        (["run", "--input", f"s3://{bucket}/in", "--output", f"s3://{MISSING}/x"], "output bucket"),
        (["backfill", "--input", f"s3://{MISSING}/", "--output", lake, "--prefix", "a"], "input"),
        (["maintain", "--output", f"s3://{MISSING}/lake"], "output bucket"),
        (["status", "--output", f"s3://{MISSING}/lake"], "output bucket"),
        (["serve", "--input", f"s3://{MISSING}/in", "--output", lake], "input bucket"),
        (
            ["deploy", "--input", f"s3://{bucket}/", "--output", f"s3://{MISSING}", "--pool", "p"],
            "output",
        ),
        (["listen", "--queue", f"{s3_endpoint}/123456789012/{MISSING}"], "queue"),
    ]
    for args, role in cases:
        outcome = newsflow(args, home)
        assert_fails_fast(outcome, 1, role, MISSING, "does not exist", s3_endpoint)
    assert not (tmp_path / "lake").exists()


def test_an_unreachable_endpoint_points_at_aws_endpoint_url(home: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    outcome = newsflow(
        ["run", "--input", "s3://raw/in", "--output", "s3://lake/x"],
        home,
        {"AWS_ENDPOINT_URL": closed},
    )
    assert_fails_fast(outcome, 1, f"cannot reach {closed}", "AWS_ENDPOINT_URL")


def test_missing_credentials_say_which_variables_to_set(home: Path, tmp_path: Path) -> None:
    outcome = newsflow(
        ["run", "--input", "s3://raw/in", "--output", str(tmp_path / "lake")],
        home,
        # no instance-metadata lookup: this machine has no role to find
        {"AWS_EC2_METADATA_DISABLED": "true"},
        drop=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"),
    )
    assert_fails_fast(outcome, 1, "no AWS credentials", "AWS_ACCESS_KEY_ID", "AWS_PROFILE")


def test_verbose_adds_the_traceback(s3_endpoint: str, home: Path, tmp_path: Path) -> None:
    args = ["run", "--input", f"s3://{MISSING}/in", "--output", str(tmp_path / "lake")]
    quiet = newsflow(args, home)
    verbose = newsflow([*args, "--verbose"], home)
    assert verbose.code == quiet.code == 1
    assert verbose.lines[0] == "Traceback (most recent call last):"
    assert "HeadBucket" in "\n".join(verbose.lines)
    assert verbose.lines[-1] == quiet.lines[0]
    assert not verbose.imported_prefect


def test_the_installed_entry_point_fails_the_same_way(home: Path) -> None:
    script = Path(sys.executable).parent / "newsflow"
    if not script.exists():
        pytest.skip("newsflow is not installed in this interpreter's environment")
    outcome = newsflow(
        ["run", "--input", "notaurl", "--output", "lake"], home, command=[str(script)]
    )
    assert outcome.code == 2 and outcome.seconds < 3 and not outcome.prefect_database
    assert outcome.lines == [
        "newsflow run: --input 'notaurl' is not an S3 location: give s3://BUCKET/PREFIX"
    ]

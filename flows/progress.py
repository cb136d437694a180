"""How far an ingest run is: a Prefect progress artifact on the run, and a live bar in a
terminal.

The flow calls `RunProgress.update` once per written batch. Progress is the objects
written of the new objects listed so far: the listing goes on while batches are written,
so it reaches 100 % at the last batch, not before. A run that finds nothing new writes no
batch and creates no artifact.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import count
from typing import Protocol
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from rich.console import Console
from rich.default_styles import DEFAULT_STYLES
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.theme import Theme


class RunCounts(Protocol):
    """What a run has counted so far (`newsflow.flows.ingest.RunSummary` has these)."""

    objects_listed: int
    objects_new: int
    objects_written: int
    articles: int
    rejects: int
    seconds: float


@dataclass(frozen=True, slots=True)
class Snapshot:
    listed: int
    new: int
    written: int
    articles: int
    rejects: int
    seconds: float

    @classmethod
    def of(cls, counts: RunCounts) -> Snapshot:
        return cls(
            counts.objects_listed,
            counts.objects_new,
            counts.objects_written,
            counts.articles,
            counts.rejects,
            counts.seconds,
        )

    @property
    def percent(self) -> float:
        return 100.0 * self.written / self.new if self.new else 100.0

    def describe(self) -> str:
        return (
            f"{self.written:,} of {self.new:,} new objects written ({self.listed:,} listed "
            f"so far): {self.articles:,} articles, {self.rejects:,} rejects"
        )


class ProgressBar:
    """A live bar on a terminal: objects written of the new ones listed so far, articles
    per second, rejects so far and the time left. It adds up the runs it is shown (a
    backfill runs ingest once per chunk of keys)."""

    def __init__(self, console: Console) -> None:
        self.display = Progress(
            TextColumn("[bold]ingest"),
            BarColumn(),
            TaskProgressColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "objects  {task.fields[rate]:.1f} articles/s  {task.fields[rejects]} rejects"
            ),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            refresh_per_second=2,
        )
        self._task = self.display.add_task("ingest", total=None, rate=0.0, rejects=0)
        self._runs: dict[int, Snapshot] = {}

    def show(self, run: int, snapshot: Snapshot) -> None:
        self._runs[run] = snapshot
        runs = self._runs.values()
        seconds = sum(s.seconds for s in runs)
        self.display.update(
            self._task,
            completed=sum(s.written for s in runs),
            total=sum(s.new for s in runs),
            rate=sum(s.articles for s in runs) / seconds if seconds else 0.0,
            rejects=sum(s.rejects for s in runs),
        )


# The bars that `RunProgress.update` feeds: the command line shows one while it runs a flow.
_bars: list[ProgressBar] = []
_run_numbers = count()


@contextmanager
def terminal_bar(console: Console) -> Iterator[ProgressBar | None]:
    """A progress bar for the runs in this process while the block runs, if `console` is a
    terminal; else none, and the runs' log lines are the progress.

    Give it the console the log lines are printed on (Prefect's console handler has one):
    they then scroll above the bar instead of through it.
    """
    if not console.is_terminal:
        yield None
        return
    bar = ProgressBar(console)
    console.push_theme(Theme(DEFAULT_STYLES))  # Prefect's console has its log styles only
    try:
        with bar.display:
            _bars.append(bar)
            try:
                yield bar
            finally:
                _bars.remove(bar)
    finally:
        console.pop_theme()


class RunProgress:
    """One run's progress, published to its Prefect progress artifact and to the bars."""

    def __init__(self) -> None:
        self._artifact: UUID | None = None
        self._number = next(_run_numbers)

    def update(self, counts: RunCounts) -> None:
        snapshot = Snapshot.of(counts)
        if self._artifact is None:
            self._artifact = create_progress_artifact(
                snapshot.percent, description=snapshot.describe()
            )
        else:
            update_progress_artifact(
                self._artifact, snapshot.percent, description=snapshot.describe()
            )
        for bar in _bars:
            bar.show(self._number, snapshot)

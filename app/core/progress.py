"""Progress on a terminal, one way for every long step: a rich Progress the command opens once
(`make_progress`), each step one bar that disappears when the step ends (`bar`), and a status
column that shows either the bar's own text (training: batch, loss, time left) or done/total and
the time left. Off a terminal the Progress is disabled and shows nothing: commands print one line
per step or epoch instead. fastprogress is never used: its carriage-return updates become one
line each under rich's live display (issue 24)."""

from __future__ import annotations

from contextlib import contextmanager

from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn
from rich.text import Text


def clock(seconds: float | None) -> str:
    """1:02:03, 4:05, or '?' while unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    s = int(round(seconds))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


class Status(ProgressColumn):
    """The bar's `status` field when it has one, else `done/total` (bytes as MB) and the time left."""

    def render(self, task) -> Text:
        status = task.fields.get("status")
        if status is not None:
            return Text(status)
        if task.total is None:
            return Text(f"{task.completed:,.0f}")
        if task.fields.get("unit") == "bytes":
            done = f"{task.completed / 2**20:,.1f}/{task.total / 2**20:,.1f} MB"
        else:
            done = f"{task.completed:,.0f}/{task.total:,.0f}"
        return Text(f"{done} {clock(task.time_remaining)} left")


def make_progress(console, enabled: bool) -> Progress:
    """The one live display of a command (on `console`, transient), or a disabled one."""
    return Progress(TextColumn("{task.description}"), BarColumn(), Status(), console=console, transient=True,
                    disable=not enabled)


def shown(progress) -> bool:
    """Whether `progress` draws anything (a Progress given and not disabled)."""
    return progress is not None and not getattr(progress, "disable", False)


@contextmanager
def bar(progress, description: str, total: float | None, **fields):
    """One bar for one step; yields advance(n=1). The bar is removed when the step ends, so a
    finished step leaves no line behind. Without a Progress, advance does nothing."""
    if progress is None:
        yield lambda n=1: None
        return
    task = progress.add_task(description, total=total, **fields)
    try:
        yield lambda n=1: progress.advance(task, n)
    finally:
        progress.remove_task(task)

"""This process on this host: how long it has run and its peak memory, the same way on Linux,
macOS and Windows (psutil; no POSIX-only module on any path)."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from pathlib import Path

_COMMAND_START: list[float] = []  # when this process's current command began (cli.main sets it)
_clock_origin: float | None = None  # set by own_clock(): a command run inside another one


def command_started() -> None:
    """A command begins: its first in this process counts from the process's start (imports are
    part of what the user waits for), a later one (the tests run commands in one process) from now."""
    _COMMAND_START[:] = [_interpreter_start() if not _COMMAND_START else time.time()]


def _interpreter_start() -> float:
    """The process's start, or when this interpreter imported the package if that is later (an
    exec'd shell's process began before the shell's other commands ran)."""
    import psutil

    from .. import STARTED

    return max(psutil.Process().create_time(), STARTED - 0.1)  # ~0.1 s of interpreter start before it


def process_seconds() -> float:
    """Seconds since this command started (since the process started for a command run as a user
    runs it, imports included), or since the innermost own_clock() began: a training run inside
    `audit` keeps its own budget."""
    if _clock_origin is not None:
        return time.time() - _clock_origin
    return time.time() - (_COMMAND_START[0] if _COMMAND_START else _interpreter_start())


class Phases:
    """When each step before fitting ended, in seconds since the process started (what the user
    waited): one command per process, reset when it begins. config.json records them ("phases")."""

    marks: dict[str, float] = {}

    @classmethod
    def reset(cls) -> None:
        cls.marks = {}

    @classmethod
    def mark(cls, name: str) -> None:
        cls.marks[name] = round(process_seconds(), 1)


@contextmanager
def own_clock():
    """A block timed as if it were its own process: process_seconds() counts from its start (the
    folds of `audit` are train runs of one process, each with its own --time)."""
    global _clock_origin
    old, _clock_origin = _clock_origin, time.time()
    try:
        yield
    finally:
        _clock_origin = old


def rss_mb() -> float:
    """Peak resident memory of this process in MB: Windows' peak working set, Linux's VmHWM, and
    elsewhere (macOS) the current RSS, which psutil reports everywhere; never less than that."""
    import psutil

    info = psutil.Process().memory_info()
    peak = getattr(info, "peak_wset", None) or _linux_peak()
    return max(peak or 0, info.rss) / 2**20


def _linux_peak() -> int | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None

"""One error type for everything a user can cause, each kind with its own exit code.

The CLI turns an AppError into one line on stderr and its exit code; nothing else is shown,
so messages must say what went wrong, where, and what to do instead.
"""

from __future__ import annotations

# Exit codes (documented in README.md, "Exit codes").
OK = 0


INTERNAL = 1      # a bug: unexpected exception (run with APP_DEBUG=1 for the traceback)


USAGE = 2         # bad option or argument (Typer/Click's own code for usage errors)


DATA = 3          # dataset missing, wrong layout, empty class, class in val not in train


MODEL = 4         # model or weights file missing, unreadable, or of the wrong shape


RUN = 5           # run directory problem: exists already, missing, or has no model


NETWORK = 6       # a download was needed and failed (offline)


NOTHING = 7       # nothing to do: no readable image among the inputs


INTERRUPTED = 130  # Ctrl-C; the last finished epoch is saved and resumable


class AppError(Exception):
    """A failure the user can fix; `code` is the process exit status."""

    code = INTERNAL

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.message = message  # kept apart from args, which fastai rewrites for errors raised in callbacks
        if code is not None:
            self.code = code


class UsageError(AppError):
    code = USAGE


class DataError(AppError):
    code = DATA


class ModelError(AppError):
    code = MODEL


class RunError(AppError):
    code = RUN


class NetworkError(AppError):
    code = NETWORK


class NothingToDo(AppError):
    code = NOTHING


class Interrupted(AppError):
    code = INTERRUPTED


def first_line(e: BaseException, limit: int = 160) -> str:
    """An exception cut to its first non-empty line (its type name when it has no message). A line
    ending in ':' is joined to the next: fastai's "Exception occured in `X` ...:" puts the cause there."""
    text = str(getattr(e, "reason", "") or e).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    first = f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]
    return first[:limit]

"""A run's log: every message goes to RUN/train.log with a timestamp, and (on rank 0) to the
console. Paths may hold [brackets], so console lines are printed without markup."""

from __future__ import annotations

import logging
from pathlib import Path

from .ranks import is_rank0


def run_logger(run: Path | None, console=None):
    """log(msg, echo=True): into RUN/train.log, and echoed to the console unless echo=False."""
    log = logging.getLogger(f"app.run.{run}")
    log.setLevel(logging.INFO)
    log.propagate = False
    if run is not None and is_rank0() and not log.handlers:
        h = logging.FileHandler(Path(run) / "train.log", encoding="utf-8")
        h.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        log.addHandler(h)

    def emit(msg: str, echo: bool = True):
        log.info(msg)
        if echo and is_rank0():
            console.print(msg, markup=False) if console else print(msg)

    return emit

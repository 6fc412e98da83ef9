"""The list of files left out, and why: written as CSV (RUN/skipped.csv) and printed at the end of a
command, so nothing is lost silently."""

from __future__ import annotations

from pathlib import Path


def write_skipped(skipped: list[tuple[str, str]], path: Path) -> None:
    """The skip list as CSV (path, reason), so nothing is lost silently."""
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "reason"])
        w.writerows(skipped)


def print_skipped(skipped: list[tuple[str, str]], log, limit: int = 50) -> None:
    """The end-of-run list of files left out, and why (all of them are in skipped.csv)."""
    if not skipped:
        return
    log(f"skipped {len(skipped)} file(s):")
    for p, why in skipped[:limit]:
        log(f"  {p}: {why}")
    if len(skipped) > limit:
        log(f"  ... and {len(skipped) - limit} more")

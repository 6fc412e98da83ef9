"""`python -m app data DIR`: what is in a dataset, printed: classes, counts, modes, every skip."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape

from .classes import human_name
from .scan import Dataset, scan
from .skipped import print_skipped


def describe(root: str | Path, console, verify: bool = True, progress=None) -> Dataset:
    """Classes (folder + human name), counts per split, image modes, every file skipped and why."""
    from rich.table import Table
    from rich.text import Text

    ds = scan(Path(root), verify=verify, progress=progress)
    counts = ds.counts()
    t = Table(title=Text(f"{ds.root}  ({len(ds.classes)} classes)"), title_justify="left")
    for col, just in (("#", "right"), ("folder", "left"), ("class", "left"), ("train", "right"), ("val", "right")):
        t.add_column(col, justify=just)
    for i, c in enumerate(ds.classes):  # folder names as typed (Text), never read as rich markup
        t.add_row(str(i), Text(c), Text(human_name(c)), str(counts["train"][i]), str(counts["val"][i]))
    t.add_row("", "", "[bold]total", f"[bold]{sum(counts['train'])}", f"[bold]{sum(counts['val'])}")
    console.print(t)
    if verify:
        modes = ", ".join(f"{n} {m}" for m, n in ds.modes.most_common())
        console.print(f"readable images: {len(ds.items)} (Pillow modes: {modes}; all are used as RGB)", markup=False)
    for w in ds.warnings:
        console.print(f"[yellow]warning:[/] {escape(str(w))}")
    print_skipped(ds.skipped, lambda line: console.print(line, soft_wrap=True, markup=False))
    if not ds.skipped:
        console.print("problems found: none")
    return ds

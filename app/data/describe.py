"""`python -m app data DIR`: what is in a dataset, printed: the layout read (one line), classes,
counts per split, the imbalance, image modes, folders ignored and every file skipped."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape

from .scan import IMBALANCE_WARN, Dataset, scan
from .skipped import print_skipped


def describe(root: str | Path, console, verify: bool = True, progress=None, **reading) -> Dataset:
    """Classes (key + human name), counts per split, image modes, every file skipped and why
    (`reading`: scan()'s labels, valid_pct, split_seed, layout)."""
    ds = scan(Path(root), verify=verify, progress=progress, **reading)
    plain = lambda line: console.print(line, soft_wrap=True, markup=False, highlight=False)  # noqa: E731
    plain(ds.layout.summary())
    console.print(_table(ds))
    train = [n for n in ds.counts()["train"] if n]
    plain(f"imbalance: the largest training class has {ds.imbalance():.1f}x the images of the smallest "
          f"({max(train)} vs {min(train)}){'' if ds.imbalance() <= IMBALANCE_WARN else ' (over 5: see --balance)'}")
    if ds.multi:
        _co_occurrence(ds, plain)
    if ds.names_from:
        plain(f"class names from {ds.root / ds.names_from}")
    if verify:
        modes = ", ".join(f"{n} {m}" for m, n in ds.modes.most_common())
        plain(f"readable images: {len(ds.items)} (Pillow modes: {modes}; all are used as RGB)")
    if ds.ignored:
        plain(f"ignored {len(ds.ignored)} folder(s), never classes and never read:")
        for p, why in ds.ignored[:20]:
            plain(f"  {p}: {why}")
    for w in ds.warnings:
        console.print(f"[yellow]warning:[/] {escape(str(w))}", soft_wrap=True)
    print_skipped(ds.skipped, plain)
    if not ds.skipped and not ds.warnings:
        console.print("problems found: none")
    return ds


def _table(ds: Dataset):
    from rich.table import Table
    from rich.text import Text

    counts = ds.counts()
    splits = [s for s in ("train", "val", "test") if any(counts[s])]
    t = Table(title=Text(f"{ds.root}  ({len(ds.classes)} classes)"), title_justify="left")
    for col, just in (("#", "right"), ("folder" if ds.layout.kind != "csv" else "label", "left"), ("class", "left"),
                      *((s, "right") for s in splits)):
        t.add_column(col, justify=just)
    for i, (c, name) in enumerate(zip(ds.classes, ds.names)):
        t.add_row(str(i), Text(c), Text(name), *(str(counts[s][i]) for s in splits))  # as typed, never markup
    t.add_row("", "", "[bold]total", *(f"[bold]{sum(counts[s])}" for s in splits))
    return t


def _co_occurrence(ds: Dataset, plain) -> None:
    """A multi-label set: how many labels the images carry, and the label pairs seen together most."""
    from collections import Counter
    from itertools import combinations

    per = Counter(len(it.labels) for it in ds.items)
    plain("labels per image: " + ", ".join(f"{k}: {per[k]}" for k in sorted(per)))
    pairs = Counter(p for it in ds.items for p in combinations(sorted(it.labels), 2))
    if pairs:
        top = ", ".join(f"{ds.names[a]} + {ds.names[b]} {n}" for (a, b), n in pairs.most_common(8))
        plain(f"seen together most (images): {top}")

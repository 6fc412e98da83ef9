"""Class-balanced random subsets of an ImageNet-style dataset (tests, bench, the transfer bench)."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

from ..core.errors import DataError
from .layout import check_layout
from .scan import walk_images


def make_subset(src: str | Path, dst: str | Path, train: int, val: int, classes: list[str] | None = None,
                seed: int = 0) -> Path:
    """Copy up to `train`/`val` random images per class of `src` to `dst` (which must not exist).
    `val` < 0 takes every validation image of the chosen classes."""
    src, dst = Path(src), Path(dst)
    folders = check_layout(src)
    if dst.exists():
        raise DataError(f"{dst} already exists; nothing was overwritten")
    chosen = classes or folders["train"]
    unknown = [c for c in chosen if c not in folders["train"]]
    if unknown:
        raise DataError(f"no such class in {src}/train: {', '.join(unknown)}")
    rng = random.Random(seed)
    for split, n in (("train", train), ("val", val)):
        for c in chosen:
            files = [p for p in walk_images(src / split / c, []) if p.is_file()]
            for p in rng.sample(files, len(files) if n < 0 else min(n, len(files))):
                out = dst / split / c / p.name
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(p, out)
    return dst

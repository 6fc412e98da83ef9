"""Class-balanced random subsets of a dataset in any layout, written as split folders
(train/<class>/, val/<class>/): for tests, the benches and a quick look at a big dataset.

A subset never writes into the dataset it is drawn from: each file keeps its path below its class
folder (so `2019/IMG_1.jpg` and `2020/IMG_1.jpg` stay two files), and every file is created anew,
exclusively (a hard link, or a copy into a name that did not exist), never opened for writing
where it might be a link to a user's original."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

from ..core.errors import DataError
from .classes import NAME_FILES
from .layout import assign_splits, class_relative, detect, files
from .scan import walk_images


def make_subset(src: str | Path, dst: str | Path, train: int, val: int, classes: list[str] | None = None,
                seed: int = 0, labels=None, link: bool = False) -> Path:
    """Copy up to `train`/`val` random images per class of `src` to `dst` (which must not exist).
    `val` < 0 takes every validation image of the chosen classes. `link`: hard links instead of
    copies (copies where the file system refuses links)."""
    src, dst = Path(src), Path(dst)
    lay = detect(src, labels)
    if dst.exists():
        raise DataError(f"{dst} already exists; nothing was overwritten")
    chosen = classes or lay.classes
    unknown = [c for c in chosen if c not in lay.classes]
    if unknown:
        raise DataError(f"no such class in {src}: {', '.join(unknown)}")
    found = assign_splits(lay, files(lay, walk_images, []))
    rng = random.Random(seed)
    for split, n in (("train", train), ("val", val)):
        for c in chosen:
            pool = [p for p, s, k in found if s == split and k == c and p.is_file()]
            for p in rng.sample(pool, len(pool) if n < 0 else min(n, len(pool))):
                put(p, dst / split / c / class_relative(lay, p), link)
    for name in NAME_FILES:  # the subset keeps its classes' human names
        if (src / name).is_file():
            put(src / name, dst / name)
    return dst


def put(src: Path, dst: Path, link: bool = False) -> None:
    """`src` at the new name `dst`: a hard link when asked and possible (another file system,
    protected_hardlinks: a copy), else a copy. FileExistsError when `dst` exists: an existing name
    may be a link to an original, and writing to it would write into that original."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            return os.link(src, dst)
        except FileExistsError:
            raise
        except OSError:
            pass
    with open(src, "rb") as fi, open(dst, "xb") as fo:  # "x": refuses an existing name, links included
        shutil.copyfileobj(fi, fo)
    shutil.copystat(src, dst)

"""How a dataset folder is laid out, known here and nowhere else: which folders are splits and
which are classes. Every layout problem is one line (DataError, exit 3)."""

from __future__ import annotations

import os
from pathlib import Path

from ..core.errors import DataError

SPLITS = ("train", "val")


def check_layout(root: Path) -> dict[str, list[str]]:
    """Class folders per split; DataError (one line) for every layout problem."""
    if not root.exists():
        raise DataError(f"data folder not found: {root}")
    if not root.is_dir():
        raise DataError(f"data path is not a folder: {root}")
    folders = {}
    for s in SPLITS:
        d = root / s
        if not d.is_dir():
            raise DataError(
                f"{root} has no '{s}/' folder (expected {root}/train/<class>/ and {root}/val/<class>/)"
            )
        try:
            folders[s] = sorted(e.name for e in os.scandir(d) if e.is_dir() and not e.name.startswith("."))
        except OSError as e:
            raise DataError(f"cannot list {d}: {e.strerror}") from None
    if len(folders["train"]) < 2:
        raise DataError(
            f"{root}/train has {len(folders['train'])} class folder(s); a classifier needs at least 2"
        )
    extra = sorted(set(folders["val"]) - set(folders["train"]))
    if extra:
        raise DataError(f"class folder(s) in {root}/val but not in train: {', '.join(extra)}")
    return folders


def relabel_target(root: Path, path: Path, class_folder: str) -> Path | None:
    """Where `path` (a file of this dataset) goes when relabelled as `class_folder`: the same split's
    folder of that class; None when `path` is not inside a split's class folder (nothing to relabel)."""
    rel = Path(path).resolve().relative_to(Path(root).resolve())
    if len(rel.parts) < 3 or rel.parts[0] not in SPLITS:
        return None
    return Path(root) / rel.parts[0] / class_folder / Path(path).name


LAYOUTS_HELP = "a folder holding train/<class>/ and val/<class>/"

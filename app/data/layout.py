"""How a dataset folder is laid out, known here and nowhere else: which files are in which split and
of which class. Every other module asks a Layout (or the scanned Dataset) for items, classes and
splits. Every layout problem is one line (DataError, exit 3) naming what was found and the layouts
that are accepted; nothing on disk is touched, and no split copies or moves a file.

The accepted layouts are one table (LAYOUTS); `detect` picks one and says why in `notes` when two
readings were possible. A split that the folders do not give (class folders, or a CSV without
`is_valid`) is drawn per class (stratified) by a hash of each file's path and the seed: the same
files every time, for every command, and a file added later does not move the others.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import DataError
from .labels_csv import read_labels

SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
SPLITS = ("train", "val", "test")
# Never classes, never walked: hidden folders too (names starting with "."); quarantine/ is where
# review --apply puts removed files.
IGNORED_FOLDERS = {"__MACOSX": "macOS archive metadata", "@eaDir": "Synology thumbnails",
                   "__pycache__": "Python cache", "quarantine": "files removed by review --apply"}
LAYOUTS = (  # kind, what it looks like (the help and the errors say these)
    ("split-folders", "ROOT/train/<class>/ with ROOT/val/ (or valid/, validation/) and an optional ROOT/test/"),
    ("class-folders", "ROOT/<class>/ (a stratified --valid-pct validation split, seed --split-seed)"),
    ("csv", "--labels FILE.csv with columns fname,label[,is_valid] (fname relative to ROOT)"),
)
LAYOUTS_HELP = "; or ".join(d for _, d in LAYOUTS)


def accepted() -> str:
    return "accepted layouts: " + LAYOUTS_HELP


@dataclass
class Layout:
    """One reading of a dataset folder; `classes` are folder names or CSV labels, sorted."""

    kind: str
    root: Path
    classes: list[str]
    split_dirs: dict[str, str] = field(default_factory=dict)  # split-folders: split -> folder name
    rows: list[tuple[str, str, str]] = field(default_factory=list)  # csv: (fname, label, split or "")
    labels: str = ""  # csv: the labels file
    valid_pct: float = 0.2
    split_seed: int = 42
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (folder, why)
    notes: list[str] = field(default_factory=list)  # why this reading, where another was possible

    @property
    def drawn_split(self) -> bool:
        """True when the validation split is drawn here rather than given by folders or the CSV."""
        if self.kind == "split-folders":
            return "val" not in self.split_dirs
        return self.kind == "class-folders" or not any(s for _, _, s in self.rows)

    def spec(self) -> dict:
        """What config.json records: enough to read the same files into the same splits again."""
        d = {"kind": self.kind, "split_dirs": self.split_dirs, "labels": self.labels}
        if self.drawn_split:
            d.update(valid_pct=self.valid_pct, split_seed=self.split_seed)
        return d

    def summary(self) -> str:
        n = len(self.classes)
        if self.kind == "split-folders":
            dirs = " + ".join(f"{d}/" for d in self.split_dirs.values())
            head = f"layout: split folders {dirs} ({n} classes)"
        elif self.kind == "class-folders":
            head = f"layout: class folders ({n} classes) in {self.root}"
        else:
            head = f"layout: labels from {self.labels} ({n} classes, {len(self.rows)} rows)"
        if self.drawn_split:
            head += (f"; validation split drawn per class: {self.valid_pct:.0%} (--valid-pct), seed {self.split_seed} "
                     "(--split-seed), nothing copied")
        return head + "".join(f"; {n}" for n in self.notes)

    def relabel_target(self, path: Path, class_folder: str) -> Path | str:
        """Where `path` goes when relabelled as `class_folder`, or why it cannot move (a string)."""
        rel = Path(path).resolve().relative_to(self.root.resolve())
        if self.kind == "csv":
            return f"labels come from {self.labels}: change the label there"
        if self.kind == "class-folders":
            return self.root / class_folder / Path(path).name if len(rel.parts) > 1 else "not in a class folder"
        if len(rel.parts) < 3:
            return "not in a class folder of a split"
        return self.root / rel.parts[0] / class_folder / Path(path).name


def is_ignored(name: str) -> str | None:
    """Why a folder is never a class (None: it may be one)."""
    if name.startswith("."):
        return "hidden folder"
    return IGNORED_FOLDERS.get(name)


def subfolders(d: Path, ignored: list | None = None) -> list[str]:
    """Folders directly under `d` that may be classes, sorted; the others go to `ignored`."""
    try:
        names = sorted(e.name for e in os.scandir(d) if e.is_dir())
    except OSError as e:
        raise DataError(f"cannot list {d}: {e.strerror}") from None
    out = []
    for n in names:
        why = is_ignored(n)
        if why is None:
            out.append(n)
        elif ignored is not None:
            ignored.append((str(d / n), why))
    return out


def draw_split(key: str, seed: int) -> str:
    """A file's place in the per-class validation draw: a stable hash of its path and the seed."""
    return hashlib.sha1(f"{seed}:{key}".encode()).hexdigest()


def detect(root: str | Path, labels: str | Path | None = None, valid_pct: float = 0.2, split_seed: int = 42) -> Layout:
    """The layout of `root` (see LAYOUTS); DataError in one line for every problem."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"data folder not found: {root}")
    if not root.is_dir():
        raise DataError(f"data path is not a folder: {root}")
    if not 0 < valid_pct < 1:
        raise DataError(f"--valid-pct {valid_pct:g} must be between 0 and 1 (e.g. 0.2)")
    if labels:
        path, rows = read_labels(root, labels)
        return Layout("csv", root, sorted({lab for _, lab, _ in rows}), rows=rows, labels=str(path.resolve()),
                      valid_pct=valid_pct, split_seed=split_seed)
    ignored: list = []
    top = subfolders(root, ignored)
    found = {s: [n for n in names if n in top] for s, names in SPLIT_FOLDERS.items()}
    if found["train"] or found["val"]:
        lay = _split_folders(root, top, found, valid_pct, split_seed)
    else:
        lay = _class_folders(root, top, valid_pct, split_seed)
    lay.ignored = ignored + lay.ignored
    return lay


def _split_folders(root: Path, top: list[str], found: dict, valid_pct: float, seed: int) -> Layout:
    if not found["train"]:
        raise DataError(f"{root} has {found['val'][0]}/ but no train/ folder ({accepted()})")
    dirs = {s: names[0] for s, names in found.items() if names}
    notes = [f"{', '.join(n + '/' for n in names[1:])} not used: {names[0]}/ is the {s} split"
             for s, names in found.items() if len(names) > 1]
    split_names = {n for names in SPLIT_FOLDERS.values() for n in names}
    loose = [n for n in top if n not in split_names]
    if loose:
        notes.append(f"folder(s) beside the split folders not read: {', '.join(loose[:5])}"
                     f"{' ...' if len(loose) > 5 else ''} (split folders were found, so the root is not class folders)")
    ignored: list = []
    per = {s: subfolders(root / d, ignored) for s, d in dirs.items()}
    classes = per["train"]
    for s in ("val", "test"):
        extra = sorted(set(per.get(s, [])) - set(classes))
        if extra:
            raise DataError(f"class folder(s) in {root / dirs[s]} but not in {dirs['train']}/: {', '.join(extra[:10])}")
    if "val" not in dirs:
        notes.append(f"no val/, valid/ or validation/ folder: the validation split is drawn from {dirs['train']}/")
    lay = Layout("split-folders", root, classes, split_dirs=dirs, valid_pct=valid_pct, split_seed=seed,
                 ignored=ignored, notes=notes)
    _need_classes(lay, root / dirs["train"])
    return lay


def _class_folders(root: Path, top: list[str], valid_pct: float, seed: int) -> Layout:
    lay = Layout("class-folders", root, top, valid_pct=valid_pct, split_seed=seed)
    _need_classes(lay, root)
    return lay


def _need_classes(lay: Layout, where: Path) -> None:
    if len(lay.classes) < 2:
        raise DataError(f"{where} has {len(lay.classes)} class folder(s); a classifier needs at least 2 "
                        f"({accepted()})")


def files(lay: Layout, walk, skipped: list) -> list[tuple[Path, str, str]]:
    """(path, split, class) of every image file the layout names; `walk(folder, skipped)` lists one
    class folder's image files."""
    if lay.kind == "csv":
        return [(lay.root / f, s, c) for f, c, s in lay.rows]
    out = []
    if lay.kind == "split-folders":
        for s, d in lay.split_dirs.items():
            for c in lay.classes:
                if (lay.root / d / c).is_dir():
                    out += [(p, s, c) for p in walk(lay.root / d / c, skipped)]
    else:
        for c in lay.classes:
            out += [(p, "", c) for p in walk(lay.root / c, skipped)]
    return out


def assign_splits(lay: Layout, found: list[tuple[Path, str, str]]) -> list[tuple[Path, str, str]]:
    """Fill in the split where the layout draws it: per class, the files whose hash sorts first
    are the validation images (round(valid_pct x n), none for a class of one file)."""
    if not lay.drawn_split:
        return found
    pool = [(p, s, c) for p, s, c in found if s in ("", "train")]
    keep = [(p, s, c) for p, s, c in found if s not in ("", "train")]
    by_class: dict[str, list[Path]] = {}
    for p, _, c in pool:
        by_class.setdefault(c, []).append(p)
    for c, paths in by_class.items():
        order = sorted(paths, key=lambda p: draw_split(p.relative_to(lay.root).as_posix(), lay.split_seed))
        n_val = round(lay.valid_pct * len(order)) if len(order) > 1 else 0
        val = set(order[:n_val])
        keep += [(p, "val" if p in val else "train", c) for p in paths]
    return keep

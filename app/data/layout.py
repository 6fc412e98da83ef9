"""How a dataset folder is laid out, known here and nowhere else: which files are in which split and
of which class. Every other module asks a Layout (or the scanned Dataset) for items, classes and
splits. Every layout problem is one line (DataError, exit 3) naming what was found and the layouts
that are accepted; nothing on disk is touched, and no split copies or moves a file.

The accepted layouts are one table (LAYOUTS); `detect` picks one and says why in `notes` when two
readings were possible. A split that the folders do not give (class folders, or a CSV without
`is_valid`) is drawn file by file from a hash of the file's name within its class and the seed: the
same files every time, for every command, and adding, removing or relabelling a file never moves
another (SPLIT_RULE 2; runs made before it keep their rule 1 split).
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import DataError
from .labels_csv import read_labels

# Split folders as people spell them: any case, the usual aliases (Kaggle's training/ and testing/,
# Hugging Face's validation/, dev/). `--layout class-folders` reads them as classes instead.
SPLIT_FOLDERS = {"train": ("train", "training"), "val": ("val", "valid", "validation", "dev"),
                 "test": ("test", "testing")}
SPLITS = ("train", "val", "test")
READINGS = ("auto", "split-folders", "class-folders")  # --layout: how the folders are read
# 1: the files whose hash sorts first, round(pct x n) per class (runs before split_rule existed);
# 2: each file on its own (its hash under pct), so adding, removing or relabelling one never moves another.
SPLIT_RULE = 2
# Never classes, never walked: hidden folders too (names starting with "."); quarantine/ is where
# review --apply puts removed files.
IGNORED_FOLDERS = {"__MACOSX": "macOS archive metadata", "@eaDir": "Synology thumbnails",
                   "__pycache__": "Python cache", "quarantine": "files removed by review --apply"}
LAYOUTS = (  # kind, what it looks like (the help and the errors say these)
    ("split-folders", "ROOT/train/<class>/ with ROOT/val/ (or valid/, validation/, dev/; any case; training/ for "
     "train/) and an optional ROOT/test/ (or testing/)"),
    ("class-folders", "ROOT/<class>/ (a --valid-pct validation split drawn per file, seed --split-seed) with an "
     "optional ROOT/test/<class>/"),
    ("csv", "--labels FILE.csv with columns fname,label[,is_valid] (fname relative to ROOT)"),
)
LAYOUTS_HELP = "; or ".join(d for _, d in LAYOUTS)


def split_of(name: str) -> str | None:
    """The split a top folder's name stands for ("Train", "training" -> "train"), or None."""
    key = name.casefold()
    return next((s for s, names in SPLIT_FOLDERS.items() if key in names), None)


def class_key(name: str) -> str:
    """A class's key: its folder name or label in NFC (macOS writes names as NFD; one class either way)."""
    return unicodedata.normalize("NFC", name)


def accepted() -> str:
    return "accepted layouts: " + LAYOUTS_HELP


@dataclass
class Layout:
    """One reading of a dataset folder; `classes` are class keys (NFC folder names or CSV labels), sorted."""

    kind: str
    root: Path
    classes: list[str]
    split_dirs: dict[str, str] = field(default_factory=dict)  # split -> folder name (a class-folders test/ too)
    rows: list[tuple[str, str, str]] = field(default_factory=list)  # csv: (fname, label, split or "")
    labels: str = ""  # csv: the labels file
    valid_pct: float = 0.2
    split_seed: int = 42
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (folder, why)
    notes: list[str] = field(default_factory=list)  # why this reading, where another was possible
    folders: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # split ("" = the root) -> class -> folders
    reading: str = "auto"  # --layout
    split_rule: int = SPLIT_RULE
    delim: str = ""  # csv: the multi-label delimiter; "" = one label per image

    @property
    def multi(self) -> bool:
        """Several labels per image (a multi-label CSV): each row's label is a tuple of labels."""
        return bool(self.delim)

    @property
    def drawn_split(self) -> bool:
        """True when the validation split is drawn here rather than given by folders or the CSV."""
        if self.kind == "split-folders":
            return "val" not in self.split_dirs
        return self.kind == "class-folders" or not any(s for _, _, s in self.rows)

    def spec(self) -> dict:
        """What config.json records: enough to read the same files into the same splits again."""
        d = {"kind": self.kind, "split_dirs": self.split_dirs, "labels": self.labels, "reading": self.reading}
        if self.multi:
            d["label_delim"] = self.delim
        if self.drawn_split:
            d.update(valid_pct=self.valid_pct, split_seed=self.split_seed, split_rule=self.split_rule)
        return d

    def summary(self) -> str:
        n = len(self.classes)
        dirs = " + ".join(f"{d}/" + ("" if d == s else f" as {s}") for s, d in self.split_dirs.items())
        if self.kind == "split-folders":
            head = f"layout: split folders {dirs} ({n} classes)"
        elif self.kind == "class-folders":
            head = f"layout: class folders ({n} classes) in {self.root}" + (f"; test split: {dirs}" if dirs else "")
        elif self.multi:
            none = sum(not lab for _, lab, _ in self.rows)
            head = (f"layout: labels from {self.labels} ({n} labels, multi-label: {self.delim!r} between labels, "
                    f"{len(self.rows)} rows{f', {none} with no label' if none else ''})")
        else:
            head = f"layout: labels from {self.labels} ({n} classes, {len(self.rows)} rows)"
        if self.drawn_split:
            head += (f"; validation split drawn per file: {self.valid_pct:.0%} (--valid-pct), seed {self.split_seed} "
                     "(--split-seed), nothing copied")
        return head + "".join(f"; {n}" for n in self.notes)

    def class_dir(self, split: str, key: str) -> Path:
        """The folder a file of class `key` in `split` goes to (its first spelling on disk, else the key)."""
        base = self.root / self.split_dirs[split] if self.kind == "split-folders" else self.root
        return base / (self.folders.get(split if self.kind == "split-folders" else "", {}).get(key) or [key])[0]

    def relabel_target(self, path: Path, key: str) -> Path | None | str:
        """Where `path` goes when relabelled as class `key`: a path, None (the CSV's row changes, the
        file stays), or why it cannot (a string)."""
        rel = Path(path).resolve().relative_to(self.root.resolve())
        if self.kind == "csv":
            return None
        split = next((s for s, d in self.split_dirs.items() if rel.parts[0] == d), "")
        if self.kind == "class-folders" and split == "":
            return self.class_dir("", key) / Path(*rel.parts[1:]) if len(rel.parts) > 1 else "not in a class folder"
        if len(rel.parts) < 3:
            return "not in a class folder of a split"
        if self.kind == "class-folders":  # the test/ split beside the class folders
            return self.root / rel.parts[0] / key / Path(*rel.parts[2:])
        return self.class_dir(split, key) / Path(*rel.parts[2:])


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


def by_key(names: list[str]) -> dict[str, list[str]]:
    """Class key -> its folders (two spellings of one name, NFC and NFD, are one class)."""
    out: dict[str, list[str]] = {}
    for n in names:
        out.setdefault(class_key(n), []).append(n)
    return out


def draw_split(key: str, seed: int) -> str:
    """A file's place in the validation draw: a stable hash of its key and the seed."""
    return hashlib.sha1(f"{seed}:{key}".encode()).hexdigest()


def detect(root: str | Path, labels: str | Path | None = None, valid_pct: float = 0.2, split_seed: int = 42,
           layout: str = "auto", split_rule: int = SPLIT_RULE, label_delim: str | None = None) -> Layout:
    """The layout of `root` (see LAYOUTS; `layout` forces a reading of the folders); DataError in one
    line for every problem."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"data folder not found: {root}")
    if not root.is_dir():
        raise DataError(f"data path is not a folder: {root}")
    if not 0 < valid_pct < 1:
        raise DataError(f"--valid-pct {valid_pct:g} must be between 0 and 1 (e.g. 0.2)")
    if layout not in READINGS:
        raise DataError(f"--layout {layout!r} is not one of {', '.join(READINGS)}")
    if labels:
        path, rows, notes, delim = read_labels(root, labels, label_delim)
        keys = {lab for _, cell, _ in rows for lab in (cell if delim else [cell])}
        return Layout("csv", root, sorted(keys, key=label_order(keys)), rows=rows, labels=str(path.resolve()),
                      valid_pct=valid_pct, split_seed=split_seed, notes=notes, split_rule=split_rule, delim=delim)
    if label_delim:
        raise DataError("--label-delim is for a multi-label --labels CSV; folders give one class per image")
    ignored: list = []
    top = subfolders(root, ignored)
    found = {s: [n for n in top if split_of(n) == s] for s in SPLITS}
    if layout == "split-folders" and not (found["train"] or found["val"]):
        raise DataError(f"--layout split-folders: {root} has no train/ or val/ folder (any case; {accepted()})")
    if layout == "class-folders" or (layout == "auto" and not (found["train"] or found["val"])):
        lay = _class_folders(root, top, found["test"] if layout == "auto" else [], valid_pct, split_seed)
    else:
        lay = _split_folders(root, top, found, valid_pct, split_seed)
    lay.ignored = ignored + lay.ignored
    lay.reading, lay.split_rule = layout, split_rule
    return lay


def label_order(labels: set[str]) -> object:
    """Sort key of CSV labels: numbers as numbers when every label is a whole number ("2" before "10")."""
    numeric = all(lab.lstrip("-").isdigit() for lab in labels)
    return (lambda lab: (int(lab), lab)) if numeric else None


def _split_folders(root: Path, top: list[str], found: dict, valid_pct: float, seed: int) -> Layout:
    if not found["train"]:
        raise DataError(f"{root} has {found['val'][0]}/ but no train/ folder ({accepted()}; --layout class-folders "
                        "reads every folder as a class)")
    dirs = {s: names[0] for s, names in found.items() if names}
    notes = [f"{', '.join(n + '/' for n in names[1:])} not used: {names[0]}/ is the {s} split"
             for s, names in found.items() if len(names) > 1]
    loose = [n for n in top if split_of(n) is None]
    if loose:
        notes.append(f"folder(s) beside the split folders not read: {', '.join(loose[:5])}"
                     f"{' ...' if len(loose) > 5 else ''} (split folders were found, so the root is not class folders)")
    ignored: list = []
    folders = {s: by_key(subfolders(root / d, ignored)) for s, d in dirs.items()}
    classes = sorted(folders["train"])
    for s in ("val", "test"):
        extra = sorted(set(folders.get(s, {})) - set(classes))
        if extra:
            raise DataError(f"class folder(s) in {root / dirs[s]} but not in {dirs['train']}/: {', '.join(extra[:10])}")
    if "val" not in dirs:
        notes.append(f"no val/, valid/ or validation/ folder: the validation split is drawn from {dirs['train']}/")
    lay = Layout("split-folders", root, classes, split_dirs=dirs, valid_pct=valid_pct, split_seed=seed,
                 ignored=ignored, notes=notes + _merged(folders), folders=folders)
    _need_classes(lay, root / dirs["train"])
    return lay


def _class_folders(root: Path, top: list[str], tests: list[str], valid_pct: float, seed: int) -> Layout:
    """ROOT/<class>/; a test/ folder beside them (any case, testing/) is the test split when it holds
    class folders, else unlabelled images that are not read (never a class)."""
    folders = {"": by_key([n for n in top if n not in tests])}
    lay = Layout("class-folders", root, sorted(folders[""]), valid_pct=valid_pct, split_seed=seed, folders=folders)
    for t in tests:
        inner = by_key(subfolders(root / t))
        if inner and set(inner) <= set(lay.classes) and "test" not in lay.split_dirs:
            lay.split_dirs["test"], lay.folders["test"] = t, inner
        else:
            lay.ignored.append((str(root / t), "a test folder without the class folders inside (unlabelled images "
                                "are not read: predict them; --layout class-folders reads it as a class)"))
    lay.notes += _merged(folders)
    _need_classes(lay, root)
    return lay


def _merged(folders: dict) -> list[str]:
    return [f"folders {' and '.join(repr(n) for n in names)} are one class ({key!r}: one name in NFC and NFD)"
            for per in folders.values() for key, names in per.items() if len(names) > 1]


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
    for split, per in lay.folders.items():
        base = lay.root / lay.split_dirs[split] if split else lay.root
        for c in lay.classes:
            for name in per.get(c, []):
                out += [(p, split, c) for p in walk(base / name, skipped)]
    return out


def class_relative(lay: Layout, path: Path) -> str:
    """`path` below its class folder (the CSV layout: below ROOT), in NFC: what names a file within its
    class, whichever class it is in (the split's key, so that a relabelled file keeps its split)."""
    parts = Path(path).relative_to(lay.root).parts
    if lay.kind == "split-folders" or (lay.kind == "class-folders" and parts[0] in lay.split_dirs.values()):
        parts = parts[2:]
    elif lay.kind == "class-folders":
        parts = parts[1:]
    return class_key("/".join(parts))


def assign_splits(lay: Layout, found: list[tuple[Path, str, str]]) -> list[tuple[Path, str, str]]:
    """Fill in the split where the layout draws it: a file is a validation image when its own hash,
    keyed by its name within its class (class_relative) and the seed, falls under valid_pct; a class
    keeps at least one training image (the file nearest the line goes back to training)."""
    if not lay.drawn_split:
        return found
    pool = [(p, s, c) for p, s, c in found if s in ("", "train")]
    keep = [(p, s, c) for p, s, c in found if s not in ("", "train")]
    by_class: dict[str, list[Path]] = {}
    for p, _, c in pool:
        by_class.setdefault(c, []).append(p)
    if lay.multi:  # each file on its own; every label keeps a training image
        val = _draw_multi(lay, [(p, c) for p, _, c in pool])
        return keep + [(p, "val" if p in val else "train", c) for p, _, c in pool]
    draw = _draw_v1 if lay.split_rule == 1 else _draw
    for c, paths in by_class.items():
        val = draw(lay, paths)
        keep += [(p, "val" if p in val else "train", c) for p in paths]
    return keep


def _draw(lay: Layout, paths: list[Path]) -> set[Path]:
    where = {p: int(draw_split(class_relative(lay, p), lay.split_seed)[:15], 16) / 16**15 for p in paths}
    val = {p for p in paths if where[p] < lay.valid_pct}
    if len(val) == len(paths):
        val.discard(max(paths, key=where.get))
    return val


def _draw_multi(lay: Layout, pool: list[tuple[Path, tuple]]) -> set[Path]:
    """A multi-label set drawn file by file, as a single-label one is (no stratification beyond
    this: adding or relabelling one file never moves another); a label all of whose images drew
    validation keeps the one nearest the line for training."""
    where = {p: int(draw_split(class_relative(lay, p), lay.split_seed)[:15], 16) / 16**15 for p, _ in pool}
    val = {p for p, _ in pool if where[p] < lay.valid_pct}
    for label in sorted({lab for _, labs in pool for lab in labs}):
        carriers = [p for p, labs in pool if label in labs]
        if carriers and all(p in val for p in carriers):
            val.discard(max(carriers, key=where.get))
    return val


def _draw_v1(lay: Layout, paths: list[Path]) -> set[Path]:
    """Runs made before split_rule 2 read their split as they were trained: the files whose hash sorts
    first, round(valid_pct x n) per class (none for a class of one file)."""
    order = sorted(paths, key=lambda p: draw_split(p.relative_to(lay.root).as_posix(), lay.split_seed))
    return set(order[:round(lay.valid_pct * len(order)) if len(order) > 1 else 0])


def reading_of(cfg) -> dict:
    """detect()'s and scan()'s reading options as a run's settings hold them."""
    labels = cfg.labels or None
    if labels and not Path(labels).is_absolute():  # stored relative to the data root, so a moved dataset works
        labels = str(Path(cfg.data) / labels)
    return {"labels": labels, "valid_pct": cfg.valid_pct, "split_seed": cfg.split_seed,
            "layout": getattr(cfg, "layout", "auto"), "split_rule": getattr(cfg, "split_rule", SPLIT_RULE),
            "label_delim": getattr(cfg, "label_delim", "") or None}


def stored_labels(lay: Layout) -> str:
    """The labels file as a run stores it: relative to the data root when it lies inside it (the
    dataset may move, or be copied, with its CSV), else absolute."""
    if not lay.labels:
        return ""
    try:
        return Path(lay.labels).resolve().relative_to(lay.root.resolve()).as_posix()
    except ValueError:
        return str(Path(lay.labels).resolve())


def follow_moved(cfg, data=None, labels=None):
    """A run's settings with its dataset (and labels file) where they are now (`--data`, `--labels`)."""
    changes = {}
    if data:
        changes["data"] = str(Path(data).resolve())
    if labels:
        changes["labels"] = str(Path(labels).resolve())
    return cfg.replace(**changes) if changes else cfg

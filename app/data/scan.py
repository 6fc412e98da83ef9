"""The dataset: check its layout and list its readable images, each file with one verdict.

ImageNet layout: ROOT/train/<class>/*.JPEG and ROOT/val/<class>/*.JPEG. Imagenette synsets are
shown with human names; any other folder name is its own label. Class order is the sorted
folder order everywhere (vocab, figures, exports), as in torchvision's ImageFolder. Decode
verdicts are remembered per file (size, mtime) so a second scan only re-checks what changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import DataError
from ..core.files import write_text
from ..core.paths import dataset_cache_dir
from .classes import human_name
from .images import BadImage, is_image_name, open_rgb
from .layout import SPLITS, check_layout


@dataclass
class Item:
    path: Path
    split: str  # "train" | "val"
    label: int  # index into Dataset.classes
    side: int = 0  # shorter side in pixels, upright (0: not decoded by the scan)


@dataclass
class Dataset:
    """A scanned dataset: readable images, and every file left out with the reason."""

    root: Path
    classes: list[str]  # folder names (synsets), sorted: the class index order
    items: list[Item]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    modes: Counter = field(default_factory=Counter)  # Pillow modes of the readable files
    warnings: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [human_name(c) for c in self.classes]

    def split(self, split: str) -> list[Item]:
        return [it for it in self.items if it.split == split]

    def counts(self) -> dict[str, list[int]]:
        out = {s: [0] * len(self.classes) for s in SPLITS}
        for it in self.items:
            out[it.split][it.label] += 1
        return out

    def median_side(self) -> int:
        """The training images' typical shorter side (0 when the scan did not decode them)."""
        sides = sorted(it.side for it in self.items if it.split == "train" and it.side)
        return sides[len(sides) // 2] if sides else 0

    def fingerprint(self) -> str:
        """Changes when any file, label or split changes (stat-based, cheap)."""
        h = hashlib.sha256()
        for it in sorted(self.items, key=lambda i: str(i.path)):
            st = it.path.stat()
            rel = it.path.relative_to(self.root).as_posix()
            h.update(f"{rel}|{st.st_size}|{st.st_mtime_ns}|{it.label}\n".encode())
        return h.hexdigest()[:16]


def walk_images(folder: Path, skipped: list) -> list[Path]:
    """Files under `folder`, following directory symlinks but never into a loop."""
    out, seen, stack = [], set(), [folder]
    while stack:
        d = stack.pop()
        try:
            real = os.path.realpath(d)
        except OSError:
            skipped.append((str(d), "symlink loop"))
            continue
        if real in seen:
            skipped.append((str(d), "symlink loop (directory already visited)"))
            continue
        seen.add(real)
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as e:
            skipped.append((str(d), f"cannot list folder: {e.strerror}"))
            continue
        for e in entries:
            p = Path(e.path)
            try:
                is_dir = e.is_dir()  # follows symlinks; ELOOP raises
            except OSError:
                skipped.append((str(p), "symlink loop"))
                continue
            if is_dir:
                if e.is_symlink() and _is_ancestor(os.path.realpath(p), real):
                    skipped.append((str(p), "symlink loop (points to a folder above it)"))
                else:
                    stack.append(p)
            elif e.name.startswith("."):
                continue  # .DS_Store and friends
            elif is_image_name(p):
                out.append(p)
            else:
                skipped.append((str(p), "not an image file name"))
    return sorted(out)


def _is_ancestor(a: str, b: str) -> bool:
    """True when folder `a` is `b` or contains it."""
    return b == a or b.startswith(a.rstrip(os.sep) + os.sep)


def _check_one(path: str) -> tuple[str | None, str, int]:
    """(reason, source mode, shorter side in pixels): reason is None when the file decodes fully."""
    import warnings

    try:
        from PIL import Image

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                mode = im.mode
    except Exception:
        mode = ""
    try:
        im = open_rgb(path)
    except BadImage as e:
        return str(e), "", 0
    return None, mode, min(im.size)


class _Verdicts:
    """Decode verdicts per file, remembered by (size, mtime) so a re-scan only re-checks changes."""

    def __init__(self, root: Path):
        self.file = dataset_cache_dir(root) / "verdicts.json"
        try:
            self.data = json.loads(self.file.read_text())
        except (OSError, ValueError):
            self.data = {}

    def get(self, path: Path, st: os.stat_result):
        v = self.data.get(str(path))
        if v and len(v) == 5 and v[0] == st.st_size and v[1] == st.st_mtime_ns:
            return v[2], v[3], v[4]
        return None

    def put(self, path: Path, st: os.stat_result, reason, mode, side):
        self.data[str(path)] = [st.st_size, st.st_mtime_ns, reason, mode, side]

    def save(self):
        try:
            write_text(self.file, json.dumps(self.data))
        except OSError:
            pass  # a read-only cache only costs a re-check next time


def scan(root: str | Path, verify: bool = True, progress=None, workers: int | None = None) -> Dataset:
    """List and check a dataset. `verify` decodes every image (remembered between runs)."""
    root = Path(root)
    folders = check_layout(root)
    classes = folders["train"]
    skipped: list[tuple[str, str]] = []
    files = _list_files(root, classes, folders, skipped)
    verdicts = _verdicts(root, [p for p, _, _ in files], verify, progress, workers)
    items, modes = [], Counter()
    for (p, s, label), (reason, mode, side) in zip(files, verdicts):
        if reason is None:
            items.append(Item(p, s, label, side))
            modes[mode] += 1
        else:
            skipped.append((str(p), reason))
    ds = Dataset(root, classes, items, skipped, modes)
    _check_counts(ds, folders, "has no readable image (all skipped)")
    missing_val = [c for c in classes if c not in folders["val"]]
    if missing_val:
        ds.warnings.append(f"no val folder for: {', '.join(missing_val)} (their metrics are undefined)")
    return ds


def _list_files(root: Path, classes: list[str], folders: dict, skipped: list) -> list[tuple[Path, str, int]]:
    """(path, split, label) of every image file name; a class folder without any stops here."""
    files = []
    for s in SPLITS:
        for label, c in enumerate(classes):
            if c in folders[s]:
                files += [(p, s, label) for p in walk_images(root / s / c, skipped)]
    counts = Counter((s, label) for _, s, label in files)
    for s in SPLITS:
        for label, c in enumerate(classes):
            if c in folders[s] and counts[(s, label)] == 0:
                raise DataError(f"empty class folder: {root / s / c} (no image files)")
    if not any(s == "val" for _, s, _ in files):
        raise DataError(f"{root}/val has no images")
    return files


def _check_counts(ds: Dataset, folders: dict, why: str) -> None:
    after = ds.counts()
    for s in SPLITS:
        for label, c in enumerate(ds.classes):
            if c in folders[s] and after[s][label] == 0:
                raise DataError(f"class '{c}' in {s} {why}")


def _verdicts(root: Path, paths: list[Path], verify: bool, progress, workers) -> list[tuple[str | None, str, int]]:
    """(reason or None, Pillow mode, shorter side) per file: remembered ones reused, the others
    decoded now."""
    verdicts = _Verdicts(root)
    out: list = [None] * len(paths)
    todo = []
    for i, p in enumerate(paths):
        try:
            st = p.stat()
        except OSError as e:
            out[i] = ("symlink loop" if e.errno == 40 else f"cannot stat: {e.strerror}", None, 0)
            continue
        out[i] = verdicts.get(p, st) if verify else (None, "?", 0)
        if out[i] is None:
            todo.append((i, st))
    if todo:
        results = _map_checks([str(paths[i]) for i, _ in todo], progress, workers)
        for (i, st), res in zip(todo, results):
            out[i] = res
            verdicts.put(paths[i], st, *res)
        verdicts.save()
    return out


def _map_checks(paths: list[str], progress, workers: int | None):
    """Check every file (in worker processes when there are many), with one transient bar."""
    from ..core.progress import bar

    workers = workers or min(len(paths) // 256 + 1, os.cpu_count() or 1)
    out = []
    with bar(progress, "checking images", len(paths)) as advance:
        if workers <= 1:
            for p in paths:
                out.append(_check_one(p))
                advance()
            return out
        with ProcessPoolExecutor(workers) as ex:
            for r in ex.map(_check_one, paths, chunksize=64):
                out.append(r)
                advance()
    return out

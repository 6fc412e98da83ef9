"""The dataset: its layout read (layout.py), its readable images listed, each file with one verdict.

Class order is the sorted class-key order everywhere (vocab, figures, exports), as in torchvision's
ImageFolder; classes are shown by their human names (classes.py). Decode verdicts are remembered
per file (size, mtime) so a second scan only re-checks what changed. A class with no training
image is left out with a warning (its other files listed as skipped); a class with no validation
image is kept, with a warning.
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
from .classes import class_names
from .images import BadImage, is_image_name, open_rgb, read_header
from .layout import SPLIT_RULE, SPLITS, Layout, assign_splits, detect, files, is_ignored, reading_of

IMBALANCE_WARN = 5.0
FINGERPRINT_VERSION = 2  # 2: the split is hashed with each file (a drawn split can change it)  # largest / smallest training class above this: a warning


@dataclass
class Item:
    path: Path
    split: str  # "train" | "val" | "test"
    label: int  # index into Dataset.classes (-1 in a multi-label set: see labels)
    side: int = 0  # shorter side in pixels, upright (0: not decoded by the scan)
    labels: tuple[int, ...] = ()  # a multi-label set's labels (indices into Dataset.classes; may be none)


@dataclass
class Dataset:
    """A scanned dataset: readable images, and every file left out with the reason."""

    root: Path
    classes: list[str]  # class keys (folder names or CSV labels), sorted: the class index order
    items: list[Item]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    modes: Counter = field(default_factory=Counter)  # Pillow modes of the readable files
    warnings: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # human names, in class order (the vocab)
    layout: Layout | None = None
    names_from: str = ""  # words.txt, classes.csv or "" (built-in / the keys)

    def __post_init__(self):
        if not self.names:
            self.names = class_names(self.root, self.classes)[0]

    @property
    def ignored(self) -> list[tuple[str, str]]:
        return self.layout.ignored if self.layout else []

    @property
    def multi(self) -> bool:
        return bool(self.layout and self.layout.multi)

    def split(self, split: str) -> list[Item]:
        return [it for it in self.items if it.split == split]

    def counts(self) -> dict[str, list[int]]:
        """Images per class and split (multi-label: images carrying each label)."""
        out = {s: [0] * len(self.classes) for s in SPLITS}
        for it in self.items:
            for k in (it.labels if self.multi else (it.label,)):
                out[it.split][k] += 1
        return out

    def imbalance(self) -> float:
        """Largest / smallest training class (1.0 when balanced)."""
        n = [c for c in self.counts()["train"] if c]
        return max(n) / min(n) if n else 1.0

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
            label = ";".join(map(str, it.labels)) if self.multi else it.label
            h.update(f"{rel}|{st.st_size}|{st.st_mtime_ns}|{label}|{it.split}\n".encode())
        return h.hexdigest()[:16]


def walk_images(folder: Path, skipped: list, ignored: list | None = None) -> list[Path]:
    """Files under `folder`, following directory symlinks but never into a loop, and never into
    hidden or tool folders (.ipynb_checkpoints, __MACOSX, ...), which go to `ignored`."""
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
            if is_dir and is_ignored(e.name):
                if ignored is not None:
                    ignored.append((str(p), is_ignored(e.name)))
            elif is_dir:
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
    """(reason, source mode, shorter side in pixels): reason is None when the file decodes fully.
    The file is checked (a regular file, readable) before anything opens it: a FIFO would block."""
    try:
        im = open_rgb(path)
    except BadImage as e:
        return str(e), "", 0
    return None, _mode(path), min(im.size)


def _check_header(path: str) -> tuple[str | None, str, int]:
    """_check_one from the header alone (read_header): what the decoded cache's one decode of the
    file then completes (record_decoded)."""
    try:
        mode, side = read_header(path)
    except BadImage as e:
        return str(e), "", 0
    return None, mode, side


def _mode(path: str) -> str:
    """The file's own Pillow mode (L, RGB, CMYK, I;16, ...), for the `data` table."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                return im.mode
    except Exception:
        return ""


class _Verdicts:
    """Decode verdicts per file, remembered by (size, mtime) so a re-scan only re-checks changes.
    Each is "full" (the file was decoded) or "header" (only its header was read, by a scan for the
    decoded cache, whose build then decodes the file once and makes the verdict full)."""

    def __init__(self, root: Path):
        self.file = dataset_cache_dir(root) / "verdicts.json"
        try:
            self.data = json.loads(self.file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.data = {}

    def get(self, path: Path, st: os.stat_result, full: bool = True):
        v = self.data.get(str(path))
        if not v or len(v) < 5 or v[0] != st.st_size or v[1] != st.st_mtime_ns:
            return None
        if full and len(v) > 5 and v[5] != "full":
            return None
        return v[2], v[3], v[4]

    def put(self, path: Path, st: os.stat_result, reason, mode, side, kind: str = "full"):
        self.data[str(path)] = [st.st_size, st.st_mtime_ns, reason, mode, side, kind]

    def decoded(self, path: str, reason: str | None) -> None:
        """A file the cache build decoded: its header verdict becomes full."""
        v = self.data.get(path)
        if v and len(v) >= 5:
            self.data[path] = [v[0], v[1], reason, v[3], v[4], "full"]

    def save(self):
        try:
            write_text(self.file, json.dumps(self.data))
        except OSError:
            pass  # a read-only cache only costs a re-check next time


def record_decoded(root: Path, results: dict[str, str | None]) -> None:
    """What the decoded cache's build found decoding each file (None: it decodes), remembered as the
    file's full verdict: the first run decodes each image once, for both."""
    verdicts = _Verdicts(root)
    for path, reason in results.items():
        verdicts.decoded(path, reason)
    verdicts.save()


def scan(root: str | Path, verify: bool | str = True, progress=None, workers: int | None = None, labels=None,
         valid_pct: float = 0.2, split_seed: int = 42, layout: str = "auto", split_rule: int = SPLIT_RULE,
         label_delim: str | None = None) -> Dataset:
    """List and check a dataset in any accepted layout. `verify`: True decodes every image, "header"
    reads headers only (the decoded cache's build decodes each file once and completes the verdict),
    False neither (verdicts are remembered between runs). Its paths are absolute (resolved), so what a
    run stores works from any folder."""
    root = Path(root).expanduser().resolve()
    lay = detect(root, labels, valid_pct, split_seed, layout, split_rule, label_delim)
    skipped: list[tuple[str, str]] = []
    found = assign_splits(lay, files(lay, lambda d, sk: walk_images(d, sk, lay.ignored), skipped))
    verdicts = _verdicts(root, [p for p, _, _ in found], verify, progress, workers)
    readable, modes = [], Counter()
    for (p, s, c), (reason, mode, side) in zip(found, verdicts):
        if reason is None:
            readable.append((p, s, c, side))
            modes[mode] += 1
        else:
            skipped.append((str(p), reason))
    ds = _dataset(lay, readable, skipped, modes)
    names, ds.names_from = class_names(root, ds.classes)
    ds.names = names
    return ds


def scan_for(cfg, **kw) -> Dataset:
    """scan() of a run's data as its settings read it (layout options included). For the cached
    loader the headers only: its cache build decodes every file once, for the verdict too."""
    kw.setdefault("verify", "header" if getattr(cfg, "loader", "") == "cached" else True)
    return scan(cfg.data, **reading_of(cfg), **kw)


def _dataset(lay: Layout, readable: list, skipped: list, modes: Counter) -> Dataset:
    """Classes with at least one training image, their items, and a warning for each class left out
    or without validation images."""
    keys = (lambda c: c) if lay.multi else (lambda c: (c,))
    train = Counter(k for _, s, c, _ in readable if s == "train" for k in keys(c))
    classes = [c for c in lay.classes if train[c]]
    warnings = [f"class {c!r} has no readable training image: left out (its other files are listed as skipped)"
                for c in lay.classes if not train[c]]
    if len(classes) < 2:
        raise DataError(f"{lay.root}: {len(classes)} class(es) with readable training images; a classifier needs 2")
    index = {c: i for i, c in enumerate(classes)}
    if lay.multi:  # a label with no training image is dropped from the images that carry it
        items = [Item(p, s, -1, side, tuple(index[k] for k in c if k in index)) for p, s, c, side in readable]
    else:
        items = [Item(p, s, index[c], side) for p, s, c, side in readable if c in index]
        skipped += [(str(p), f"its class {c!r} has no training image") for p, _, c, _ in readable if c not in index]
    if not any(it.split == "val" for it in items):
        raise DataError(f"{lay.root} has no validation images ({lay.summary()})")
    ds = Dataset(lay.root, classes, items, skipped, modes, warnings, names=list(classes), layout=lay)
    no_val = [c for c, n in zip(classes, ds.counts()["val"]) if not n]
    if no_val:
        ds.warnings.append(f"no validation images for {len(no_val)} class(es): {', '.join(no_val[:10])}"
                           f"{' ...' if len(no_val) > 10 else ''} (left out of the macro averages)")
    if ds.imbalance() > IMBALANCE_WARN:
        ds.warnings.append(f"imbalanced: the largest training class has {ds.imbalance():.1f}x the images of the "
                           "smallest (over 5); consider --balance weights or sampler")
    return ds


def _verdicts(root: Path, paths: list[Path], verify, progress, workers) -> list[tuple[str | None, str, int]]:
    """(reason or None, Pillow mode, shorter side) per file: remembered ones reused, the others
    decoded (or their headers read) now."""
    verdicts = _Verdicts(root)
    out: list = [None] * len(paths)
    todo = []
    for i, p in enumerate(paths):
        try:
            st = p.stat()
        except OSError as e:
            out[i] = ("symlink loop" if e.errno == 40 else f"cannot stat: {e.strerror}", None, 0)
            continue
        out[i] = verdicts.get(p, st, full=verify is True) if verify else (None, "?", 0)
        if out[i] is None:
            todo.append((i, st))
    if todo:
        check = _check_one if verify is True else _check_header
        results = _map_checks([str(paths[i]) for i, _ in todo], progress, workers, check)
        for (i, st), res in zip(todo, results):
            out[i] = res
            verdicts.put(paths[i], st, *res, kind="full" if verify is True else "header")
        verdicts.save()
    return out


def _map_checks(paths: list[str], progress, workers: int | None, check=_check_one):
    """Check every file (on every core when there are many), with one transient bar."""
    from ..core.progress import bar

    workers = workers or min(len(paths) // 256 + 1, os.cpu_count() or 1)
    out = []
    what = "checking images" if check is _check_one else "reading image headers"
    with bar(progress, what, len(paths)) as advance:
        if workers <= 1:
            for p in paths:
                out.append(check(p))
                advance()
            return out
        with ProcessPoolExecutor(workers) as ex:
            for r in ex.map(check, paths, chunksize=64):
                out.append(r)
                advance()
    return out

"""A decoded copy of the dataset: uint8 images at training resolution, built once, read fast.

Layout (one folder per dataset and stored size, under settings.cache_root()):
  images.u8      N x 3 x S x S uint8, row-major, no header (read with pread: nothing is mapped,
                 so host memory stays flat however large the dataset is)
  manifest.json  stored size, classes, and per row: relative path, split, label, bytes, mtime
The manifest is compared with a fresh scan; any added, removed or changed file means a rebuild.
On a GPU the whole array is copied to the device once when it fits.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.config import CACHE_MAX, CACHE_ROOM
from ..core.device import cuda_available
from ..core.errors import DataError
from ..core.paths import dataset_cache_dir
from ..core.progress import bar
from .images import BadImage, needs_pil, open_rgb, resize_square
from .scan import Dataset, Item, record_decoded

VERSION = 1
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


def stored_size(size: int) -> int:
    """Room for random crops (and a test size up to as much): CACHE_ROOM x the training size, to a
    multiple of 16, at most CACHE_MAX."""
    return int(min(CACHE_MAX, -(-int(size * CACHE_ROOM) // 16) * 16))


def cache_dir(root: Path, size: int, resize: str = "crop", labels: str = "") -> Path:
    """One folder per stored size and resize method (and labels file, for the CSV layout)."""
    name = f"s{size}" + ("" if resize == "crop" else f"-{resize}")
    if labels:
        name += "-" + hashlib.sha1(str(labels).encode()).hexdigest()[:8]
    return dataset_cache_dir(root) / name


def _dir(ds: Dataset, size: int, resize: str) -> Path:
    return cache_dir(ds.root, size, resize, ds.layout.labels if ds.layout else "")


def _row(ds: Dataset, it: Item) -> list:
    st = it.path.stat()
    label = list(it.labels) if ds.multi else it.label  # a multi-label row: its labels' indices
    return [it.path.relative_to(ds.root).as_posix(), it.split, label, st.st_size, st.st_mtime_ns]


@dataclass
class Cache:
    """An opened cache: rows aligned with `paths`, `splits` and `labels`."""

    dir: Path
    root: Path  # the dataset's folder: `paths` are relative to it
    size: int
    classes: list[str]
    names: list[str]  # the human names (the vocab), in class order
    paths: list[str]  # relative to the dataset root
    splits: np.ndarray  # SPLIT_CODES: 0 train, 1 val, 2 test
    labels: np.ndarray  # int64 class per row; a multi-label cache: rows x classes, 0/1 (float32)
    skipped: list[tuple[str, str]]

    @property
    def n(self) -> int:
        return len(self.paths)

    @property
    def row_bytes(self) -> int:
        return 3 * self.size * self.size

    def reader(self) -> RowReader:
        return RowReader(self.dir / "images.u8", self.size)


class RowReader:
    """Reads rows into a fresh array; safe to share between threads, not processes. Positioned
    reads (os.preadv) where the OS has them, else a locked seek + readinto (Windows)."""

    def __init__(self, file: Path, size: int):
        import threading

        self.file, self.size = Path(file), size
        self.row_bytes = 3 * size * size
        self.fh = open(self.file, "rb", buffering=0)
        self.lock = threading.Lock()

    def _read_row(self, buf, offset: int) -> int:
        preadv = getattr(os, "preadv", None)  # looked up per call: absent on Windows
        if preadv is not None:
            return preadv(self.fh.fileno(), [buf], offset)
        with self.lock:
            self.fh.seek(offset)
            return self.fh.readinto(buf)

    def read(self, rows) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), 3, self.size, self.size), dtype=np.uint8)
        flat = out.reshape(len(rows), -1)
        for i, r in enumerate(rows):
            if self._read_row(memoryview(flat[i]), int(r) * self.row_bytes) != self.row_bytes:
                raise OSError(f"short read in {self.file} at row {r}")
        return out

    def read_all(self, chunk: int = 1024):
        """Chunks of consecutive rows, for copying the whole array to a device."""
        n = os.fstat(self.fh.fileno()).st_size // self.row_bytes
        for start in range(0, n, chunk):
            yield self.read(np.arange(start, min(n, start + chunk)))

    def __getstate__(self):  # reopen after pickling (DataLoader workers, spawn)
        return {"file": self.file, "size": self.size}

    def __setstate__(self, d):
        self.__init__(d["file"], d["size"])

    def __del__(self):
        try:
            self.fh.close()
        except (OSError, AttributeError):
            pass


def _decode(args) -> list[bytes] | str:
    """One file decoded once, resized to every stored size; '!reason' when it cannot be."""
    path, sizes, *method = args
    try:
        im = open_rgb(path, min_size=max(sizes))
    except BadImage as e:
        return f"!{e}"
    return [np.ascontiguousarray(np.asarray(resize_square(im, s, *method)).transpose(2, 0, 1)).tobytes() for s in sizes]


def _decode_torchvision(paths: list[str], sizes: tuple[int, ...], device: str) -> list[list[bytes] | str]:
    """JPEG decoding with torchvision (nvJPEG on CUDA). What nvJPEG gets wrong goes to PIL: files
    that are not plain RGB/grayscale JPEGs (CMYK, YCCK) or carry an EXIF rotation (nvJPEG ignores
    it), and any file of a batch that fails (then retried one by one)."""
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    out: list = [None] * len(paths)
    datas, idx = [], []
    for i, p in enumerate(paths):
        if not needs_pil(p):
            try:
                datas.append(read_file(p))
                idx.append(i)
                continue
            except (RuntimeError, OSError):
                pass
        out[i] = _decode((p, sizes))
    try:
        imgs = decode_jpeg(datas, mode=ImageReadMode.RGB, device=device) if datas else []
    except RuntimeError:  # one bad file fails the batch: find it
        imgs = [_decode_one_jpeg(d, device) for d in datas]
    for i, im in zip(idx, imgs):
        out[i] = _decode((paths[i], sizes)) if im is None else _square_resized(im, sizes)
    return out


def _decode_one_jpeg(data, device: str):
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        return None


def _square_resized(im, sizes: tuple[int, ...]) -> list[bytes]:
    """Centre square crop, antialiased bilinear resize to each stored size (what PIL does on the CPU)."""
    import torch
    import torch.nn.functional as F

    h, w = im.shape[-2:]
    m = min(h, w)
    top, left = (h - m) // 2, (w - m) // 2
    im = im[:, top : top + m, left : left + m].unsqueeze(0).float()
    return [F.interpolate(im, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
            .round().clamp(0, 255).to(torch.uint8).cpu().numpy().tobytes() for s in sizes]


def _open_if_current(d: Path, rows: list[list], size: int) -> Cache | None:
    try:
        m = json.loads((d / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if m.get("version") != VERSION or m.get("size") != size or not _same_sources(m, rows):
        return None
    if (d / "images.u8").stat().st_size != len(m["rows"]) * 3 * size * size:
        return None
    return _open(d, m)


def _labels(rows: list, n_classes: int) -> np.ndarray:
    """Each row's class, or (a multi-label cache, whose rows hold lists) its labels one-hot."""
    if rows and isinstance(rows[0][2], list):
        out = np.zeros((len(rows), n_classes), dtype=np.float32)
        for i, r in enumerate(rows):
            out[i, r[2]] = 1.0
        return out
    return np.array([r[2] for r in rows], dtype=np.int64)


def _same_sources(m: dict, rows: list[list]) -> bool:
    """The cache was built from these files; or from these and the ones it found it could not decode
    (a later scan knows them from the build and no longer lists them)."""
    if m.get("sources") == rows:
        return True
    root = Path(m.get("root", ""))
    bad = {Path(p).relative_to(root).as_posix() for p, _ in m.get("skipped", []) if Path(p).is_relative_to(root)}
    return bool(bad) and [r for r in m.get("sources", []) if r[0] not in bad] == rows


def _open(d: Path, m: dict) -> Cache:
    rows = m["rows"]
    return Cache(
        dir=d,
        root=Path(m["root"]),
        size=m["size"],
        classes=m["classes"],
        names=m.get("names") or m["classes"],
        paths=[r[0] for r in rows],
        splits=np.array([SPLIT_CODES[r[1]] for r in rows], dtype=np.int64),
        labels=_labels(rows, len(m["classes"])),
        skipped=[tuple(s) for s in m.get("skipped", [])],
    )


def open_or_build(ds: Dataset, size: int, progress=None, workers: int | None = None, decoder: str = "auto",
                  log=print, resize: str = "crop") -> Cache:
    """The cache for `ds` at stored size `size` (see open_or_build_all)."""
    return open_or_build_all(ds, [size], progress, workers, decoder, log, resize)[size]


def open_or_build_all(ds: Dataset, sizes, progress=None, workers: int | None = None, decoder: str = "auto",
                      log=print, resize: str = "crop") -> dict[int, Cache]:
    """Caches of `ds` at each stored size (images made square by `resize`, fastai's ResizeMethod):
    fresh ones reused, the others (re)built together in one decoding pass, with progress."""
    rows = [_row(ds, it) for it in ds.items]
    out, todo = {}, []
    for size in sorted(set(sizes)):
        c = _open_if_current(_dir(ds, size, resize), rows, size)
        if c is None:
            todo.append(size)
        else:
            out[size] = c
    if todo:
        d0 = _dir(ds, todo[0], resize)
        reason = "stale (files changed)" if (d0 / "manifest.json").exists() else "new"
        log(f"building decoded cache ({reason}): {len(rows)} images at {', '.join(map(str, todo))}px -> {d0.parent}")
        t0 = time.time()
        built = build(ds, tuple(todo), rows, progress, workers, decoder, resize)
        gb = sum(c.n * c.row_bytes for c in built.values()) / 1e9
        log(f"cache built in {time.time() - t0:.1f}s ({gb:.2f} GB)")
        out.update(built)
    for c in out.values():
        c.names = list(ds.names)  # names can change (a words.txt added) without the pixels changing
    return out


def build(ds, sizes: tuple[int, ...], rows, progress=None, workers=None, decoder="auto",
          resize: str = "crop") -> dict[int, Cache]:
    """Decode every image once into one uint8 file per stored size; written beside, then swapped in.
    A build that fails (or is killed) leaves no half-written folder behind (the next build removes
    those of dead processes), and one that cannot fit on the disk is refused before it starts."""
    dirs = {s: _dir(ds, s, resize) for s in sizes}
    _remove_stale(next(iter(dirs.values())).parent)
    _check_space(next(iter(dirs.values())).parent, len(ds.items) * sum(3 * s * s for s in sizes))
    tmps = {s: d.with_name(d.name + f".tmp{os.getpid()}") for s, d in dirs.items()}
    for t in tmps.values():
        shutil.rmtree(t, ignore_errors=True)
        t.mkdir(parents=True)
    try:
        return _write(ds, sizes, rows, tmps, dirs, progress, workers, decoder, resize)
    except OSError as e:  # a disk that fills, a folder made read-only: one line, nothing half-written left
        raise DataError(f"cannot write the decoded cache in {tmps[sizes[0]].parent}: {e.strerror or e}") from None
    finally:
        for t in tmps.values():
            shutil.rmtree(t, ignore_errors=True)  # only left when the build failed: swapped in otherwise


def _remove_stale(parent: Path) -> None:
    """Half-built caches (NAME.tmpPID, NAME.oldPID) of processes that no longer run."""
    import re

    import psutil

    if not parent.is_dir():  # the first cache of this dataset
        return
    for d in parent.iterdir():
        m = re.fullmatch(r".+\.(?:tmp|old)(\d+)", d.name)
        if m and d.is_dir() and not psutil.pid_exists(int(m[1])):
            shutil.rmtree(d, ignore_errors=True)


def _check_space(parent: Path, need: int) -> None:
    parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(parent).free
    if free < need * 1.05 + (64 << 20):
        raise DataError(f"not enough disk space for the decoded cache: it needs {need / 1e9:.2f} GB in {parent}, "
                        f"{free / 1e9:.2f} GB are free (free some, set APP_CACHE_DIR to a bigger disk, or use "
                        "--loader datablock, which needs no cache)")


def _write(ds, sizes, rows, tmps, dirs, progress, workers, decoder, resize) -> dict[int, Cache]:
    paths = [str(it.path) for it in ds.items]
    kept, skipped = [], []
    files = {s: open(tmps[s] / "images.u8", "wb") for s in sizes}
    try:
        with bar(progress, f"decoding to {', '.join(map(str, sizes))}px", len(paths)) as advance:
            for i, res in enumerate(decoded(paths, sizes, decoder, workers, resize)):
                if isinstance(res, str):
                    skipped.append((paths[i], res[1:] if res.startswith("!") else res))
                else:
                    for s, b in zip(sizes, res):
                        files[s].write(b)
                    kept.append(i)
                advance()
    finally:
        for f in files.values():
            f.close()
    bad = dict(skipped)
    record_decoded(ds.root, {p: bad.get(p) for p in paths})  # the scan's verdicts, from this one decode
    return {s: _swap_in(ds, s, rows, kept, skipped, tmps[s], dirs[s]) for s in sizes}


def decoded(paths: list[str], sizes: tuple[int, ...], decoder: str = "auto", workers=None, resize: str = "crop"):
    """Each file's bytes per stored size (or '!reason'), in order: PIL in worker processes ('auto',
    'pil'), or torchvision's decode_jpeg in batches ('torchvision': nvJPEG on a GPU). PIL is the
    default everywhere: on an H100 host with 16 cores, PIL workers decoded Imagenette's small JPEGs
    at 5,220 img/s and nvJPEG at 376 (benchmarks/gpu-nvidia-h100-80gb-hbm3.json, "decode")."""
    if decoder == "torchvision" and resize == "crop":  # its GPU resize is the centre crop only
        dev = "cuda" if cuda_available() else "cpu"
        for start in range(0, len(paths), 256):
            yield from _decode_torchvision(paths[start : start + 256], sizes, dev)
        return
    workers = workers or min(os.cpu_count() or 1, 16)
    jobs = [(p, sizes, resize) for p in paths]
    if workers <= 1 or len(jobs) < 64:
        yield from map(_decode, jobs)
        return
    with ProcessPoolExecutor(workers) as ex:
        yield from ex.map(_decode, jobs, chunksize=32)


def _swap_in(ds, size: int, rows, kept: list[int], skipped, tmp: Path, final: Path) -> Cache:
    manifest = {
        "version": VERSION, "size": size, "root": str(ds.root.resolve()), "classes": ds.classes,
        "names": ds.names,
        "sources": rows, "rows": [rows[i] for i in kept], "skipped": skipped,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    old = final.with_name(final.name + f".old{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return _open(final, manifest)

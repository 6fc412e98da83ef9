"""fastai DataLoaders over a scanned dataset: the stock DataBlock (`--loader datablock`), and the
cached loader over the decoded cache (`--loader cached`, the default).

Both give the same vocab (class order), splits, normalisation and batch augmentation, so a
Learner, its callbacks, show_batch, ClassificationInterpretation and TTA work on either. The
cached loader gathers whole batches of pre-decoded uint8 images (no per-item Python, no JPEG
decoding, no worker processes) and leaves resizing and augmentation to fastai's batch transforms
on the training device.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from fastai.callback.data import WeightedDL
from fastai.data.block import CategoryBlock, DataBlock, MultiCategoryBlock, TransformBlock
from fastai.data.core import Datasets, TfmdDL
from fastai.data.load import SkipItemException
from fastai.data.transforms import Categorize, FuncSplitter, IntToFloatTensor, MultiCategorize, Normalize, OneHotEncode
from fastai.torch_core import TensorCategory, TensorImage, TensorMultiCategory
from fastai.vision.augment import AffineCoordTfm, RandomResizedCrop, Resize, aug_transforms
from fastai.vision.core import PILImage, imagenet_stats
from fastcore.basics import chunked
from fasttransform import DisplayedTransform, Transform

from ..core import ranks as dist
from ..core.config import TrainConfig, test_size_for
from ..core.errors import UsageError
from ..core.ranks import unwrap_dl
from .cache import Cache
from .images import BadImage, open_rgb
from .scan import Dataset, scan_for


class SafeOpen(Transform):
    """The DataBlock loader's decoder: a file as the rest of the app decodes it (EXIF, CMYK,
    16-bit, alpha, size limit) into fastai's PILImage. A file that went bad after the scan is skipped
    (fastai's SkipItemException) and appended to a log file, which DataLoader worker processes
    share (a list in memory would stay in the worker that found it)."""

    def __init__(self, log: str | Path | None = None):
        import tempfile

        super().__init__()
        if log is None:
            fd, log = tempfile.mkstemp(prefix="app-skipped-", suffix=".tsv")
            os.close(fd)
        self.log = str(log)

    def encodes(self, fn: str | Path):
        try:
            return PILImage(open_rgb(fn))
        except BadImage as e:
            with open(self.log, "a", encoding="utf-8") as f:  # one short line: O_APPEND keeps lines whole
                f.write(f"{fn}\t{e}\n")
            raise SkipItemException(str(e)) from None

    def read(self) -> list[tuple[str, str]]:
        try:
            lines = Path(self.log).read_text(encoding="utf-8").splitlines()
        except OSError:
            return []
        return sorted({tuple(ln.split("\t", 1)) for ln in lines if "\t" in ln})


def _safe_open(dl) -> SafeOpen | None:
    tls = getattr(getattr(dl, "dataset", None), "tls", None) or getattr(getattr(dl, "dataset", None), "tfms", None)
    for tl in tls or []:
        for t in getattr(getattr(tl, "tfms", None), "fs", []):
            if isinstance(t, SafeOpen):
                return t
    return None


def take_skipped_at_load(dls) -> list[tuple[str, str]]:
    """Files the DataBlock loader had to skip since the last call (changed on disk after the scan),
    from every process: the run adds them to skipped.csv and its end-of-run list."""
    so = _safe_open(dls.train) if dls is not None else None
    if so is None:
        return []
    out = so.read()
    Path(so.log).write_text("", encoding="utf-8")
    return out


class ResizeBatch(DisplayedTransform):
    """Validation images from the cache to the current size (antialiased, like PIL's resize)."""

    order, split_idx = 20, 1

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def encodes(self, x: TensorImage):
        if x.shape[-1] == self.size and x.shape[-2] == self.size:
            return x
        y = F.interpolate(x.float(), size=(self.size, self.size), mode="bilinear",
                          antialias=True, align_corners=False)
        return TensorImage(y)


def batch_augs(cfg, size: int, cached: bool) -> list:
    """fastai's aug_transforms; on the cached loader its zoom also does the random-resized crop."""
    max_zoom = 1 / math.sqrt(cfg.min_scale) if cached and cfg.min_scale < 1 else 1.1
    return aug_transforms(
        size=size if cached else None, max_zoom=max_zoom, max_rotate=cfg.max_rotate,
        max_lighting=cfg.max_lighting, max_warp=cfg.max_warp,
    )


def norm():
    return Normalize.from_stats(*imagenet_stats)


class NormalizeInPlace(Normalize):
    """fastai's Normalize, written into the batch it is given. On the cached loader that batch is
    always one the pipeline has just made (IntToFloatTensor's copy, which fastai itself divides in
    place, or the affine's output), and the two new batch-sized tensors of (x - mean) / std were a
    quarter of the loader's milliseconds under bf16 on a 2-core host (issue 29). Its decodes, mean
    and std are fastai's, so show_batch, vision_learner and the exports see a Normalize."""

    def encodes(self, x: TensorImage):
        return x.sub_(self.mean).div_(self.std)


def norm_in_place():
    return NormalizeInPlace.from_stats(*imagenet_stats)


def resize_tfm(cfg, size: int) -> Resize:
    """fastai's Resize with the run's method (crop, squish, pad with black): what validation,
    evaluation, the bundle and the pickle all do to an image."""
    return Resize(size, method=getattr(cfg, "resize", "crop"), pad_mode="zeros")


def test_scale(cfg) -> float:
    return getattr(cfg, "test_scale", 1.0)


def _item_resize(cfg, size) -> list:
    """Training: fastai's RandomResizedCrop when the recipe crops (min_scale < 1), else Resize.
    Validation: always the plain Resize, at the test size (fastai's RandomResizedCrop would validate
    by squashing to size + 14 % and cropping the centre, which is not what the bundle and the pickle do)."""
    crops = cfg.min_scale < 1
    train = RandomResizedCrop(size, min_scale=cfg.min_scale, ratio=(3 / 4, 4 / 3)) if crops else resize_tfm(cfg, size)
    valid = resize_tfm(cfg, test_size_for(size, test_scale(cfg)))
    train.split_idx, valid.split_idx = 0, 1
    return [train, valid]


class ItemLabel:
    """Label of a dataset item (DataBlock loader): its class's human name, as the scan found it
    (whatever the layout). Training only: the exported pickle carries no labeller (shipping/export.py)."""

    def __init__(self, ds: Dataset):
        names = ds.names
        self.of = {str(it.path): [names[k] for k in it.labels] if ds.multi else names[it.label] for it in ds.items}

    def __call__(self, path):
        return self.of[str(path)]


class RowLabel:
    """Label of a cache row (cached loader): its class's name, or a multi-label row's names."""

    def __init__(self, names, labels):
        self.names, self.labels = list(names), np.asarray(labels)

    def __call__(self, row):
        if self.labels.ndim == 2:
            return [self.names[k] for k in np.flatnonzero(self.labels[row])]
        return self.names[int(self.labels[row])]


def label_tfms(names, multi: bool) -> list:
    """fastai's label transforms: Categorize, or for several labels per image MultiCategorize and
    OneHotEncode (what MultiCategoryBlock does)."""
    if multi:
        return [MultiCategorize(vocab=names), OneHotEncode(len(names))]
    return [Categorize(vocab=names, sort=False)]


def label_block(ds: Dataset):
    """fastai's CategoryBlock, or MultiCategoryBlock for a multi-label set (its vocab: the labels)."""
    return MultiCategoryBlock(vocab=ds.names) if ds.multi else CategoryBlock(vocab=ds.names, sort=False)


def datablock(ds: Dataset, cfg, size: int) -> DataBlock:
    val = {it.path for it in ds.items if it.split == "val"}
    return DataBlock(
        blocks=(TransformBlock(type_tfms=SafeOpen(), batch_tfms=IntToFloatTensor), label_block(ds)),
        get_items=lambda _: [it.path for it in ds.items if it.split != "test"],  # a test split never trains
        splitter=FuncSplitter(lambda p: p in val),  # the scan's split, whatever the layout
        get_y=ItemLabel(ds),
        item_tfms=_item_resize(cfg, size),
        batch_tfms=[*batch_augs(cfg, size, cached=False), norm()],
    )


def datablock_dls(ds: Dataset, cfg, size: int, device=None):
    kw = {} if cfg.workers < 0 else {"num_workers": cfg.workers}
    if getattr(cfg, "balance", "none") == "sampler":
        train = [it for it in ds.items if it.split == "train"]
        kw.update(dl_type=WeightedDL, dl_kwargs=[{"wgts": sample_weights([it.label for it in train])}, {}])
    dls = datablock(ds, cfg, size).dataloaders(ds.root, bs=cfg.bs, device=device, **kw)
    dls.test_scale = test_scale(cfg)
    return dls


def sample_weights(labels) -> np.ndarray:
    """Each training item's draw weight for --balance sampler: 1 / its class's count, so every
    class is drawn as often (fastai's WeightedDL draws with replacement)."""
    labels = np.asarray(labels)
    counts = np.bincount(labels)
    return 1.0 / counts[labels]


def class_weights(ds: Dataset) -> list[float]:
    """--balance weights: scikit-learn's 'balanced' class weights (n / (k x count)) for the loss."""
    from sklearn.utils.class_weight import compute_class_weight

    y = np.array([it.label for it in ds.items if it.split == "train"])
    return compute_class_weight("balanced", classes=np.arange(len(ds.classes)), y=y).tolist()


class CacheStore:
    """The decoded caches a cached loader reads, one per stored size, and the one in use. Each
    training size reads the cache stored just above it (cache.stored_size), so small progressive
    sizes do not pay for shrinking big images every batch."""

    def __init__(self, caches: dict, device, resident: bool | None = None):
        import torch

        self.readers = {s: c.reader() for s, c in caches.items()}
        first = next(iter(caches.values()))
        self.paths = [str(first.root / p) for p in first.paths]  # each row's file
        self.images = {s: None for s in caches}
        need = sum(c.n * c.row_bytes for c in caches.values())
        if resident is None:
            resident = device.type == "cuda" and need < 0.6 * torch.cuda.mem_get_info(device)[0]
        if resident:  # the whole decoded set on the training device
            for s, c in caches.items():
                images = torch.empty((c.n, 3, s, s), dtype=torch.uint8, device=device)
                i = 0
                for chunk in self.readers[s].read_all():
                    images[i : i + len(chunk)] = torch.from_numpy(chunk).to(device, non_blocking=True)
                    i += len(chunk)
                self.images[s] = images
        self.size = max(caches)

    def select(self, train_size: int) -> None:
        from .cache import stored_size

        want = stored_size(train_size)
        fits = [s for s in self.readers if s >= want]
        self.size = min(fits) if fits else max(self.readers)

    @property
    def reader(self):
        return self.readers[self.size]

    def batch(self, rows):
        import torch

        images = self.images[self.size]
        if images is not None:
            return images[torch.as_tensor(rows, device=images.device)]
        return torch.from_numpy(self.reader.read(rows))


class CachedImage(Transform):
    """Cache row -> TensorImage (uint8 CHW). Only the per-item path (show, decode) uses it."""

    def __init__(self, stores: CacheStore):
        super().__init__()
        self.stores = stores

    def encodes(self, row: int):
        return TensorImage(self.stores.batch([row])[0])


class CachedDL(TfmdDL):
    """A fastai TfmdDL whose batches are gathered whole from the decoded cache."""

    def __init__(self, dataset=None, stores=None, labels=None, **kwargs):
        kwargs["num_workers"] = 0  # nothing to decode: workers would only copy memory around
        super().__init__(dataset, **kwargs)
        self.stores, self.labels = stores, labels

    @property
    def reader(self):
        return self.stores.reader

    def new(self, dataset=None, cls=None, **kwargs):
        return super().new(dataset, cls, **{"stores": self.stores, "labels": self.labels, **kwargs})

    def create_batches(self, samps):
        rows = np.asarray(self.dataset.items, dtype=np.int64)
        for chunk in chunked(samps, self.bs, self.drop_last):
            r = rows[np.asarray(chunk, dtype=np.int64)]
            x = self.stores.batch(r)
            y = self.labels[torch.as_tensor(r, device=self.labels.device)]
            yield TensorImage(x), (TensorMultiCategory(y) if y.dim() == 2 else TensorCategory(y))


class WeightedCachedDL(WeightedDL, CachedDL):
    """The cached loader drawing its training batches with fastai's WeightedDL (--balance sampler)."""


def _cached_datasets(first: Cache, stores: CacheStore, rows: list, splits=None) -> Datasets:
    """The cache's rows as a fastai Datasets; without `splits`, one validation-like set (fastai's
    test_set marks its own split_idx 1, so loaders made from it apply no training augmentation)."""
    names = first.names
    tfms = [[CachedImage(stores)], [RowLabel(names, first.labels), *label_tfms(names, first.labels.ndim == 2)]]
    return Datasets(rows, tfms=tfms, splits=splits) if splits is not None else Datasets(rows, tfms=tfms, split_idx=1)


def cached_dls(caches, cfg, size: int, device=None, resident: bool | None = None):
    """DataLoaders over the decoded caches ({stored size: Cache}, or one Cache): the training and
    validation rows (a test split is never in them)."""
    if isinstance(caches, Cache):
        caches = {caches.size: caches}
    device = torch.device(device or "cpu")
    first = caches[max(caches)]
    assert all(c.paths == first.paths for c in caches.values()), "caches of one dataset must align"
    stores = CacheStore(caches, device, resident)
    stores.select(size)
    labels = torch.as_tensor(first.labels, device=device)
    train, val = np.flatnonzero(first.splits == 0).tolist(), np.flatnonzero(first.splits == 1).tolist()
    dsets = _cached_datasets(first, stores, train + val, [list(range(len(train))), list(range(len(train), len(train) + len(val)))])
    kw = {"dl_type": CachedDL}
    if getattr(cfg, "balance", "none") == "sampler":
        kw = {"dl_type": WeightedCachedDL, "dl_kwargs": [{"wgts": sample_weights(first.labels[train])}, {}]}
    dls = dsets.dataloaders(
        bs=cfg.bs, device=device, stores=stores, labels=labels, **kw,
        after_batch=[IntToFloatTensor(), ResizeBatch(test_size_for(size, test_scale(cfg))),
                     *map(train_only, batch_augs(cfg, size, cached=True)), norm_in_place()],
    )
    dls.cache, dls.test_scale = first, test_scale(cfg)
    return dls


class TrainOnlyAffine(AffineCoordTfm):
    """fastai's merged affine, left out of validation batches. fastai runs it on every split, where
    its matrix is the identity and it only resamples the batch to the training size: that would undo
    ResizeBatch's test size (and cost a grid_sample a batch). Training, and TTA's augmented passes
    (split 0), get fastai's affine unchanged."""

    def before_call(self, b, split_idx):
        super().before_call(b, split_idx)
        self.do = split_idx != 1


def train_only(t):
    """aug_transforms' merged affine (a Flip, Zoom... carrying all of them) as a TrainOnlyAffine."""
    if not isinstance(t, AffineCoordTfm):
        return t
    return TrainOnlyAffine(aff_fs=t.aff_fs, coord_fs=t.coord_fs, size=t.size, mode=t.mode, pad_mode=t.pad_mode,
                           mode_mask=t.mode_mask, align_corners=t.align_corners)


def split_dl(dls, ds: Dataset, split: str):
    """An unshuffled loader over one split's images with the validation transforms: for scoring a
    test split, or the training images without augmentation (review --train)."""
    cache = getattr(dls, "cache", None)
    if cache is not None:
        code = {"train": 0, "val": 1, "test": 2}[split]
        rows = np.flatnonzero(cache.splits == code).tolist()
        return dls.valid.new(_cached_datasets(cache, unwrap_dl(dls.valid).stores, rows), shuffle=False, drop_last=False)
    return dls.test_dl([it.path for it in ds.items if it.split == split], with_labels=True)


def set_size(dls, size: int, test: int | None = None) -> None:
    """Progressive resizing: every training transform to `size`, every validation-only one to the
    test size for it (`test`, or dls.test_scale's), and the cached loader to the cache stored for `size`
    (which has room for that test size). Under DDP the loaders are fastai's DistributedDL
    wrappers, whose batches go through the inner loader's transforms."""
    test = test or test_size_for(size, getattr(dls, "test_scale", 1.0))
    for dl in map(unwrap_dl, dls.loaders):
        if getattr(dl, "stores", None) is not None:
            dl.stores.select(size)
        for pipe in (getattr(dl, "after_item", None), getattr(dl, "after_batch", None)):
            for t in getattr(pipe, "fs", []):
                if isinstance(t, ResizeBatch):  # validation only (cached loader)
                    t.size = test
                elif isinstance(t, Resize) and t.split_idx == 1:  # validation only (DataBlock loader)
                    t.size = (test, test)
                elif isinstance(t, (AffineCoordTfm, Resize, RandomResizedCrop)) and t.size is not None:
                    t.size = (size, size)


def item_paths(dl, n: int | None = None) -> list[str]:
    """The file of each of a loader's items, in order (DataBlock: the paths; cached: its rows' files).
    `n`: how many predictions came back; when the DataBlock loader skipped files that went bad, they
    are taken out (from its skip log), so each path stays paired with its own prediction."""
    stores = getattr(dl, "stores", None)
    if stores is not None:
        return [stores.paths[int(r)] for r in dl.items]
    paths = [str(p) for p in dl.items]
    if n is not None and n < len(paths) and (so := _safe_open(dl)) is not None:
        gone = {p for p, _ in so.read()}
        paths = [p for p in paths if p not in gone]
    if n is not None and len(paths) != n:
        raise RuntimeError(f"{len(paths)} files for {n} predictions: cannot pair them")
    return paths


def make_dls(cfg: TrainConfig, size: int, device, progress=None, log=print, ds=None):
    """(dataset, DataLoaders) for cfg.loader (`ds`: cfg.data already scanned); the cached loader
    builds its cache on first use."""

    ds = ds or dist.rank0_first(lambda: scan_for(cfg, progress=progress))
    if dist.is_rank0() and ds.layout:
        log(ds.layout.summary())  # said by every command that reads a dataset, before its cache
    dls = datablock_dls(ds, cfg, size, device) if cfg.loader == "datablock" else _cached(ds, cfg, size, device,
                                                                                         progress, log)
    if getattr(cfg, "balance", "none") != "none" and ds.multi:
        raise UsageError(f"--balance {cfg.balance} is not defined for multi-label data yet (a weight or a draw per "
                         "class has no single class to follow here); train without it")
    if getattr(cfg, "balance", "none") == "weights":
        dls.class_weights = class_weights(ds)
    dls.multi = ds.multi
    return ds, dls


def _cached(ds: Dataset, cfg, size: int, device, progress, log):
    from .cache import open_or_build_all, stored_size

    sizes = [stored_size(s) for s in cfg.sizes()]
    resize = getattr(cfg, "resize", "crop")
    caches = dist.rank0_first(lambda: open_or_build_all(ds, sizes, progress=progress, log=log, resize=resize))
    found = [s for s in next(iter(caches.values())).skipped if s[0] not in dict(ds.skipped)]
    ds.skipped.extend(found)  # files whose header read but whose pixels do not decode
    bad = {p for p, _ in found}
    ds.items = [it for it in ds.items if str(it.path) not in bad]
    return cached_dls(caches, cfg, size, device)

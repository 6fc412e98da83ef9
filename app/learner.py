"""Building a fastai Learner, the one way every command does it: DataLoaders for a config (the
cached loader or the stock DataBlock), the model with its weights and the training callbacks
the config asks for, and `load_run`, which turns a finished run back into a Learner for
evaluate, export and review."""

from __future__ import annotations

from pathlib import Path

import torch
from fastcore.basics import noop

from . import distributed as dist
from .callbacks import GradientClipWhenOver, ModelInputs
from .dataset import scan
from .device import bf16_ok, pick_device
from .errors import DataError
from .model import Weights, build_learner, quiet, resolve_weights
from .runs import checkpoint_path, load_config
from .settings import TrainConfig, show_progress


def make_dls(cfg: TrainConfig, size: int, device, progress=None, log=print, ds=None):
    """(dataset, DataLoaders) for cfg.loader (`ds`: cfg.data already scanned); the cached loader
    builds its cache on first use."""
    from .cache import open_or_build_all, stored_size
    from .loaders import cached_dls, datablock_dls

    ds = ds or dist.rank0_first(lambda: scan(cfg.data, progress=progress))
    if cfg.loader == "datablock":
        return ds, datablock_dls(ds, cfg, size, device)
    sizes = [stored_size(s) for s in cfg.sizes()]
    caches = dist.rank0_first(lambda: open_or_build_all(ds, sizes, progress=progress, log=log))
    ds.skipped.extend(next(iter(caches.values())).skipped)
    return ds, cached_dls(caches, cfg, size, device)


def build(cfg: TrainConfig, dls, run: Path | None, device, log=print, weights: Weights | None = None, cbs=()):
    """The Learner a command trains or scores: model and weights, loss, metrics, and the callbacks
    and precision the config asks for. Progress bars only on rank 0 of an interactive run."""
    weights = weights or resolve_weights(cfg.weights)
    learn = build_learner(dls, weights, cfg.label_smoothing, wd=cfg.wd, path=run or ".", cbs=list(cbs), log=log,
                          head_dropout=cfg.head_dropout, body_layers=cfg.body_layers)
    if not show_progress() or not dist.is_rank0():
        quiet(learn)
        learn.logger = noop  # fastai prints each epoch's row; ours are logged by HistoryCSV
    learn.add_cb(ModelInputs(cfg.channels_last))
    if cfg.mixup > 0:
        from fastai.callback.mixup import MixUp

        learn.add_cb(MixUp(cfg.mixup))
    if cfg.clip > 0:
        learn.add_cb(GradientClipWhenOver(cfg.clip))
    if device.type == "cuda":
        learn.to_bf16() if bf16_ok(device) else learn.to_fp16()
    if cfg.compile:
        learn.model.compile()  # in place: indexing (fastai's splitter), state-dict keys and hooks unchanged
    return learn


def load_run(run: str | Path, which: str = "last", loader: str | None = None, size: int | None = None,
             device=None, data: str | None = None, log=print):
    """(learn, cfg, ds) for a finished run: same data, classes, loader and size; weights loaded."""
    run = Path(run)
    cfg, meta = load_config(run)
    ckpt = checkpoint_path(run, which)
    data = data or cfg.data
    if not Path(data).is_dir():
        raise DataError(f"the run's data folder is gone: {data} (moved? pass --data NEW_PATH)")
    cfg = cfg.replace(data=data, loader=loader or cfg.loader, size=size or cfg.size, compile=False)
    device = pick_device(device or cfg.device, log=log)
    ds, dls = make_dls(cfg, cfg.size, device, log=log)
    if list(dls.vocab) != meta.get("classes", list(dls.vocab)):
        raise DataError(f"classes in {data} differ from the run's: {meta.get('classes')}")
    learn = build(cfg, dls, run, device, log=lambda *_: None, weights=Weights("none"))
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    learn.model.load_state_dict(state["model"])
    learn.cur_size = cfg.size
    return learn, cfg, ds

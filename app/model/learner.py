"""Building a fastai Learner, the one way every command does it: DataLoaders for a config (the
cached loader or the stock DataBlock), the model with its weights and the training callbacks
the config asks for, and `load_run`, which turns a finished run back into a Learner for
evaluate, export and review."""

from __future__ import annotations

from pathlib import Path

from fastcore.basics import noop

from ..core import ranks as dist
from ..core.config import TrainConfig
from ..core.device import pick_device, resolve_precision
from ..core.errors import DataError
from ..core.progress import shown
from ..core.rundir import checkpoint_path, load_config
from ..data.layout import follow_moved
from ..data.loaders import make_dls
from .callbacks import CpuBf16, GradientClipWhenOver, ModelInputs
from .progress import RichProgress
from .weights import Weights, keep_body_layers, load_bundle, load_torchvision_body, resolve_weights, torch_load


def make_loss(label_smoothing: float, weight=None, multi: bool = False):
    """fastai's cross-entropy (label-smoothed when asked); `weight`: per-class weights (--balance
    weights), a tensor on the training device. Several labels per image: fastai's
    BCEWithLogitsLossFlat (a sigmoid per label; its `thresh` decides which labels `predict` returns)."""
    from fastai.losses import BCEWithLogitsLossFlat, CrossEntropyLossFlat, LabelSmoothingCrossEntropyFlat

    if multi:
        return BCEWithLogitsLossFlat()
    if label_smoothing > 0:
        return LabelSmoothingCrossEntropyFlat(eps=label_smoothing, weight=weight)
    return CrossEntropyLossFlat(weight=weight)


def build_learner(dls, weights: Weights | str = "none", label_smoothing: float = 0.0, wd=None, path=".",
                  cbs=None, metrics=None, log=print, head_dropout: float = 0.5, body_layers: int = 0):
    """vision_learner(dls, alexnet) with the resolved weights; never silently random. A pretrained
    body starts frozen, as fastai's pretrained=True does; `body_layers` > 0 keeps only its first
    convolutions."""
    import fastai.callback.all  # noqa: F401  (adds fit_one_cycle, fine_tune, lr_find, to_fp16)
    from fastai.vision.learner import vision_learner
    from torchvision.models import alexnet

    w = weights if isinstance(weights, Weights) else resolve_weights(weights)
    multi = getattr(dls, "multi", False)
    learn = vision_learner(
        dls, alexnet, pretrained=False, loss_func=make_loss(label_smoothing, multi=multi),
        metrics=metrics or default_metrics(multi), path=path, model_dir="models", cbs=cbs, wd=wd, ps=head_dropout,
    )
    if w.kind == "none":
        log("weights: random init")
        return learn
    if w.kind == "bundle":
        log(f"weights: bundle {w.path} ({load_bundle(learn.model, w.path, list(dls.vocab))})")
    else:
        n = load_torchvision_body(learn.model, w.path)
        log(f"weights: {'ImageNet ' if w.kind == 'imagenet' else ''}{w.path} ({n} body tensors)")
    if body_layers and (reset := keep_body_layers(learn.model, body_layers)):
        log(f"body: the first {body_layers} convolution(s) kept, the other {reset} re-initialised (--body-layers)")
    learn.freeze()
    return learn


def default_metrics(multi: bool) -> list:
    """accuracy and macro F1; for several labels per image fastai's accuracy_multi and F1ScoreMulti
    (each label above 0.5, until the per-label thresholds are chosen after training)."""
    from fastai.metrics import F1Score, F1ScoreMulti, accuracy, accuracy_multi

    return [accuracy_multi, F1ScoreMulti(average="macro")] if multi else [accuracy, F1Score(average="macro")]


def quiet(learn):
    """No fastprogress bar and no fastai epoch table: progress is drawn by RichProgress (on a
    terminal) and each epoch's line is written by the training logs (issue 24)."""
    from fastai.callback.progress import ProgressCallback

    learn.remove_cb(ProgressCallback)
    learn.logger = noop
    return learn


def build(cfg: TrainConfig, dls, run: Path | None, device, log=print, weights: Weights | None = None, cbs=(),
          progress=None):
    """The Learner a command trains or scores: model and weights, loss, metrics, and the callbacks
    and precision the config asks for. A rich bar (RichProgress) only on rank 0, on a terminal."""
    weights = weights or resolve_weights(cfg.weights)
    learn = build_learner(dls, weights, cfg.label_smoothing, wd=cfg.wd, path=run or ".", cbs=list(cbs), log=log,
                          head_dropout=cfg.head_dropout, body_layers=cfg.body_layers)
    if cfg.balance == "weights" and getattr(dls, "class_weights", None) is not None:
        import torch

        learn.loss_func = make_loss(cfg.label_smoothing, torch.tensor(dls.class_weights, device=device))
    quiet(learn)
    if shown(progress) and dist.is_rank0():
        learn.add_cb(RichProgress(progress))
    learn.add_cb(ModelInputs(cfg.channels_last))
    if cfg.mixup > 0:
        from fastai.callback.mixup import MixUp

        learn.add_cb(MixUp(cfg.mixup))
    if cfg.clip > 0:
        learn.add_cb(GradientClipWhenOver(cfg.clip))
    precision = resolve_precision(cfg.precision, device)
    if precision == "bf16":
        learn.to_bf16() if device.type == "cuda" else learn.add_cb(CpuBf16())
    elif precision == "fp16":
        learn.to_fp16()
    if cfg.compile:
        learn.model.compile()  # in place: indexing (fastai's splitter), state-dict keys and hooks unchanged
    return learn


def load_run(run: str | Path, which: str = "last", loader: str | None = None, size: int | None = None,
             device=None, data: str | None = None, log=print, progress=None, labels: str | None = None):
    """(learn, cfg, ds) for a finished run: same data, classes, loader and size; weights loaded
    (`data`, `labels`: where the run's dataset and labels file are now, if they moved)."""
    run = Path(run)
    cfg, meta = load_config(run)
    ckpt = checkpoint_path(run, which)
    cfg = follow_moved(cfg, data, labels)
    if not Path(cfg.data).is_dir():
        raise DataError(f"the run's data folder is gone: {cfg.data} (moved? pass --data NEW_PATH)")
    cfg = cfg.replace(loader=loader or cfg.loader, size=size or cfg.size, compile=False)
    device = pick_device(device or cfg.device, log=log)
    ds, dls = make_dls(cfg, cfg.size, device, log=log, progress=progress)
    if list(dls.vocab) != meta.get("classes", list(dls.vocab)):
        raise DataError(f"classes in {cfg.data} differ from the run's: {meta.get('classes')}")
    learn = build(cfg, dls, run, device, log=lambda *_: None, weights=Weights("none"), progress=progress)
    state = torch_load(ckpt)
    learn.model.load_state_dict(state["model"])
    learn.cur_size = cfg.size
    return learn, cfg, ds

"""--time MINUTES: the epochs that fit a wall-clock budget on this machine.

Machines that look alike differ 4x in speed, so a fixed epoch count cannot keep a time promise.
Before fitting, `measure` times this machine on the run's own model and loader at every image
size of the schedule (training, training with the body frozen where fine-tune freezes it, and
validation), a checkpoint write, over a few batches; `plan` (pure) then picks the most epochs whose
predicted time (training, the validated epochs, checkpoints, evaluation, figures, report and
export) fits what is left of the budget. Only the epoch count changes: the lr, the progressive
fractions and the augmentation are the preset's, and the one-cycle schedule is laid over the
planned epochs.
"""

from __future__ import annotations

import copy
import itertools
import time
from dataclasses import asdict, dataclass

import torch

from ..core.config import TrainConfig
from ..core.errors import UsageError
from .epochs import frozen_epochs, sizes_per_epoch, total_epochs, validates

MARGIN = 0.03  # of the budget, kept back for noise


FINISH_FIXED_S = 20.0  # figures, report, export after training: a 2-core CPU measured 12-18 s (see README)


@dataclass
class Speeds:
    """This machine, measured: img/s per image size."""

    train: dict[int, float]
    frozen: dict[int, float]
    valid: dict[int, float]
    checkpoint_s: float = 0.0


@dataclass
class Plan:
    epochs: int
    predicted_s: float  # the whole command, from process start
    predicted_fit_s: float
    budget_s: float
    elapsed_s: float  # spent before fitting (imports, scan, cache, model, this measurement)
    preset_epochs: int
    speeds: dict
    summary: str

    def to_dict(self) -> dict:
        return asdict(self)


def epochs_cost(cfg: TrainConfig, speeds: Speeds, n_train: int, n_val: int) -> tuple[float, float]:
    """(fit seconds, after-fit seconds) predicted for `cfg` as it stands."""
    total, n_frozen = total_epochs(cfg), frozen_epochs(cfg)
    fit = 0.0
    for e, size in enumerate(sizes_per_epoch(cfg)):
        rate = speeds.frozen.get(size) if e < n_frozen else None
        fit += n_train / (rate or speeds.train[size]) + speeds.checkpoint_s
        if validates(cfg, e, total):
            fit += n_val / speeds.valid[size]
    after = FINISH_FIXED_S + n_val / speeds.valid[cfg.size]  # figures and export read the model once more
    return fit, after


def plan(cfg: TrainConfig, speeds: Speeds, n_train: int, n_val: int, budget_s: float, elapsed_s: float) -> Plan:
    """The most epochs (the unfrozen ones for fine-tune) that fit: between a minimal run and
    `max_epochs` (3 x the preset's). UsageError naming what would fit when not even the minimum does."""
    preset_epochs = cfg.epochs
    lo, hi = 1 if cfg.command == "fine-tune" else 2, cfg.max_epochs or 3 * preset_epochs
    left = budget_s * (1 - MARGIN) - elapsed_s
    best = None
    for e in range(lo, hi + 1):
        fit, after = epochs_cost(cfg.replace(epochs=e), speeds, n_train, n_val)
        if fit + after > left:
            break
        best = (e, fit, after)
    if best is None:
        fit, after = epochs_cost(cfg.replace(epochs=lo), speeds, n_train, n_val)
        need = (elapsed_s + fit + after) / (1 - MARGIN) / 60
        raise UsageError(f"--time {budget_s / 60:g} cannot hold a useful run on this machine "
                         f"({describe_speeds(speeds)}): the minimal run ({lo} epoch(s)"
                         f"{' after the frozen one' if cfg.command == 'fine-tune' else ''}) needs about "
                         f"{need:.1f} min; pass --time {need:.0f} or more, or a smaller --size")
    e, fit, after = best
    summary = (f"this machine: {describe_speeds(speeds)} -> {e} epoch(s) fit in {budget_s / 60:g} min "
               f"(predicted {(elapsed_s + fit + after) / 60:.1f} min)")
    if e < preset_epochs:
        summary += f"; fewer than the preset's {preset_epochs}: this machine is slower than the recipe assumes"
    return Plan(e, round(elapsed_s + fit + after, 1), round(fit, 1), budget_s, round(elapsed_s, 1), preset_epochs,
                asdict(speeds), summary)


def describe_speeds(s: Speeds) -> str:
    parts = [f"{s.train[size]:.0f} img/s at {size} px" if i == 0 else f"{s.train[size]:.0f} at {size}"
             for i, size in enumerate(sorted(s.train))]
    return ", ".join(parts) + " (training)"


def measure(learn, cfg: TrainConfig, device, ckpt_dir, min_s: float = 2.0) -> Speeds:
    """img/s of this Learner's own model, loss, precision and loaders at every size the run uses
    (on a copy of the model: the run's weights, optimizer and random state are left as they were)."""
    from ..data.loaders import set_size
    from .state import rng_state, set_rng_state

    state = rng_state(learn.dls, device)
    sizes = sorted(set(sizes_per_epoch(cfg)))
    frozen_sizes = sorted(set(sizes_per_epoch(cfg)[: frozen_epochs(cfg)]))
    model = copy.deepcopy(learn.model).to(device)
    if cfg.channels_last:  # as ModelInputs will set it when the fit starts
        model = model.to(memory_format=torch.channels_last)
    speeds = Speeds({}, {}, {})
    try:
        for size in sizes:
            set_size(learn.dls, size)
            speeds.train[size] = _train_rate(learn, model, device, freeze=False, min_s=min_s)
            if size in frozen_sizes:
                speeds.frozen[size] = _train_rate(learn, model, device, freeze=True, min_s=min_s)
            speeds.valid[size] = _valid_rate(learn, model, device, min_s=min_s / 2)
        speeds.checkpoint_s = _checkpoint_time(model, ckpt_dir)
    finally:
        set_size(learn.dls, sizes[0])
        set_rng_state(state, learn.dls, device)
    return speeds


def _batches(dl, min_s: float, step, warmup: int = 2, max_batches: int = 12) -> float:
    """img/s of `step` over the loader's batches (loading included): `warmup` batches (kernel
    selection, allocations), then at least three timed ones and `min_s` seconds, going round the
    loader again when a small dataset has fewer batches than that."""
    from ..core.device import sync

    n, t0 = 0, None
    rounds = itertools.chain.from_iterable(iter(dl) for _ in range(max_batches + warmup))
    for i, (xb, yb) in enumerate(rounds):
        step(xb, yb)
        if i < warmup:
            continue
        if t0 is None:
            sync(xb.device)
            t0 = time.perf_counter()
            continue
        n += len(yb)
        if i >= warmup + 3 and (time.perf_counter() - t0 >= min_s or i >= max_batches):
            break
    if not n:
        raise UsageError("--time: the dataset holds no full batch to time; lower --bs")
    sync(xb.device)
    return n / (time.perf_counter() - t0)


def _inputs(xb, device):
    return xb.as_subclass(torch.Tensor).contiguous(memory_format=torch.channels_last)


def _train_rate(learn, model, device, freeze: bool, min_s: float) -> float:
    body = list(model[0].parameters())
    for p in body:
        p.requires_grad_(not freeze)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = learn.opt_func(params, lr=1e-12)
    model.train()

    def step(xb, yb):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = learn.loss_func(model(_inputs(xb, device)), yb)
        loss.backward()
        opt.step()
        opt.zero_grad()

    rate = _batches(learn.dls.train, min_s, step)
    for p in body:
        p.requires_grad_(True)
    return rate


def _valid_rate(learn, model, device, min_s: float) -> float:
    model.eval()

    def step(xb, yb):
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            model(_inputs(xb, device))

    return _batches(learn.dls.valid, min_s, step)


def _checkpoint_time(model, ckpt_dir) -> float:
    """One epoch-end checkpoint's write (model and Adam's two moments), timed on the run's disk."""
    from .state import atomic_save

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    obj = {"model": state, "opt": [{k: v.clone() for k, v in state.items()} for _ in range(2)]}  # Adam's moments
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / "time-probe.pth"
    t = time.perf_counter()
    atomic_save(obj, path)
    took = time.perf_counter() - t
    path.unlink()
    return took

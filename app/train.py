"""Training: lr-find, fit-one-cycle and fine-tune on fastai's Learner, into a run directory.

Phases are fastai's own calls: fit_one_cycle for a whole model; fine_tune's two phases (freeze,
fit_one_cycle; unfreeze, fit_one_cycle with discriminative lrs), run phase by phase with
fit_one_cycle(start_epoch=...) so a killed run resumes at its last finished epoch with the same
schedule. Everything a run produces is written by callbacks into the run directory.
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import torch

from . import distributed as dist
from .callbacks import (
    BatchLog,
    Checkpoint,
    FinalPreds,
    GradientClipWhenOver,
    HistoryCSV,
    ModelInputs,
    ProgressiveResize,
    RestoreSmoothLoss,
    ValidEvery,
    load_opt_state,
    set_rng_state,
)
from .data import resolve_data, scan, write_skipped
from .errors import AppError, RunError
from .runs import (
    device_info,
    is_rank0,
    load_config,
    new_run_dir,
    read_json,
    save_config,
    update_config,
    versions,
    write_json,
)
from .settings import TrainConfig, check_size


def pick_device(device: str = "auto") -> torch.device:
    if device in ("auto", "", None):
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    d = torch.device(device)
    if d.type == "cuda" and not torch.cuda.is_available():
        raise AppError("--device cuda asked for, but no CUDA GPU is available", code=2)
    return d


def make_dls(cfg: TrainConfig, size: int, device, progress=None, log=print):
    """(dataset, DataLoaders) for cfg.loader; the fast loader builds its cache on first use."""
    from .cache import open_or_build_all, stored_size
    from .loaders import datablock_dls, fast_dls

    ds = dist.rank0_first(lambda: scan(cfg.data, progress=progress))
    if cfg.loader == "fast":
        sizes = [cfg.cache_size] if cfg.cache_size else [stored_size(s) for _, s in cfg.schedule(1000)]
        caches = dist.rank0_first(lambda: open_or_build_all(ds, sizes, progress=progress, log=log))
        ds.skipped.extend(next(iter(caches.values())).skipped)
        return ds, fast_dls(caches, cfg, size, device)
    if cfg.loader == "fastai":
        return ds, datablock_dls(ds, cfg, size, device)
    raise AppError(f"unknown --loader {cfg.loader!r} (choose fast or fastai)", code=2)


def _logger(run: Path | None, console=None):
    log = logging.getLogger(f"app.run.{run}")
    log.setLevel(logging.INFO)
    log.propagate = False
    if run is not None and is_rank0() and not log.handlers:
        h = logging.FileHandler(run / "train.log")
        h.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        log.addHandler(h)

    def emit(msg: str, echo: bool = True):
        log.info(msg)
        if echo and is_rank0():
            console.print(msg, markup=False) if console else print(msg)  # paths may hold [brackets]

    return emit


def interactive() -> bool:
    """fastprogress bars only on a terminal; elsewhere (CI, logs, pipes) one line per epoch."""
    return sys.stdout.isatty() and os.environ.get("APP_PROGRESS") != "0"


def lr_from_run(run: str | Path) -> float:
    """The learning rate a run's lr-find recommends (see `recommended` in lr_find.json)."""
    f = Path(run) / "lr_find.json"
    if not f.is_file():
        raise RunError(f"{run} has no lr_find.json (run `python -m app lr-find` first)")
    return float(read_json(f)["recommended"])


def _noop(*_a, **_k):
    return None


def _setup(cfg: TrainConfig, run: Path | None, console, progress=None):
    from fastai.torch_core import set_seed

    check_size(cfg.size)
    sched = cfg.schedule(max(1, total_epochs(cfg)))
    for _, s in sched:
        check_size(s)
    device = pick_device(cfg.device)
    set_seed(cfg.seed, reproducible=True)
    log = _logger(run, console)
    ds, dls = make_dls(cfg, sched[0][1], device, progress=progress, log=log)
    if run is not None and is_rank0():
        write_skipped(ds.skipped, run / "skipped.csv")
        if ds.skipped:
            log(f"skipped {len(ds.skipped)} unreadable file(s), listed in {run / 'skipped.csv'}")
    return device, log, ds, dls


def _learner(cfg, dls, run, device, log, cbs=()):
    from .model import build_learner

    learn = build_learner(dls, cfg.weights, cfg.label_smoothing, wd=cfg.wd, path=run, cbs=list(cbs), log=log,
                          ps=cfg.ps)
    if not interactive() or not is_rank0():
        from fastai.callback.progress import ProgressCallback

        learn.remove_cb(ProgressCallback)
        learn.logger = _noop
    learn.add_cb(ModelInputs(cfg.channels_last))
    if cfg.mixup > 0:
        from fastai.callback.mixup import MixUp

        learn.add_cb(MixUp(cfg.mixup))
    if cfg.clip > 0:
        learn.add_cb(GradientClipWhenOver(cfg.clip))
    if device.type == "cuda":
        learn.to_bf16() if torch.cuda.is_bf16_supported() else learn.to_fp16()
    if cfg.compile:
        learn.model = torch.compile(learn.model)
    return learn


# ------------------------------------------------------------------ lr-find


def lr_find(cfg: TrainConfig, out: str | None = None, console=None, progress=None) -> Path:
    """fastai lr_find; saves its four suggestions, the recommended lr, the curve and its plot."""
    from fastai.callback.schedule import minimum, slide, steep, valley

    cfg = cfg.replace(command="lr-find", data=str(resolve_data(cfg.data)))
    dist.init(pick_device(cfg.device))
    run = dist.broadcast_path(new_run_dir("lr-find", out) if is_rank0() else None)
    device, log, ds, dls = _setup(cfg, run, console, progress)
    if is_rank0():
        save_config(run, cfg, versions=versions(), device=device_info(device), classes=list(dls.vocab),
                    synsets=ds.classes, data_fingerprint=ds.fingerprint(), status="running")
    learn = _learner(cfg, dls, run, device, log)
    with dist.distributed(learn, device):
        res = learn.lr_find(suggest_funcs=(valley, slide, minimum, steep), show_plot=False)
    if not is_rank0():
        dist.barrier()
        return run
    sug = {k: float(v) for k, v in res._asdict().items()}
    rec = recommend_lr(sug)
    rows = {"lrs": [float(x) for x in learn.recorder.lrs], "losses": [float(x) for x in learn.recorder.losses]}
    write_json(run / "lr_find.json", {"suggestions": sug, "recommended": rec, "rule": LR_RULE, **rows})
    from .figures import FIGURES, plot_lr_find

    plot_lr_find(run / "lr_find.json", run / "figures" / FIGURES["lr_find"])
    update_config(run, status="finished")
    log("lr_find suggestions: " + ", ".join(f"{k} {v:.2e}" for k, v in sug.items()))
    log(f"recommended lr: {rec:.2e} ({LR_RULE}); use it with --lr-from {run}")
    dist.barrier()
    return run


LR_RULE = "max(valley, minimum / 4): fastai's valley, raised to a quarter of its 'minimum' suggestion"


def recommend_lr(sug: dict) -> float:
    """fastai's valley, but never below minimum/4 (= lr at the loss minimum / 40).

    On this data from random init (CPU, bs 64, 96 px) valley was 1.0e-3 and trained well, while
    2.5e-3 and more (slide, minimum) left AlexNet stuck at chance; on a GPU run valley came out at
    1.9e-4, too low to train from scratch. See benchmarks/accuracy.md.
    """
    return float(max(sug["valley"], sug["minimum"] / 4))


# ------------------------------------------------------------------ training


def phases(cfg: TrainConfig) -> list[dict]:
    """The fit_one_cycle calls a command makes, with global epoch offsets."""
    if cfg.command == "fine-tune":
        base = cfg.lr
        return [
            dict(name="frozen", offset=0, epochs=cfg.freeze_epochs, lr=slice(base), pct_start=0.99,
                 freeze=True),
            dict(name="unfrozen", offset=cfg.freeze_epochs, epochs=cfg.epochs,
                 lr=slice(base / 2 / 100, base / 2), pct_start=cfg.pct_start, div=5.0, freeze=False),
        ]
    return [dict(name="one-cycle", offset=0, epochs=cfg.epochs, lr=cfg.lr, pct_start=cfg.pct_start,
                 freeze=False)]


def total_epochs(cfg: TrainConfig) -> int:
    return sum(p["epochs"] for p in phases(cfg))


def train(cfg: TrainConfig, out: str | None = None, console=None, progress=None, resume: str | None = None,
          after=None) -> Path:
    """Run (or resume) a training command; returns its run directory.

    `after(learn, run)` runs once training has finished (evaluation, figures, report).
    """
    start_epoch, ckpt = 0, None
    if resume:
        dist.init(pick_device(load_config(resume)[0].device))
        run = Path(resume)
        cfg, meta = load_config(run)
        last = run / "models" / "last.pth"
        if last.is_file():
            ckpt = torch.load(last, map_location="cpu", weights_only=True)
            start_epoch = ckpt["epoch"] + 1
    else:
        cfg = cfg.replace(data=str(resolve_data(cfg.data)))
        if cfg.lr_from:
            cfg = cfg.replace(lr=lr_from_run(cfg.lr_from))
        dist.init(pick_device(cfg.device))
        run = new_run_dir(cfg.command, out) if is_rank0() else None
        run = dist.broadcast_path(run)
        if cfg.lr_from and is_rank0():  # the lr-find plot belongs with the run it set up
            shutil.copy(Path(cfg.lr_from) / "lr_find.json", run / "lr_find.json")

    device, log, ds, dls = _setup(cfg, run, console, progress)
    if not resume and is_rank0():
        save_config(run, cfg, versions=versions(), device=device_info(device), seed=cfg.seed,
                    classes=list(dls.vocab), synsets=ds.classes, data_fingerprint=ds.fingerprint(),
                    status="running", world_size=int(os.environ.get("WORLD_SIZE", "1") or 1))
    elif resume:
        log(f"resuming {run} at epoch {start_epoch} of {total_epochs(cfg)}")
        _truncate_logs(run, start_epoch)
    learn = _learner(cfg, dls, run, device, log)
    if ckpt is not None:
        learn.model.load_state_dict(ckpt["model"])
        learn.samples_seen = ckpt.get("samples_seen", 0)

    t0 = time.time()
    try:
        for ph in phases(cfg):
            end = ph["offset"] + ph["epochs"]
            if start_epoch >= end or ph["epochs"] == 0:
                continue
            _fit_phase(learn, cfg, ph, run, start_epoch, ckpt, log)
            ckpt = None  # optimizer state belongs to the phase that saved it
    except KeyboardInterrupt:
        if is_rank0():
            update_config(run, status="interrupted")
        raise AppError(
            f"interrupted; the last finished epoch is saved. Resume with: python -m app {cfg.command} --resume {run}",
            code=130,
        ) from None
    fit_s = time.time() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if is_rank0():
        update_config(run, status="finished", fit_seconds=round(fit_s, 1), peak_rss_mb=round(peak))
    log(f"training finished in {fit_s:.0f}s (peak host memory {peak:.0f} MB)")
    if after is not None and is_rank0():  # evaluation on the whole validation set, in one process
        with dist.this_process_only():
            after(learn, run)
    dist.barrier()
    return run


def _fit_phase(learn, cfg, ph, run, start_epoch, ckpt, log):
    off = ph["offset"]
    cbs = [
        ProgressiveResize(cfg.schedule(total_epochs(cfg)), off, log=log),
        HistoryCSV(run / "history.csv", off, ph["name"], log=lambda m: log(m, echo=not interactive())),
        BatchLog(run / "batches.csv", off),
        Checkpoint(run / "models", off, ph["name"], best=(ckpt or {}).get("best")),
    ]
    if cfg.valid_every > 1:
        cbs.append(ValidEvery(cfg.valid_every, cfg.schedule(total_epochs(cfg)), total_epochs(cfg), off))
    if ph["name"] == phases(cfg)[-1]["name"]:
        if dist.world_size() == 1:
            cbs.append(FinalPreds())
    learn.freeze() if ph["freeze"] else learn.unfreeze()
    skip = max(0, start_epoch - off)
    if ckpt is not None:  # fastai keeps one optimizer across fine_tune's phases; so do we
        learn.create_opt()
        load_opt_state(learn.opt, ckpt["opt"])
        set_rng_state(ckpt["rng"], learn.dls)
        if skip > 0 and "smooth_loss" in ckpt:  # mid-phase; a new phase starts afresh, as fastai does
            cbs.append(RestoreSmoothLoss(ckpt["smooth_loss"]))
    kw = {k: ph[k] for k in ("pct_start", "div") if k in ph}
    log(f"{ph['name']}: fit_one_cycle({ph['epochs']} epochs, lr={ph['lr']}) from epoch {off + skip}")
    with dist.distributed(learn, learn.dls.device or torch.device("cpu")):
        learn.fit_one_cycle(ph["epochs"], ph["lr"], wd=cfg.wd, cbs=cbs, start_epoch=skip, **kw)


def _truncate_logs(run: Path, start_epoch: int) -> None:
    """Drop rows of epochs that will run again (a kill between the CSV row and the checkpoint)."""
    for name in ("history.csv", "batches.csv"):
        f = run / name
        if not f.is_file():
            continue
        lines = f.read_text().splitlines(keepends=True)
        keep = lines[:1] + [ln for ln in lines[1:] if ln.split(",", 1)[0].isdigit() and int(ln.split(",", 1)[0]) < start_epoch]
        tmp = f.with_name(f.name + ".tmp")
        tmp.write_text("".join(keep))
        os.replace(tmp, f)


def ensure_finished_epochs(run: Path) -> int:
    h = run / "history.csv"
    if not h.is_file():
        return 0
    return max(0, len(h.read_text().splitlines()) - 1)



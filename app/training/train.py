"""Training: fit-one-cycle, fine-tune and the main job, on fastai's Learner, into a run directory.

Phases are fastai's own calls: fit_one_cycle for a whole model; fine_tune's two phases (freeze,
fit_one_cycle; unfreeze, fit_one_cycle with discriminative lrs), run phase by phase with
fit_one_cycle(start_epoch=...) so a killed run resumes at its last finished epoch with the same
schedule. The per-epoch files (history, batches, checkpoints) are written by callbacks; config.json,
the log and the end-of-run files by this module and after_fit.py.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch

from ..core import ranks as dist
from ..core.config import TrainConfig
from ..core.errors import Interrupted, UsageError
from ..core.host import Phases, rss_mb
from ..core.rundir import update_config
from ..model.learner import build
from ..model.weights import Weights, resolve_weights, torch_load
from .after_fit import Finish
from .callbacks import (
    BatchLog,
    Checkpoint,
    FinalPreds,
    FirstBatch,
    HistoryCSV,
    ProgressiveResize,
    RestoreSmoothLoss,
    ValidEvery,
)
from .context import RunContext, open_run
from .distributed import distributed
from .epochs import phases, total_epochs
from .presets import resolve
from .state import load_opt_state, set_rng_state


def run_command(command: str, preset: str = "auto", weights: str | None = None, out=None, resume=None,
                finish: Finish | None = None, console=None, progress=None, track=None, **flags) -> Path:
    """fit-one-cycle, fine-tune and train as typed: settings and weights resolved, then trained
    (`track`: the --track values, None for APP_TRACK's)."""
    from .lr_find import lr_from_run

    Phases.reset()
    if resume:
        if out:
            raise UsageError("--resume continues an existing run; it cannot take --out")
        moved = {k: flags.get(k) for k in ("data", "labels")}  # the run's dataset where it is now
        return train(None, resume=str(resume), finish=finish, console=console, progress=progress, track=track,
                     moved=moved)
    from ..core.device import trains_on_cuda

    w = resolve_weights(weights, progress=progress)
    recipe_command = flags.pop("recipe_command", None)  # train --config: the phases its recipe names
    cfg = resolve(command, preset, w.spec, trains_on_cuda(flags.get("device")), **flags)
    cfg = cfg.replace(command=recipe_command) if recipe_command else cfg
    if weights == "auto" and w.kind == "none" and console:
        console.print(f"ImageNet weights unavailable offline: training from random init with {cfg.preset}; "
                      "pass --weights PATH to fine-tune", markup=False)
    ds = None
    if command == "train" and flags.get("size") is None:
        cfg, ds = _fit_size(cfg, console, progress)
    if cfg.lr_from:
        cfg = cfg.replace(lr=lr_from_run(cfg.lr_from))
    if console:
        from rich.markup import escape

        console.print(f"[bold]{cfg.command}[/] " + escape(
            f"preset={cfg.preset} epochs={cfg.epochs} lr={cfg.lr:g} size={cfg.size}"
            f"{f' (progressive {cfg.progressive})' if cfg.progressive else ''}"
            f"{f' validated at {cfg.test_size()}' if cfg.test_size() != cfg.size else ''} bs={cfg.bs} loader={cfg.loader} "
            f"weights={cfg.weights}{' time=' + format(cfg.time, 'g') + ' min' if cfg.time else ''}"), highlight=False)
    return train(cfg, out=str(out) if out else None, weights=w, finish=finish, console=console, progress=progress,
                 ds=ds, track=track)


def _fit_size(cfg: TrainConfig, console, progress):
    """The main job on images smaller than its recipe's size trains at their size (one line says so);
    returns the settings and the scanned dataset, which the session then reuses."""
    from ..data.download import resolve_data
    from ..data.scan import scan_for
    from .presets import fit_size_to_images

    data = resolve_data(cfg.data, progress)
    ds = scan_for(cfg.replace(data=str(data)), progress=progress)
    Phases.mark("scanned")
    side = ds.median_side()
    fitted = fit_size_to_images(cfg.replace(data=str(data)), side)
    if fitted.size != cfg.size and console:
        console.print(f"images are {side} px (median shorter side): training at {fitted.size} px, not {cfg.size}",
                      markup=False)
    return fitted, ds


def train(cfg: TrainConfig | None, out: str | None = None, weights: Weights | None = None, resume: str | None = None,
          finish: Finish | None = None, console=None, progress=None, ds=None, track=None,
          moved: dict | None = None) -> Path:
    """Run (or resume) a training command; returns its run directory (`ds`: cfg.data, already scanned;
    `track`: the trackers to log to, see track.py; a resumed run also continues those it had;
    `moved`: a resumed run's dataset where it is now)."""
    from .track import track_names, tracked

    info = {"weights_used": weights.kind, "weights_reason": weights.reason} if weights else {}
    if finish is not None and not resume:
        info["finish"] = asdict(finish)  # a resumed run finishes as the command asked (train: export)
    names = track_names(track, resume) if dist.is_rank0() else []  # a bad name stops the command here
    s = open_run(cfg, out, resume=resume, console=console, progress=progress, ds=ds, moved=moved, **info)
    with tracked(names, s.run, s.log) as s.track:
        _train_run(s, weights, resume, finish, progress)
    dist.barrier()
    return s.run


def _train_run(s: RunContext, weights: Weights | None, resume: str | None, finish: Finish | None, progress) -> None:
    """The opened run trained: its checkpoint read back (resume), the Learner built, the frozen phase
    and the time budget sized, every phase fitted, then evaluation, report and export."""
    ckpt, start_epoch = _checkpoint(s.run) if resume else (None, 0)
    if resume:
        s.log(f"resuming {s.run} at epoch {start_epoch} of {total_epochs(s.cfg)}")
        _truncate_logs(s.run, start_epoch)
        finish = _saved_finish(s.run, _changed(finish))  # as first asked, plus what this command turns on
        if ckpt is not None:  # the checkpoint replaces the first weights: no hub cache or download needed
            weights = Weights("none", reason="resumed: the weights come from the checkpoint")
    elif s.cfg.lr_from and dist.is_rank0():  # the lr-find plot belongs with the run it set up
        shutil.copy(Path(s.cfg.lr_from) / "lr_find.json", s.run / "lr_find.json")
    learn = build(s.cfg, s.dls, s.run, s.device, s.log, weights=weights, progress=progress)
    Phases.mark("model_built")
    if s.cfg.min_freeze_steps and not resume:
        s.cfg = _size_frozen_phase(s)
    if s.cfg.time and not resume:
        s.cfg = _plan_budget(learn, s, finish or Finish())
    elif s.cfg.time:
        from .keeper import recorded_budget

        n_train = len(s.ds.split("train")) // dist.world_size()
        s.budget = recorded_budget(s.run, s.cfg, n_train, len(s.ds.split("val")))  # as it stood: no clock
    if ckpt is not None:
        learn.model.load_state_dict(ckpt["model"])
        learn.samples_seen = ckpt.get("samples_seen", 0)
    s.track.params(s.cfg, resumed=bool(resume))  # the settings as planned
    fit_s = _fit(learn, s, start_epoch, ckpt)
    if s.budget is not None:
        s.cfg = s.budget.cfg  # the epochs as the budget ended up planning them
    _finish(learn, s, fit_s, finish)


def _size_frozen_phase(s: RunContext) -> TrainConfig:
    """fine-tune on a small dataset: enough frozen epochs for `min_freeze_steps` optimizer steps,
    so the new head really trains before the body thaws (one epoch of a big dataset already does)."""
    steps = max(1, len(s.dls.train))
    need = -(-s.cfg.min_freeze_steps // steps)
    if s.cfg.command != "fine-tune" or need <= s.cfg.freeze_epochs:
        return s.cfg
    s.log(f"frozen phase: {need} epochs of {steps} steps (at least {s.cfg.min_freeze_steps} steps), "
          f"not {s.cfg.freeze_epochs}")
    cfg = s.cfg.replace(freeze_epochs=need)
    if dist.is_rank0():
        update_config(s.run, config=cfg.to_dict())
    return cfg


def _plan_budget(learn, s: RunContext, finish: Finish) -> TrainConfig:
    """--time: this machine measured (in the precision it trains fastest in, for auto on a CPU with
    native bf16), the epochs planned (on rank 0, shared with the others) and written into
    config.json, so a resumed run keeps the plan; the keeper corrects it as it goes."""
    from ..core.host import process_seconds
    from .budget import describe_recall, forget_choice, plan, recall_or_measure, speeds_key
    from .keeper import start_budget

    p, n_train = None, len(s.ds.split("train")) // dist.world_size()
    passes = 5 * finish.tta + (dist.world_size() > 1)  # TTA's passes; no last-epoch predictions to reuse
    known, choice = _auto_precision(learn, s)
    if dist.is_rank0():
        speeds, recalled = recall_or_measure(learn, s.cfg, s.device, s.run / "models",
                                             speeds_key(s.cfg, s.device, len(s.ds.classes)), known=known)
        update_config(s.run, speeds_source=recalled)
        if recalled["source"] != "measured":
            s.log(describe_recall(recalled))
        if choice.get("source") == "remembered" and recalled["source"] != "remembered":
            forget_choice(choice["key"])  # the host changed (or its rates were lost): the next run times both again
        try:
            p = plan(s.cfg, speeds, n_train, len(s.ds.split("val")), s.cfg.time * 60, process_seconds(), passes)
        except UsageError as e:
            update_config(s.run, status="refused: the time budget holds no useful run")
            p = e
    p = dist.broadcast(p)
    if isinstance(p, UsageError):
        raise p
    cfg = s.cfg.replace(epochs=p.epochs)
    if dist.is_rank0():
        update_config(s.run, config=cfg.to_dict(), plan=p.to_dict())
    s.log(p.summary)
    Phases.mark("planned")
    s.plan, s.budget = p, start_budget(s.cfg, cfg, p, s.run, n_train, len(s.ds.split("val")))
    return cfg


def _auto_precision(learn, s: RunContext) -> tuple[dict, dict]:
    """--precision auto on a CPU with native bf16 under --time: fp32 and bf16 timed here (or the
    choice a run with these settings made here in the last week), the faster by a clear margin taken
    (said in a line, recorded in config.json). Returns the chosen precision's freshly measured training
    rate ({size: img/s}, none when remembered) for the plan, and the choice."""
    from ..core.device import cpu_bf16
    from ..model.callbacks import CpuBf16
    from .budget import describe_choice, recall_or_choose, speeds_key

    if s.requested_precision != "auto" or s.device.type != "cpu" or not cpu_bf16()["native"]:
        return {}, {}
    key = speeds_key(s.cfg.replace(precision="auto"), s.device, len(s.ds.classes))
    choice = dist.broadcast(recall_or_choose(learn, s.cfg, s.device, key) if dist.is_rank0() else None)
    if choice["chosen"] == "bf16":
        learn.add_cb(CpuBf16())
        s.cfg = s.cfg.replace(precision="bf16")
    if dist.is_rank0():
        update_config(s.run, config=s.cfg.to_dict(), precision_choice=choice)
    s.log(describe_choice(choice))
    if choice["source"] == "remembered":
        return {}, choice  # the chosen precision's remembered rates get their spot check
    return {s.cfg.size: choice[f"{choice['chosen']}_img_s"]}, choice


def _checkpoint(run: Path) -> tuple[dict | None, int]:
    last = run / "models" / "last.pth"
    if not last.is_file():
        return None, 0
    ckpt = torch_load(last)  # tensors and numbers only: a file that would run code is refused (exit 4)
    return ckpt, ckpt["epoch"] + 1


def _saved_finish(run: Path, changes: dict | None = None) -> Finish:
    from ..core.rundir import load_config

    _, meta = load_config(run)
    saved = {k: v for k, v in meta.get("finish", {}).items() if k in Finish.__dataclass_fields__}
    return Finish(**{**saved, **(changes or {})})


def _changed(finish: Finish | None) -> dict:
    """What a resume command asks beyond the defaults (`--tta`, `--export`, `--no-evaluate`): the
    resume command's own defaults must not undo what the run was started with."""
    if finish is None:
        return {}
    return {k: v for k, v in asdict(finish).items() if v != getattr(Finish, k)}


def _fit(learn, s: RunContext, start_epoch: int, ckpt) -> float:
    """Every phase from `start_epoch`; Ctrl-C ends with the resume command (exit 130). The best
    epoch's score carries across phases (best.pth is the best of the whole run, resumed or not)."""
    t0 = time.time()
    best = (ckpt or {}).get("best")
    s.fit_started = t0 - (_elapsed_before(s.run) if start_epoch else 0.0)  # history's elapsed_s carries on
    try:
        for ph in phases(s.cfg):
            if start_epoch >= ph["offset"] + ph["epochs"] or ph["epochs"] == 0:
                continue
            best = _fit_phase(learn, s, ph, start_epoch, ckpt, best)
            ckpt = None  # optimizer state belongs to the phase that saved it
    except KeyboardInterrupt:
        if dist.is_rank0():
            update_config(s.run, status="interrupted")
        raise Interrupted(f"interrupted; the last finished epoch is saved. Resume with: "
                          f"python -m app {s.cfg.command} --resume {s.run}") from None
    return time.time() - t0


def _fit_phase(learn, s: RunContext, ph: dict, start_epoch: int, ckpt, best: float | None = None) -> float | None:
    """One phase with its callbacks; returns the best score so far."""
    cfg, off, run = s.cfg, ph["offset"], s.run
    monitor = "f1_score" if getattr(s.dls, "multi", False) else "accuracy"  # multi-label: macro F1 at 0.5
    saver = Checkpoint(run / "models", off, ph["name"], monitor=monitor, best=best)
    cbs = [
        FirstBatch(lambda: _first_batch(s)),
        ProgressiveResize(cfg.schedule(total_epochs(cfg)), off, log=s.log),
        HistoryCSV(run / "history.csv", off, ph["name"], log=s.log, started=s.fit_started),
        BatchLog(run / "batches.csv", off),
        saver,
    ]
    if cfg.valid_every > 1:
        cbs.append(ValidEvery(cfg, off))
    cbs += s.track.callbacks(off)
    if ph["name"] == phases(cfg)[-1]["name"] and dist.world_size() == 1:
        cbs.append(FinalPreds(off))
    learn.freeze() if ph["freeze"] else learn.unfreeze()
    learn.phase_label = ph["name"]
    skip = max(0, start_epoch - off)
    if ckpt is not None:
        learn.model.to(s.device)  # before the optimizer: its state must sit beside the parameters
        learn.create_opt()
        if skip > 0:  # mid-phase; at a phase's start fastai's freeze()/unfreeze() clears Adam's state
            load_opt_state(learn.opt, ckpt["opt"])
        set_rng_state(ckpt["rng"], learn.dls, s.device)
        if skip > 0 and "smooth_loss" in ckpt:  # mid-phase; a new phase starts afresh, as fastai does
            cbs.append(RestoreSmoothLoss(ckpt["smooth_loss"]))
    kw = {k: ph[k] for k in ("pct_start", "div") if k in ph}
    with distributed(learn, learn.dls.device or torch.device("cpu")):
        if s.budget is not None:
            from .keeper import fit_budgeted

            last = ph["name"] == phases(cfg)[-1]["name"]
            p0 = (ckpt or {}).get("cycle_p") if (ckpt or {}).get("phase") == ph["name"] else None
            fit_budgeted(learn, s.budget, ph, cbs, skip, last, p0, s.log, wd=cfg.wd, **kw)
            return saver.best
        s.log(f"{ph['name']}: fit_one_cycle({ph['epochs']} epochs, lr={ph['lr']}) from epoch {off + skip}")
        learn.fit_one_cycle(ph["epochs"], ph["lr"], wd=cfg.wd, cbs=cbs, start_epoch=skip, **kw)
    return saver.best


def _first_batch(s: RunContext) -> None:
    """The last mark before fitting: how long the user waited for the first batch, and where it went."""
    if "first_batch" in Phases.marks:
        return
    Phases.mark("first_batch")
    if dist.is_rank0():
        update_config(s.run, phases=dict(Phases.marks))
        m = Phases.marks
        steps = ", ".join(f"{k} {v:.1f}s" for k, v in m.items() if k != "first_batch")
        s.log(f"first batch at {m['first_batch']:.1f}s after the command started ({steps})")


def _finish(learn, s: RunContext, fit_s: float, finish: Finish | None) -> None:
    """Rank 0: the fit's time and memory in config.json, then evaluation, report and export."""
    peak = rss_mb()
    if not dist.is_rank0():
        return
    from .state import model_digest

    update_config(s.run, status="finished", fit_seconds=round(fit_s, 1), peak_rss_mb=round(peak),
                  weights_sha256=model_digest(learn.model))  # `compare` shows two runs that trained alike
    s.log(f"training finished in {fit_s:.0f}s (peak host memory {peak:.0f} MB)")
    from .after_fit import finish_run

    with dist.this_process_only():  # evaluation on the whole validation set, in one process
        finish_run(learn, s, finish or Finish())
    s.track.final()  # metrics, figures, report and bundle into the trackers


def _elapsed_before(run: Path) -> float:
    """Seconds of fitting the kept history rows already hold (a resumed run's clock carries on)."""
    import csv

    try:
        with open(run / "history.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        return float(rows[-1].get("elapsed_s") or 0.0) if rows else 0.0
    except (OSError, ValueError):
        return 0.0


def _truncate_logs(run: Path, start_epoch: int) -> None:
    """Drop rows of epochs that will run again (a kill between the CSV row and the checkpoint)."""
    from ..core.files import write_text

    for name in ("history.csv", "batches.csv"):
        f = run / name
        if not f.is_file():
            continue
        lines = f.read_text(encoding="utf-8").splitlines(keepends=True)
        keep = lines[:1] + [ln for ln in lines[1:] if ln.split(",", 1)[0].isdigit() and int(ln.split(",", 1)[0]) < start_epoch]
        write_text(f, "".join(keep))

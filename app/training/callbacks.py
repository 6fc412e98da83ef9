"""Training behaviour as fastai callbacks: history, per-batch log, checkpoints, resizing, and what
the experiment trackers log (training/track.py opens them).

Epochs are numbered globally across fine-tune's two phases (`offset`), so history rows,
checkpoints and resizing agree on one count. Epochs that a resumed fit skips (fastai's
SkipToEpoch raises CancelEpochException, yet after_epoch still fires) are ignored here.
"""

from __future__ import annotations

import csv
import math
import os
import time
from pathlib import Path

import torch
from fastai.callback.core import Callback, CancelValidException
from fastai.callback.progress import CSVLogger

from ..core.errors import RunError, first_line
from ..core.files import os_reason
from ..core.ranks import is_rank0, unwrap_model, world_size
from ..core.rundir import update_config
from ..data.loaders import set_size
from .epochs import size_at, total_epochs, validates
from .state import atomic_save, loadable, rng_state


class EpochAware(Callback):
    """Knows the global epoch and whether fastai is only skipping this one."""

    def __init__(self, offset: int = 0):
        self.offset = offset

    @property
    def global_epoch(self) -> int:
        return self.offset + self.epoch

    def before_epoch(self):
        self.skipped = False

    def after_cancel_epoch(self):
        self.skipped = True


class FirstBatch(Callback):
    """Calls `then()` once, when the first training batch is about to run (the phases' last mark)."""

    order = -50

    def __init__(self, then):
        self.then = then

    def before_batch(self):
        if self.training and self.then is not None:
            then, self.then = self.then, None
            then()


class HistoryCSV(CSVLogger, EpochAware):
    """fastai's CSVLogger, one row per global epoch (with phase and size), across phases and resumes.
    fastai's `time` is the epoch's own duration (mm:ss); `elapsed_s` is the seconds of fitting since
    the run's first epoch began (fine-tune's phases and a resume carried on), for time-to-accuracy."""

    def __init__(self, fname: Path, offset: int = 0, phase: str = "one-cycle", log=None, started: float | None = None):
        CSVLogger.__init__(self, fname=fname, append=True)
        EpochAware.__init__(self, offset)
        self.phase, self.log_fn, self.skipped, self.started = phase, log, False, started

    def before_fit(self):
        self.rank0 = is_rank0()
        if not self.rank0:
            return
        self.started = self.started or time.time()
        new = not self.fname.exists() or self.fname.stat().st_size == 0
        # a run written before `elapsed_s` existed keeps its columns when resumed
        self.elapsed = new or "elapsed_s" in self.fname.read_text(encoding="utf-8").split("\n", 1)[0].split(",")
        self.file = self.fname.open("a", encoding="utf-8")
        if new:
            self.file.write(",".join(list(self.recorder.metric_names) + ["elapsed_s", "phase", "size"]) + "\n")
        self.old_logger, self.learn.logger = self.logger, self._write_line

    def _write_line(self, log):
        if self.skipped:
            return  # a resumed fit passing over an epoch done before
        elapsed = [round(time.time() - self.started, 1)] if self.elapsed else []
        row = [self.global_epoch] + list(log[1:]) + elapsed + [self.phase, getattr(self.learn, "cur_size", "")]
        self.file.write(",".join("" if _nan(t) else str(t) for t in row) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())
        if self.log_fn:
            vals = " ".join(f"{n} {_fmt(v)}" for n, v in zip(self.recorder.metric_names[1:], log[1:]))
            self.log_fn(f"epoch {self.global_epoch}: {vals} ({self.phase}, {row[-1]}px)")
        self.old_logger([self.global_epoch] + list(log[1:]))

    def after_fit(self):
        if self.rank0:
            CSVLogger.after_fit(self)


class BatchLog(EpochAware):
    """Per-batch training loss (raw and smoothed) and learning rates, for the learning curve: `lr`
    is the head's (the last parameter group), lr_group0..N every group's (discriminative lrs)."""

    order = 55  # after Recorder has updated smooth_loss

    def __init__(self, fname: Path, offset: int = 0):
        super().__init__(offset)
        self.fname = Path(fname)

    def before_fit(self):
        self.rows, self.rank0 = [], is_rank0()
        self.seen = getattr(self.learn, "samples_seen", 0)

    def after_batch(self):
        if not self.training or not self.rank0:
            return
        self.seen += len(self.yb[0]) * world_size()
        lrs = [h["lr"] for h in self.opt.hypers]
        self.rows.append((self.global_epoch, self.iter, self.seen, self.loss.item(), float(self.smooth_loss.item()),
                          lrs[-1], *lrs))

    def after_epoch(self):
        self.learn.samples_seen = self.seen
        if self.skipped or not self.rank0 or not self.rows:
            return
        new = not self.fname.exists()
        with self.fname.open("a", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            if new:
                groups = [f"lr_group{i}" for i in range(len(self.rows[0]) - 6)]
                w.writerow(["epoch", "iter", "samples", "loss", "smooth_loss", "lr", *groups])
            w.writerows(self.rows)
        self.rows = []


def _fmt(v) -> str:
    if _nan(v):
        return "-"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _nan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


class ValidEvery(EpochAware):
    """Validate only the epochs schedule.validates() names (every `valid_every`, each image size's
    last epoch, the last epoch); skipped epochs get empty validation columns (fastai's
    CancelValidException, so the Recorder logs no stale numbers). On a 2-core CPU a full
    validation pass is ~11 % of a run."""

    order = -10  # before the Recorder (50) resets its validation metrics

    def __init__(self, cfg, offset: int = 0):
        super().__init__(offset)
        self.cfg, self.total = cfg, total_epochs(cfg)

    def wanted(self, global_epoch: int) -> bool:
        plan = getattr(self.learn, "epoch_plan", None) if hasattr(self, "learn") else None  # a time budget's
        return plan.valid[global_epoch] if plan is not None else validates(self.cfg, global_epoch, self.total)

    def before_validate(self):
        self.cancelled = False
        if not self.wanted(self.global_epoch):
            raise CancelValidException()

    def after_cancel_validate(self):
        self.cancelled = True

    def after_validate(self):
        if getattr(self, "cancelled", False):  # keep the columns aligned with metric_names
            rec = self.recorder
            rec.log += [float("nan")] * (len(rec.metric_names) - len(rec.log) - 1)


class Checkpoint(EpochAware):
    """Every epoch: last.pth (model, optimizer, epoch, RNG), and best.pth when `monitor` improves.

    fastai's SaveModelCallback(every_epoch, with_opt) saves in place; this one writes atomically
    and carries what an exact resume needs.
    """

    order = 61  # after Recorder (50) and the history logger (60)

    def __init__(self, models_dir: Path, offset: int = 0, phase: str = "one-cycle", monitor="accuracy",
                 best: float | None = None):
        super().__init__(offset)
        self.dir, self.phase, self.monitor = Path(models_dir), phase, monitor
        self.best = best

    def after_epoch(self):
        if self.skipped or not is_rank0():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        names = list(self.recorder.metric_names[1:])
        rec = dict(zip(names, self.recorder.final_record))
        state = {k: v.detach().cpu() for k, v in unwrap_model(self.learn.model).state_dict().items()}
        value = rec.get(self.monitor)
        value = None if value is None or _nan(float(value)) else float(value)
        ckpt = {
            "model": state, "opt": loadable(self.learn.opt.state_dict()), "epoch": self.global_epoch,
            "phase": self.phase, "rng": rng_state(self.dls, self.dls.device), "record": {k: float(v) for k, v in rec.items() if _num(v) and not _nan(float(v))},
            "samples_seen": getattr(self.learn, "samples_seen", 0), "best": self.best,
            "cycle_p": getattr(self.learn, "cycle_p", None),  # a time budget's one-cycle progress
            "smooth_loss": {"val": float(self.recorder.smooth_loss.val), "count": int(self.recorder.smooth_loss.count)},
            "time": time.time(),
        }
        try:
            if value is not None and (self.best is None or value > self.best):
                self.best = value
                ckpt["best"] = value
                atomic_save({"model": state, "epoch": self.global_epoch, self.monitor: value}, self.dir / "best.pth")
            atomic_save(ckpt, self.dir / "last.pth")
        except OSError as e:
            self._failed(e)

    def _failed(self, e: OSError):
        """A checkpoint that cannot be written (a full disk) ends the run in one line, config.json
        saying so (the partial file is gone by now, so the few bytes it needs are free again)."""
        why = os_reason(e)
        kept = f"models/last.pth holds epoch {self.global_epoch - 1}" if self.global_epoch else "no epoch is saved"
        try:
            update_config(self.dir.parent, status=f"failed: checkpoint of epoch {self.global_epoch} not written ({why})")
        except (OSError, RunError):
            pass
        raise RunError(f"cannot write the checkpoint of epoch {self.global_epoch} in {self.dir}: {why} ({kept}; "
                       "free some space and resume)") from None


class RestoreSmoothLoss(Callback):
    """A resumed phase carries on the Recorder's smoothed loss instead of restarting it, so the
    history's train_loss matches the uninterrupted run (fastai resets it in Recorder.before_fit)."""

    order = 51  # after Recorder.before_fit

    def __init__(self, state: dict):
        self.state = state

    def before_fit(self):
        sl = self.recorder.smooth_loss
        sl.val, sl.count = torch.tensor(self.state["val"]), self.state["count"]


def _num(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


class FinalPreds(EpochAware):
    """Keeps the last epoch's validation predictions, so the evaluation after training reuses
    them instead of another full pass (what fastai's get_preds would compute: probabilities,
    targets, unreduced losses, in loader order). The last epoch is the time budget's plan's when
    there is one (the fit then runs over more epochs than it will do)."""

    order = 70

    def before_validate(self):
        plan = getattr(self.learn, "epoch_plan", None)
        self.keep = plan.is_last(self.global_epoch) if plan is not None else self.epoch == self.n_epoch - 1
        self.probs, self.targs, self.losses = [], [], []

    def after_batch(self):
        if self.training or not getattr(self, "keep", False) or not len(self.yb):
            return
        with self.learn.loss_not_reduced():
            loss = self.learn.loss_func(self.learn.pred, *self.yb)
        act = getattr(self.learn.loss_func, "activation", lambda x: x)
        self.probs.append(act(self.learn.pred).detach().float().cpu())
        self.targs.append(self.yb[0].detach().cpu().as_subclass(torch.Tensor))
        self.losses.append(loss.detach().float().cpu())

    def after_validate(self):
        if getattr(self, "keep", False) and self.probs:
            # not `learn.final_preds`: fastai keeps each callback under its snake_case name and deletes
            # that attribute when the callback is removed at the end of fit
            self.learn.last_valid_preds = (torch.cat(self.probs), torch.cat(self.targs), torch.cat(self.losses))


class ProgressiveResize(EpochAware):
    """fastai's progressive resizing inside one one-cycle schedule: `schedule` is
    [(first epoch, size), ...] (TrainConfig.schedule), applied before each epoch."""

    order = -20

    def __init__(self, schedule: list[tuple[int, int]], offset: int = 0, log=None):
        super().__init__(offset)
        self.sched, self.log_fn = sorted(schedule), log

    def size_at(self, epoch: int) -> int:
        return size_at(self.sched, epoch)

    def before_epoch(self):
        super().before_epoch()
        plan = getattr(self.learn, "epoch_plan", None)  # a time budget plans sizes as it goes
        s = plan.sizes[self.global_epoch] if plan is not None else self.size_at(self.global_epoch)
        if getattr(self.learn, "cur_size", None) != s:
            set_size(self.dls, s)
            if self.log_fn and getattr(self.learn, "cur_size", None) is not None:
                self.log_fn(f"progressive resizing: {self.learn.cur_size}px -> {s}px at epoch {self.global_epoch}")
            self.learn.cur_size = s


def composed(mixin: type, fastai_base: type) -> type:
    """fastai's callback with this module's mixin in front (put together when a tracker opens:
    importing fastai's module needs the tracker's library)."""
    return type(fastai_base.__name__.replace("Callback", "Run"), (mixin, fastai_base), {"fastai_base": fastai_base})


class TrackStep(EpochAware):
    """What every tracker callback shares: the step axis (this run's training batches), nothing
    logged for an epoch a resume skips, and failing alone: one line, then silence, training goes on."""

    order = 51  # after the Recorder (50): its smoothed loss and epoch log are up to date
    run_valid = False  # per-batch logging is of training batches only

    def setup(self, tracker: str, step0: int, offset: int, log) -> None:
        EpochAware.__init__(self, offset)
        self.tracker, self.step0, self.log_fn, self.failed, self.skipped = tracker, step0, log, False, False

    @property
    def train_iter(self) -> int:  # fastai's callbacks read it as their step
        return self.step0 + self.learn.train_iter

    def epoch_values(self) -> dict:
        """This epoch's validation numbers (valid_loss and the metrics), skipped validation left out."""
        names, log = self.recorder.metric_names, self.recorder.log
        return {n: float(v) for n, v in zip(names[2:-1], log[2:-1]) if not math.isnan(float(v))}

    def __call__(self, event_name):
        if self.failed:
            return None
        try:
            return super().__call__(event_name)
        except Exception as e:  # a tracker that breaks mid-run never stops the training
            self.failed = True
            why = first_line(str(e).split("\n\t")[-1], 200)  # fastai's "Exception occured in ..." prefix off
            self.log_fn(f"track: {self.tracker} stopped logging at {event_name} ({why}); training goes on without it")


class TensorBoardSteps(TrackStep):
    """In front of fastai's TensorBoardCallback: steps across phases and resumes (the writer purges
    what a killed process wrote past the last checkpoint), no model trace or sample predictions (a
    batch drawn for them would move the run's random state), per epoch only what was validated."""

    def __init__(self, log_dir: Path, step0: int, offset: int, log):
        self.fastai_base.__init__(self, log_dir=str(log_dir), trace_model=False, log_preds=False)
        self.setup("tensorboard", step0, offset, log)

    def _setup_writer(self):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=self.log_dir, purge_step=self.step0 + 1 if self.step0 else None)

    def after_epoch(self):
        if not self.skipped:
            for k, v in {**self.epoch_values(), "epoch": self.global_epoch + 1}.items():
                self.writer.add_scalar(k, v, self.train_iter)


class WandbSteps(TrackStep):
    """In front of fastai's WandbCallback, whose per-batch and per-epoch logging it keeps: its step
    and epoch counters carried across phases and resumes (an offline run resumed starts at step 0),
    no sample predictions or gradients. Its before_fit is replaced: fastai's gathers the Learner's
    arguments into the W&B config, which fails here (fastcore 2.2's init_args calls vars() on plain
    numbers: `_format_config({'a': 1})` raises) and draws a batch, moving the run's random state;
    the run's settings reach W&B's config through the tracker instead."""

    def __init__(self, step0: int, offset: int, log):
        self.fastai_base.__init__(self, log=None, log_preds=False, log_model=False, log_dataset=False)
        self.setup("wandb", step0, offset, log)

    def before_fit(self):
        from fastai.torch_core import rank_distrib

        self.run = not hasattr(self.learn, "lr_finder") and not hasattr(self, "gather_preds") and rank_distrib() == 0
        self._wandb_step, self._wandb_epoch = self.step0, self.offset

    def before_epoch(self):
        super().before_epoch()
        self._wandb_epoch = self.global_epoch

    def after_epoch(self):
        import wandb

        if not self.skipped:
            self._wandb_epoch = self.global_epoch + 1
            wandb.log({"epoch": self._wandb_epoch, **self.epoch_values()}, step=self._wandb_step)


class MlflowLog(TrackStep):
    """Per batch and per epoch, into an MLflow run through MlflowClient: the batches' values are
    kept and written once per epoch (one log_batch call, one store transaction)."""

    def __init__(self, client, run_id: str, step0: int, offset: int, log):
        super().__init__()
        self.client, self.run_id, self.rows = client, run_id, []
        self.setup("mlflow", step0, offset, log)

    def _metric(self, key: str, value, step: int):
        from mlflow.entities import Metric

        return Metric(key, float(value), int(time.time() * 1000), step)

    def after_batch(self):
        step = self.train_iter
        self.rows += [self._metric("train_loss", self.smooth_loss, step), self._metric("raw_loss", self.loss, step)]
        self.rows += [self._metric(f"lr_{i}", h["lr"], step) for i, h in enumerate(self.opt.hypers)]

    def after_epoch(self):
        rows, self.rows = self.rows, []
        if not self.skipped:
            values = {**self.epoch_values(), "epoch": self.global_epoch + 1}
            rows += [self._metric(k, v, self.train_iter) for k, v in values.items()]
            self.client.log_batch(self.run_id, metrics=rows)

"""--time kept to the second (issue 24): the plan made before fitting is corrected as training goes.

At every epoch boundary the epochs left are planned again (budget.choose) from the epochs'
measured times: each image size's prediction is scaled by what its last epochs really took (the
latest epoch's ratio for sizes not run yet), as Ultralytics' `time=` re-plans from measured epoch
times. The last epoch ends early at the deadline, so the fit ends where the command's budget asks
(an integer number of 30-60 s epochs cannot land inside a 97-100 % window). The one-cycle schedule
follows the plan as it changes: its progress p moves by (1 - p) / (batches left) each batch, so it
is continuous when the plan changes and reaches 1, the lr's minimum, at the plan's last batch; with
a fixed plan it is fastai's pct_train exactly. Image sizes never go back down and the last epoch
runs at the final size (epochs.plan_epochs).

fastai's `fit` loops over a range fixed when it starts: a budgeted phase is fitted with the most
epochs it may plan and stopped with CancelFitException when the plan ends. A resumed run keeps
the plan recorded in config.json and runs it by batch counts (no clock): deterministic.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

from fastai.callback.core import CancelFitException, CancelTrainException
from fastai.callback.schedule import ParamScheduler

from ..core import ranks as dist
from ..core.config import TrainConfig
from ..core.rundir import update_config
from .budget import Costs, choose
from .callbacks import EpochAware
from .epochs import EpochPlan


@dataclass
class Budget:
    """A budgeted run's time state, shared by its phases' callbacks and written to config.json."""

    cfg: TrainConfig
    costs: Costs
    plan: EpochPlan
    deadline: float | None  # time.time() by which the fit must end; None: run the plan as recorded
    lo: int
    hi: int
    run: object = None
    epochs: list[dict] = field(default_factory=list)  # planned and actual seconds of every epoch
    ratios: dict[int, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"plan": self.plan.to_dict(), "epochs": self.epochs, "live": self.deadline is not None,
                "factors": {str(k): round(v, 3) for k, v in self.costs.factors.items()}}

    def learn_from(self, size: int, actual_s: float, predicted_raw_s: float) -> None:
        """One epoch measured: its size's factor is the mean ratio of that size's last 3 epochs,
        and sizes not run yet take the latest ratio."""
        r = actual_s / max(predicted_raw_s, 1e-6)
        self.ratios.setdefault(size, []).append(r)
        self.costs.factors[size] = statistics.mean(self.ratios[size][-3:])
        self.costs.default = r


class KeepTime(EpochAware):
    """Times every epoch of a budgeted run and, in its planned phase, plans again at each epoch
    boundary, ends the last epoch at the deadline and stops the fit when the plan ends."""

    order = -30  # before the resizing (-20) and validation (-10) callbacks read the plan

    def __init__(self, budget: Budget, offset: int = 0, planned: bool = True, log=None):
        super().__init__(offset)
        self.b, self.planned, self.log_fn, self.open = budget, planned, log, None
        self.left, self.ran = None, 0

    @property
    def live(self) -> bool:
        return self.planned and self.b.deadline is not None

    def before_fit(self):
        self.learn.epoch_plan = self.b.plan
        self.learn.fit_deadline = self.b.deadline if self.live else None
        self._show()

    def _show(self):
        self.learn.epochs_planned = self.b.plan.total - self.offset if self.planned else None

    def before_epoch(self):
        self._close()
        super().before_epoch()
        e = self.global_epoch
        if e > 0 and self.b.plan.is_last(e - 1) or e >= self.b.plan.total:
            raise CancelFitException()  # the plan's last epoch has run
        if self.live:
            self._replan(e)
        p, n = self.b.plan, len(self.dls.train)
        self.open = {"epoch": e, "size": p.sizes[e], "validated": p.valid[e], "plan_epochs": p.total,
                     "plan_batches": (p.total - e - 1) * n + (p.final_iters or n),  # from this epoch on
                     "planned_s": round(self._seconds(self.b.costs, e), 1), "t0": time.time()}

    def _seconds(self, costs: Costs, e: int, batches: int | None = None) -> float:
        """Seconds of epoch `e` at `costs`: its share of the training batches, its checkpoint and
        validation (the last epoch's planned share when it ends at the deadline)."""
        p, n = self.b.plan, len(self.dls.train)
        if batches is None:
            batches = p.final_iters if p.is_last(e) and p.final_iters else n
        return costs.train_s(e, p.sizes[e]) * batches / n + costs.other_s(p.sizes[e], p.valid[e])

    def _replan(self, e: int) -> None:
        p = None
        if dist.is_rank0():
            p, frac, _ = choose(self.b.cfg, self.b.costs, self.b.plan.sizes[:e], self.b.deadline - time.time(),
                                self.b.lo, self.b.hi)
            p.final_iters = None if frac >= 1 else max(1, int(frac * len(self.dls.train)))
        p = dist.broadcast(p)
        if p.total != self.b.plan.total and self.log_fn:
            self.log_fn(f"time: re-planned at epoch {e}: {p.total} epochs (was {self.b.plan.total})")
        self.b.plan = self.learn.epoch_plan = p
        n_frozen = self.b.cfg.freeze_epochs if self.b.cfg.command == "fine-tune" else 0
        self.b.cfg = self.b.cfg.replace(epochs=p.total - n_frozen)
        self._show()
        self._record()  # a run killed in this epoch resumes with the plan it was running

    def _record(self) -> None:
        if dist.is_rank0() and self.b.run is not None:
            update_config(self.b.run, config=self.b.cfg.to_dict(), time_keeper=self.b.to_dict())

    def before_train(self):
        self.t_train, self.left, self.ran, self.cut = time.time(), None, 0, False

    def before_batch(self):
        if self.training and self.planned and self.iter > 0 and self.left == 0:
            self.cut = True
            raise CancelTrainException()  # the last epoch ends here: at the deadline, or its recorded batch count

    def after_train(self):
        if self.cut:  # fastai's Recorder drops a cancelled training's loss: this one trained, keep its row whole
            self.learn.recorder.cancel_train = False

    def after_batch(self):
        if self.training:
            self.ran = self.iter + 1
            self.left = self._left(self.ran)

    def _left(self, done: int) -> int:
        """Batches of the plan after this one: whole epochs, then the last epoch's share (by the
        clock when live in one process; by the plan's batch count otherwise)."""
        n, e, p = len(self.dls.train), self.global_epoch, self.b.plan
        if not p.is_last(e):
            return (n - done) + max(0, p.total - e - 2) * n + (p.final_iters or n)
        if not self.live or dist.world_size() > 1:
            return max(0, (p.final_iters or n) - done)
        # the slower of measured and predicted: p then reaches 1 by the cut, not at a sudden one
        per = max((time.time() - self.t_train) / done, self.b.costs.train_s(e, p.sizes[e]) / n)
        room = self.b.deadline - time.time() - self.b.costs.other_s(p.sizes[e], True)
        return max(0, min(n - done, int(room / max(per, 1e-6))))

    def remaining(self) -> int:
        """Batches left in the plan, this one included (the scheduler's denominator)."""
        return 1 + (self.left or 0)

    def after_fit(self):
        self._close()

    def _close(self) -> None:
        """The open epoch's actual time, what it teaches the plan, and config.json (rank 0)."""
        rec, self.open = self.open, None
        if rec is None or self.skipped:
            return
        rec["actual_s"] = round(time.time() - rec.pop("t0"), 1)
        rec["batches"] = getattr(self, "ran", 0)
        raw = Costs(self.b.costs.speeds, self.b.costs.n_train, self.b.costs.n_val, self.b.costs.n_frozen)
        self.b.learn_from(rec["size"], rec["actual_s"], self._seconds(raw, rec["epoch"], rec["batches"]))
        self.b.epochs.append(rec)
        self._record()


class OneCycleByProgress(ParamScheduler):
    """fit_one_cycle's schedules (lr and momentum) read at progress p, which moves by
    (1 - p) / (batches left in the plan) after each batch: continuous when the plan changes, 1 at
    its last batch, and exactly fastai's pct_train while the plan stays as it is."""

    def __init__(self, scheds, remaining, p: float = 0.0):
        super().__init__(scheds)
        self.remaining, self.p = remaining, float(p or 0.0)

    def before_batch(self):
        self._update_val(self.p)

    def after_batch(self):
        super().after_batch()
        self.p = min(1.0, self.p + (1.0 - self.p) / max(1, self.remaining()))
        self.learn.cycle_p = self.p


def start_budget(preset_cfg: TrainConfig, cfg: TrainConfig, p, run, n_train: int, n_val: int) -> Budget:
    """The keeper's state from the first plan: the probe's speeds, the fit's deadline (the
    command's budget less END_MARGIN and what follows the fit), the preset's epoch bounds."""
    from ..core.host import process_seconds
    from .budget import END_MARGIN, Speeds, epoch_bounds
    from .epochs import frozen_epochs, plan_epochs, total_epochs

    costs = Costs(Speeds(**p.speeds), n_train, n_val, frozen_epochs(cfg))
    started = time.time() - process_seconds()
    deadline = started + p.budget_s * (1 - END_MARGIN) - p.after_s
    lo, hi = epoch_bounds(preset_cfg)
    return Budget(cfg, costs, plan_epochs(cfg, total_epochs(cfg), []), deadline, lo, hi, run)


def recorded_budget(run, cfg: TrainConfig, n_train: int, n_val: int) -> Budget | None:
    """A resumed budgeted run: the plan as config.json last recorded it, run by batch counts (no
    deadline: the time has passed). None for runs recorded before the keeper existed."""
    from ..core.rundir import load_config
    from .budget import Speeds
    from .epochs import frozen_epochs

    _, meta = load_config(run)
    kept, plan = meta.get("time_keeper"), meta.get("plan")
    if not kept or not plan:
        return None
    sp = {k: {int(s): v for s, v in d.items()} if isinstance(d, dict) else d for k, d in plan["speeds"].items()}
    costs = Costs(Speeds(**sp), n_train, n_val, frozen_epochs(cfg))
    p = EpochPlan.from_dict(kept["plan"])
    return Budget(cfg, costs, p, None, p.total, p.total, run, list(kept.get("epochs", [])))


def fit_budgeted(learn, budget: Budget, ph: dict, cbs: list, skip: int, planned: bool, p0, log, wd=None,
                 pct_start: float = 0.25, div: float = 25.0, div_final: float = 1e5) -> None:
    """One phase of a budgeted run. The planned (last) phase: fastai's fit over the most epochs the
    plan may reach, its one-cycle schedules (as fit_one_cycle builds them) read at the keeper's
    progress; an earlier phase (fine-tune's frozen one): fit_one_cycle as it is, timed."""
    import numpy as np
    from fastai.callback.schedule import combined_cos

    off = ph["offset"]
    keeper = KeepTime(budget, off, planned=planned, log=lambda m: log(m, echo=False))
    if not planned:
        log(f"{ph['name']}: fit_one_cycle({ph['epochs']} epochs, lr={ph['lr']}) from epoch {off + skip}")
        return learn.fit_one_cycle(ph["epochs"], ph["lr"], wd=wd, cbs=[keeper, *cbs], start_epoch=skip,
                                   pct_start=pct_start, div=div)
    if learn.opt is None:
        learn.create_opt()
    learn.opt.set_hyper("lr", ph["lr"])
    lr_max = np.array([h["lr"] for h in learn.opt.hypers])
    scheds = {"lr": combined_cos(pct_start, lr_max / div, lr_max, lr_max / div_final),
              "mom": combined_cos(pct_start, *learn.moms)}
    n_epoch = (budget.hi if budget.deadline is not None else budget.plan.total) - off
    log(f"{ph['name']}: one-cycle over the time budget ({budget.plan.total - off} epochs planned, re-planned at "
        f"every epoch; lr={ph['lr']}) from epoch {off + skip}")
    learn.fit(n_epoch, cbs=[OneCycleByProgress(scheds, keeper.remaining, p0), keeper, *cbs], wd=wd,
              start_epoch=skip)

"""The budget kept as training goes, on a real fastai Learner over real images. The clock is
simulated (each batch advances it by what the measured speeds say, times a slowdown where the
test puts one), so the keeper's decisions are checked exactly: a fixed plan gives fastai's own
fit_one_cycle learning rates batch for batch; a live plan shrinks when epochs run slow, ends the
last epoch at the deadline, and its one-cycle progress moves smoothly to 1 at the last batch."""

from __future__ import annotations

import pytest
import torch
from fastai.callback.core import Callback

from app.core.config import TrainConfig
from app.training import keeper as keeper_mod
from app.training.budget import Costs, Speeds
from app.training.epochs import plan_epochs
from app.training.keeper import Budget, fit_budgeted

BS, SPEEDS = 8, Speeds(train={64: 80.0}, frozen={}, valid={64: 160.0}, checkpoint_s=0.0)


class Clock:
    def __init__(self):
        self.t = 1000.0

    def time(self):
        return self.t


class Tick(Callback):
    """Each batch costs what SPEEDS says, times `slow(epoch)`; runs before the keeper reads the clock."""

    order = -40

    def __init__(self, clock, slow=lambda e: 1.0):
        self.clock, self.slow = clock, slow

    def after_batch(self):
        rate = SPEEDS.train[64] if self.training else SPEEDS.valid[64]
        self.clock.t += len(self.yb[0]) / rate * self.slow(self.epoch)


class Spy(Callback):
    """Every training batch: the lr it ran at and the one-cycle progress after it."""

    order = 70

    def before_fit(self):
        self.lrs, self.ps, self.batches = [], [], []

    def after_batch(self):
        if self.training:
            self.lrs.append(self.opt.hypers[-1]["lr"])
            self.ps.append(getattr(self.learn, "cycle_p", None))
            self.batches.append((self.epoch, self.iter))


@pytest.fixture(scope="module")
def dls(tiny_data):
    from app.data.cache import open_or_build, stored_size
    from app.data.loaders import cached_dls
    from app.data.scan import scan

    return cached_dls(open_or_build(scan(tiny_data), stored_size(64), log=lambda *_: None), TrainConfig(bs=BS), 64)


def _learner(dls, tmp_path, seed=0):
    from app.core.device import seed_everything
    from app.model.learner import build

    seed_everything(seed, torch.device("cpu"))
    return build(CFG, dls, tmp_path, torch.device("cpu"), lambda *a, **k: None)


CFG = TrainConfig(size=64, bs=BS, epochs=4, lr=1e-3, valid_every=1)
PHASE = dict(name="one-cycle", offset=0, epochs=4, lr=1e-3, pct_start=0.25, freeze=False)


def _budget(dls, deadline, total=4):
    costs = Costs(SPEEDS, len(dls.train) * BS, len(dls.valid.dataset))
    return Budget(CFG.replace(epochs=total), costs, plan_epochs(CFG, total, []), deadline, 2, 12)


def test_a_fixed_plan_is_fastais_fit_one_cycle_batch_for_batch(dls, tmp_path):
    ref, spy = _learner(dls, tmp_path), Spy()
    ref.fit_one_cycle(4, 1e-3, cbs=[spy])
    want = list(spy.lrs)
    learn, spy2 = _learner(dls, tmp_path), Spy()
    fit_budgeted(learn, _budget(dls, None), PHASE, [spy2], 0, True, None, lambda *a, **k: None)
    assert len(spy2.lrs) == len(want) == 4 * len(dls.train)
    assert max(abs(a - b) for a, b in zip(want, spy2.lrs)) < 1e-12
    assert spy2.ps[-1] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("slow_epochs", [(), (1, 2)])
def test_a_live_plan_ends_the_fit_at_the_deadline_with_the_lr_at_its_minimum(dls, tmp_path, monkeypatch,
                                                                             slow_epochs):
    clock = Clock()
    monkeypatch.setattr(keeper_mod, "time", clock)
    n = len(dls.train)
    epoch_s = n * BS / 80 + len(dls.valid.dataset) / 160  # one epoch as SPEEDS predict it
    deadline = clock.t + 6.5 * epoch_s  # six epochs and a half: the last one must be cut
    b = _budget(dls, deadline)
    learn, spy = _learner(dls, tmp_path), Spy()
    tick = Tick(clock, lambda e: 3.0 if e in slow_epochs else 1.0)
    fit_budgeted(learn, b, PHASE, [tick, spy], 0, True, None, lambda *a, **k: None)
    assert abs(clock.t - deadline) <= 1.01 * BS / 80  # ends within one batch of the deadline
    last_epoch = spy.batches[-1][0]
    assert b.plan.total == last_epoch + 1 and len(b.epochs) == b.plan.total
    assert b.epochs[-1]["batches"] < n  # the last epoch ended early, at the deadline
    rows = learn.recorder.values  # and its row is whole: fastai drops a cancelled training's loss
    assert len(rows) == b.plan.total and {len(r) for r in rows} == {4} and rows[-1][0] == pytest.approx(
        float(learn.smooth_loss))
    assert b.plan.total == 7 if not slow_epochs else b.plan.total < 7  # two slow epochs: fewer planned
    ps = spy.ps
    assert ps[-1] == pytest.approx(1.0, abs=1e-12) and all(q > p for p, q in zip(ps, ps[1:]))
    first = b.epochs[0]["plan_batches"]
    assert ps[:n] == pytest.approx([(i + 1) / first for i in range(n)])  # fastai's pct_train under the first plan
    for p, q in zip([0.0] + ps, ps):  # every step is (1 - p) / (batches left): p carries on when the plan changes
        left = (1 - p) / (q - p)
        assert left == pytest.approx(round(left), abs=1e-6) and round(left) >= 1
    if not slow_epochs:
        assert spy.lrs[-1] < 1e-3 / 100  # the last batch at the end of the cosine, as fit_one_cycle ends
    assert all(r["actual_s"] > 0 and r["planned_s"] > 0 for r in b.epochs)
    if slow_epochs:
        assert b.epochs[1]["actual_s"] == pytest.approx(3 * b.epochs[0]["actual_s"], rel=0.05)

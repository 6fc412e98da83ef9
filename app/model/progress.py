"""What a person sees while a Learner works: one rich bar per fit (a training phase, lr-find) or
per prediction pass, in place of fastprogress's bar and fastai's epoch table.

fastprogress writes carriage-return updates and flushes; under the command's rich live display
each flush became its own line (issue 24: ~37 lines an epoch in a real terminal). This callback
draws on the command's one rich Progress instead (core/progress.py): epochs done, the current
batch, the smoothed loss and the time left. The epoch's line is printed by the history logger
(training/callbacks.py HistoryCSV), on a terminal or not.
"""

from __future__ import annotations

import time

from fastai.callback.core import Callback

from ..core.progress import clock


class RichProgress(Callback):
    """One bar on `progress` for each fit or prediction pass, removed when it ends. A fit's label
    is `learn.phase_label` when set; its epoch count `learn.epochs_planned` when a time budget
    plans it as it goes, and its time left the budget's `learn.fit_deadline` (time.time())."""

    order = 65  # after the Recorder (50): its smoothed loss is this batch's

    def __init__(self, progress):
        self.progress, self.task = progress, None

    def before_fit(self):
        self.fitting = getattr(self.learn, "create_mbar", True)  # fastai's get_preds turns it off
        self.t0 = time.time()
        label = getattr(self.learn, "phase_label", "fit") if self.fitting else "predicting"
        self.task = self.progress.add_task(label, total=self._epochs() if self.fitting else 1, status="starting")

    def _epochs(self) -> int:
        return getattr(self.learn, "epochs_planned", None) or self.n_epoch

    def after_batch(self):
        if self.task is None:
            return
        n = max(1, len(self.dl))
        i = self.iter + 1
        if not self.fitting:
            done, total, what = i / n, 1, f"batch {i}/{n}"
        else:
            total = self._epochs()
            done = self.epoch + (i / n if self.training else 1.0)
            loss = float(self.smooth_loss) if self.training else None
            what = (f"epoch {self.epoch + 1}/{total} · {'train' if self.training else 'valid'} {i}/{n}"
                    + (f" · loss {loss:.4f}" if loss is not None else ""))
        left = self._left(done, total)
        self.progress.update(self.task, completed=min(done, total), total=total, status=f"{what} · {clock(left)} left")

    def _left(self, done: float, total: float) -> float | None:
        deadline = getattr(self.learn, "fit_deadline", None) if self.fitting else None
        if deadline:
            return max(0.0, deadline - time.time())
        spent = time.time() - self.t0
        return spent / done * (total - done) if done > 0 else None

    def after_fit(self):
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None

"""RichProgress on a real fastai Learner (real images): one bar per fit with the epoch, the batch,
the smoothed loss and the time left, one per prediction pass, each gone when it ends; and a
Learner the app builds has no fastprogress bar and no fastai epoch table left."""

from __future__ import annotations

import io

import pytest
import torch
from fastai.callback.core import Callback
from rich.console import Console

from app.core.config import TrainConfig
from app.core.progress import make_progress


class _Spy(Callback):
    """After RichProgress: what its bar says at every batch."""

    order = 66

    def __init__(self, progress):
        self.progress, self.seen = progress, []

    def after_batch(self):
        t = self.progress.tasks[-1]
        self.seen.append((t.description, t.completed, t.total, t.fields["status"], float(self.smooth_loss)))


@pytest.fixture(scope="module")
def dls(tiny_data):
    from app.data.cache import open_or_build, stored_size
    from app.data.loaders import cached_dls
    from app.data.scan import scan

    return cached_dls(open_or_build(scan(tiny_data), stored_size(64), log=lambda *_: None), TrainConfig(bs=8), 64)


def _learner(dls, tmp_path, progress):
    from app.model.learner import build

    return build(TrainConfig(size=64, bs=8), dls, tmp_path, torch.device("cpu"), lambda *a, **k: None,
                 progress=progress)


def test_one_bar_per_fit_says_epoch_batch_loss_and_time_left(dls, tmp_path):
    from fastai.callback.progress import ProgressCallback

    progress = make_progress(Console(file=io.StringIO(), force_terminal=True, width=150), enabled=True)
    learn = _learner(dls, tmp_path, progress)
    assert not any(isinstance(cb, ProgressCallback) for cb in learn.cbs)  # no fastprogress bar
    assert learn.logger.__name__ == "noop"  # no fastai epoch table
    spy = _Spy(progress)
    learn.phase_label = "one-cycle"
    with progress:
        learn.fit(2, 1e-4, cbs=[spy])
        assert progress.tasks == []  # the bar is gone when the fit ends
    n = len(dls.train)
    train = [s for s in spy.seen if "train" in s[3]]
    assert len(train) == 2 * n and {s[0] for s in spy.seen} == {"one-cycle"} and {s[2] for s in spy.seen} == {2}
    first, last = train[0], train[-1]
    assert first[3].startswith(f"epoch 1/2 · train 1/{n} · loss {first[4]:.4f} · ") and first[3].endswith(" left")
    assert last[3].startswith(f"epoch 2/2 · train {n}/{n}") and last[1] == pytest.approx(2.0)
    done = [s[1] for s in spy.seen]
    assert done == sorted(done)  # the bar only moves forward
    assert any("valid" in s[3] for s in spy.seen)

    spy.seen.clear()
    with progress:
        learn.get_preds(dl=dls.valid, cbs=[spy])
        assert progress.tasks == []
    assert [s[0] for s in spy.seen] == ["predicting"] * len(dls.valid)
    assert spy.seen[-1][3].startswith(f"batch {len(dls.valid)}/{len(dls.valid)}")


def test_a_planned_epoch_count_and_a_deadline_drive_the_bar(dls, tmp_path):
    """A time budget re-plans the epochs as it goes (learn.epochs_planned) and knows its deadline."""
    import re
    import time

    progress = make_progress(Console(file=io.StringIO(), force_terminal=True, width=150), enabled=True)
    learn = _learner(dls, tmp_path, progress)
    learn.epochs_planned, learn.fit_deadline = 7, time.time() + 3600
    spy = _Spy(progress)
    with progress:
        learn.fit(1, 1e-4, cbs=[spy])
    assert spy.seen[0][2] == 7 and spy.seen[0][3].startswith("epoch 1/7")
    assert re.search(r" (59:\d\d|1:00:00) left$", spy.seen[0][3])  # the deadline's, not a guess

"""What the benches time (model-only ceiling, a loader alone, fastai training in steady state). Every timed window
is synchronised the same way on an accelerator: once when it opens, once when it closes."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from ..core.device import sync


def command_line() -> str:
    return "python -m app " + " ".join(sys.argv[1:]) if sys.argv[0].endswith(("app", "__main__.py")) else ""


def private_cache(tmp: Path) -> None:
    """A cold, private cache for this bench: nothing of the user's is read or touched."""
    os.environ["APP_CACHE_DIR"] = str(tmp / "cache")


def ceiling(learn, size: int, bs: int, device, steps: int = 8, warmup: int = 2, precision: str = "auto") -> float:
    """Training img/s of the model alone: same model, loss, optimizer, precision and memory format."""
    import torch

    from ..core.device import autocast, resolve_precision

    precision = resolve_precision(precision, device)

    model, loss_fn = learn.model.to(device), learn.loss_func
    if learn.opt is None:
        learn.create_opt()
    x = torch.randn(bs, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, learn.dls.c, (bs,), device=device)
    model.to(memory_format=torch.channels_last).train()

    def step():
        with autocast(precision, device):
            loss = loss_fn(model(x), y)
        loss.backward()
        learn.opt.step()
        learn.opt.zero_grad()

    for _ in range(warmup):
        step()
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * bs / (time.perf_counter() - t)


def loader_alone(dl, device, max_batches: int = 40) -> float:
    n, t = 0, time.perf_counter()
    for i, (xb, _) in enumerate(dl):
        n += len(xb)
        if i + 1 >= max_batches:
            break
    sync(device)
    return n / (time.perf_counter() - t)


def transform_ms(dl, batches: int = 10, warmup: int = 2) -> dict:
    """Median milliseconds per batch of gathering a batch and of each of the loader's batch
    transforms (fastai's after_batch pipeline, as on the training split): where a loader's time goes."""
    import statistics

    times: dict[str, list[float]] = {}
    def epochs():  # as many passes over a small set as the count needs
        while True:
            dl.before_iter()
            yield from dl.create_batches(dl.get_idxs())
            dl.after_iter()

    batches_of = epochs()
    for _ in range(warmup + batches):
        t = time.perf_counter()
        x, _ = next(batches_of)
        times.setdefault("gather", []).append(time.perf_counter() - t)
        # not the validation-only ones (by class: fastai's affine keeps the last call's split_idx on the instance)
        for f in (f for f in dl.after_batch.fs if getattr(type(f), "split_idx", None) != 1):
            t = time.perf_counter()
            x = f(x, split_idx=0)
            times.setdefault(type(f).__name__, []).append(time.perf_counter() - t)
    batches_of.close()
    out = {k: round(1000 * statistics.median(v[warmup:]), 2) for k, v in times.items()}
    out["total"] = round(sum(out.values()), 2)
    return out


def _timer(warmup: int):
    """A fastai callback timing the training passes after `warmup` batches (loading included):
    synchronised when the window opens and when it closes, never in between. Inside the window it
    also sums the seconds between one batch's end and the next one's before_batch (its order is
    last, so that is gathering, batch transforms and the channels_last copy): the loader's share of
    the same seconds, which a shared host's drift cannot split as it splits two separate timings."""
    from fastai.callback.core import Callback

    class Timer(Callback):
        order = 100

        def before_fit(self):
            self.n, self.t0, self.t1, self.t_fit, self.fetch_s = 0, None, None, time.perf_counter(), 0.0
            self.warmup = max(0, min(warmup, len(self.dls.train) - 2))  # at least one timed batch

        def before_batch(self):
            if self.training and self.iter > self.warmup:
                self.fetch_s += time.perf_counter() - self.ended

        def after_batch(self):
            if not self.training:
                return
            if self.iter == self.warmup:
                sync(self.dls.device)
                self.t0 = time.perf_counter()
            elif self.iter > self.warmup:
                self.n += len(self.yb[0])
            self.ended = time.perf_counter()

        def before_validate(self):
            sync(self.dls.device)
            self.t1 = time.perf_counter()

        def after_fit(self):
            self.fit_s = time.perf_counter() - self.t_fit

    return Timer()


def need_two_batches(dl, images: int, n_train: int, bs: int) -> None:
    """End-to-end rates time the batches after the first: with one batch, none would be timed."""
    if len(dl) < 2:
        from ..core.errors import UsageError

        raise UsageError(f"--images {images} gives {n_train} training images ({len(dl)} full batch(es) of --bs "
                         f"{bs}): the end-to-end timing needs at least 2 batches")


def train_speed(learn, epochs: int = 1, warmup: int = 3) -> dict:
    """fastai fit: training img/s in steady state (loading included), and of the whole fit."""
    timer = _timer(warmup)
    learn.fit(epochs, 1e-4, cbs=[timer])
    n_all = len(learn.dls.train) * learn.dls.train.bs * epochs
    window = timer.t1 - timer.t0
    return {"train_img_s": timer.n / window, "epoch_img_s": n_all / timer.fit_s, "loader_share": timer.fetch_s / window}


def decode_rates(root, size: int = 128, decoders=("torchvision", "pil")) -> dict:
    """img/s of building the decoded cache's pixels from `root`'s files with each decoder (nvJPEG
    on a GPU, PIL in worker processes), nothing written: which should be the default here."""
    from ..data.cache import decoded, stored_size
    from ..data.scan import scan

    paths = [str(it.path) for it in scan(root).items]
    out = {"images": len(paths)}
    for dec in decoders:
        t = time.perf_counter()
        bad = sum(isinstance(r, str) for r in decoded(paths, (stored_size(size),), decoder=dec))
        out[f"{dec}_img_s"] = len(paths) / (time.perf_counter() - t)
        out[f"{dec}_skipped"] = bad
    return out

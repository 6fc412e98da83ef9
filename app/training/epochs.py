"""The epochs a run makes, as pure functions of its settings: fine_tune's two phases (or one
fit_one_cycle), the image size of every epoch, and which epochs validate. Training, the
callbacks and the time-budget planner all read them here, so they agree on one count."""

from __future__ import annotations

from ..core.config import TrainConfig


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


def size_at(sched: list[tuple[int, int]], epoch: int) -> int:
    """The image size of `epoch` in a schedule [(first epoch, size), ...]."""
    return [s for e, s in sched if e <= epoch][-1] if epoch >= sched[0][0] else sched[0][1]


def sizes_per_epoch(cfg: TrainConfig) -> list[int]:
    total = total_epochs(cfg)
    sched = cfg.schedule(total)
    return [size_at(sched, e) for e in range(total)]


def validates(cfg: TrainConfig, epoch: int, total: int | None = None) -> bool:
    """Every `valid_every` epochs, at the last epoch of each image size, and at the last epoch."""
    total = total_epochs(cfg) if total is None else total
    ends = {e - 1 for e, _ in cfg.schedule(total) if e > 0} | {total - 1}
    return cfg.valid_every <= 1 or (epoch + 1) % cfg.valid_every == 0 or epoch in ends


def frozen_epochs(cfg: TrainConfig) -> int:
    """Epochs that train the head only (fine-tune's first phase)."""
    return sum(p["epochs"] for p in phases(cfg) if p["freeze"])

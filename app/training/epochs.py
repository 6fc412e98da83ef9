"""The epochs a run makes, as pure functions of its settings: fine_tune's two phases (or one
fit_one_cycle), the image size of every epoch, and which epochs validate. Training, the
callbacks and the time-budget planner all read them here, so they agree on one count."""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass
class EpochPlan:
    """The epochs as a time budget plans them now (training/keeper.py): every global epoch's image
    size (never going back down), which epochs validate, and how many batches the last one runs
    when it must end early at the deadline (None: all of them)."""

    sizes: list[int]
    valid: list[bool]
    final_iters: int | None = None

    @property
    def total(self) -> int:
        return len(self.sizes)

    def is_last(self, epoch: int) -> bool:
        return epoch == self.total - 1

    def to_dict(self) -> dict:
        return {"epochs": self.total, "sizes": self.sizes, "valid": self.valid, "final_iters": self.final_iters}

    @classmethod
    def from_dict(cls, d: dict) -> EpochPlan:
        return cls(list(d["sizes"]), list(d["valid"]), d.get("final_iters"))


def plan_epochs(cfg: TrainConfig, total: int, done: list[int]) -> EpochPlan:
    """`total` global epochs of `cfg`, the first len(done) already run at the sizes `done`: the
    others follow cfg's resizing schedule laid over `total`, never below the last size run, and
    the last epoch at the final size. Validation as `validates` says, on these sizes."""
    n_frozen = frozen_epochs(cfg)
    sched = sizes_per_epoch(cfg.replace(epochs=max(1, total - n_frozen)))[:total]
    sizes, floor = list(done), max(done, default=0)
    for s in sched[len(done):]:
        floor = max(floor, s)
        sizes.append(floor)
    if len(sizes) > len(done):
        sizes[-1] = cfg.size
    valid = [cfg.valid_every <= 1 or (e + 1) % cfg.valid_every == 0 or e == total - 1 or sizes[e + 1] != sizes[e]
             for e in range(total)]
    return EpochPlan(sizes, valid)

"""Where things live, and the training settings: one typed object, presets merged into it.

Defaults < preset < flags the user typed; the resolved object is written into every run
directory (config.json), so a run can be repeated, resumed and compared.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data" / "imagenette2-224"
MIN_SIZE = 64  # AlexNet + fastai head fails below 63 px ("Output size is too small")


def check_size(size: int) -> None:
    if size < MIN_SIZE:
        from .errors import AppError

        raise AppError(f"--size {size} is too small: AlexNet needs at least {MIN_SIZE} px", code=2)


def cache_root() -> Path:
    """Decoded-image caches and scan verdicts, outside the dataset (which may be read-only)."""
    env = os.environ.get("APP_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "alexnet-cli"


def runs_root() -> Path:
    return Path(os.environ.get("APP_RUNS_DIR", "runs"))


def models_root() -> Path:
    return Path(os.environ.get("APP_MODELS_DIR", "models"))


@dataclass
class TrainConfig:
    """Everything that decides what a training run does."""

    command: str = "fit-one-cycle"  # fit-one-cycle | fine-tune | lr-find
    preset: str = "none"
    data: str = ""
    weights: str = "none"  # none | imagenet | PATH (.pth state dict or bundle directory)
    epochs: int = 5
    freeze_epochs: int = 1
    lr: float = 1e-3
    size: int = 128  # final training and validation size
    # progressive resizing: "SIZE:FRACTION,..." of the epochs before `size`, e.g. "64:0.3,96:0.45"
    progressive: str = ""
    bs: int = 64
    seed: int = 42
    loader: str = "fast"  # fast | fastai
    label_smoothing: float = 0.0
    ps: float = 0.5  # dropout of fastai's head (its default)
    mixup: float = 0.0  # MixUp alpha (fastai MixUp); 0 = off
    clip: float = 0.0  # max gradient norm (fastai GradientClip); 0 = off
    wd: float = 0.01
    pct_start: float = 0.25
    valid_every: int = 1  # validate every N epochs (always at each size's last epoch and the last)
    min_scale: float = 1.0  # random-resized-crop: smallest crop side, as a fraction
    max_rotate: float = 10.0
    max_lighting: float = 0.2
    max_warp: float = 0.2
    cache_size: int = 0  # stored size of the decoded cache (0 = chosen from size)
    channels_last: bool = True
    compile: bool = False
    workers: int = -1  # DataBlock loader workers (-1 = fastai's default)
    device: str = "auto"
    lr_from: str = ""  # a run directory whose lr-find suggestion set `lr`
    extra: dict = field(default_factory=dict)

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def schedule(self, total_epochs: int) -> list[tuple[int, int]]:
        """[(first epoch, size), ...]: the progressive sizes, then `size` for the remaining epochs."""
        out, done = [], 0.0
        for size, frac in parse_progressive(self.progressive):
            out.append((int(round(done * total_epochs)), size))
            done += frac
        out.append((int(round(done * total_epochs)), self.size))
        return [(e, s) for i, (e, s) in enumerate(out) if i == len(out) - 1 or e < out[i + 1][0]]

    def scaled_progressive(self, size: int) -> str:
        """The same schedule for another final size (sizes below the minimum are dropped)."""
        parts = []
        for s, f in parse_progressive(self.progressive):
            new = int(round(s / self.size * size / 8) * 8)
            if MIN_SIZE <= new < size:
                parts.append(f"{new}:{f:g}")
        return ",".join(parts)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def parse_progressive(spec: str) -> list[tuple[int, float]]:
    """'64:0.3,96:0.45' -> [(64, 0.3), (96, 0.45)]; ValueError with the reason otherwise."""
    out = []
    for part in filter(None, (p.strip() for p in (spec or "").split(","))):
        try:
            size, frac = part.split(":")
            out.append((int(size), float(frac)))
        except ValueError:
            raise ValueError(f"bad progressive-resizing step {part!r} (expected SIZE:FRACTION)") from None
    if sum(f for _, f in out) >= 1 or any(f <= 0 for _, f in out):
        raise ValueError(f"progressive fractions must be positive and sum below 1: {spec!r}")
    return out


# Named recipes (see benchmarks/accuracy.md for how each was chosen and what it reached).
PRESETS: dict[str, dict] = {
    # fastai's defaults, the measured anchor: 128 px, 5 epochs, lr 1e-3, default augmentation.
    "fastai-default": dict(
        epochs=5, lr=1e-3, size=128, bs=64, loader="fastai", label_smoothing=0.0,
        min_scale=1.0, pct_start=0.25, wd=0.01, channels_last=False,
    ),
    # 2-core CPU, random init, <= 15 minutes all included.
    "cpu-quick": dict(
        epochs=19, lr=1e-3, size=128, progressive="64:0.42,96:0.42", bs=64, ps=0.1,
        loader="fast", label_smoothing=0.1, min_scale=0.6, max_rotate=5.0, max_warp=0.0, max_lighting=0.0,
        pct_start=0.25, wd=0.01, valid_every=4,
    ),
    # One modern GPU, random init: many short epochs at full resolution.
    "gpu-fast": dict(
        epochs=40, lr=4e-3, size=160, progressive="128:0.5", bs=256,
        loader="fast", label_smoothing=0.1, min_scale=0.3, pct_start=0.25, wd=0.05,
    ),
    # ImageNet (or user-supplied) weights: fastai fine_tune practice.
    "finetune": dict(
        command="fine-tune", epochs=8, freeze_epochs=2, lr=2e-3, size=224, progressive="160:0.5",
        bs=64, loader="fast", label_smoothing=0.1, min_scale=0.5,
        pct_start=0.3, wd=0.01,
    ),
}


def auto_preset(weights: str, cuda: bool) -> str:
    if weights != "none":
        return "finetune"
    return "gpu-fast" if cuda else "cpu-quick"

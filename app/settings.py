"""Where things live, what the environment asks for, and the training settings: one typed object,
presets merged into it by one rule.

Defaults < preset < flags the user typed (`resolve`); the resolved object is written into every
run directory (config.json), so a run can be repeated, resumed and compared. Every environment
variable the app reads is read here or in distributed.py (the launcher's WORLD_SIZE, RANK, ...).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data" / "imagenette2-224"
MIN_SIZE = 64  # AlexNet + fastai head fails below 63 px ("Output size is too small")

# ------------------------------------------------------------------ the environment


def cache_root() -> Path:
    """Decoded-image caches and scan verdicts, outside the dataset (which may be read-only)."""
    env = os.environ.get("APP_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "alexnet-cli"


def dataset_cache_dir(root: str | Path) -> Path:
    """One folder per dataset (by its resolved path) under cache_root(): its caches and verdicts."""
    root = Path(root).resolve()
    key = hashlib.sha1(str(root).encode()).hexdigest()[:12]
    return cache_root() / f"{root.name}-{key}"


def runs_root() -> Path:
    return Path(os.environ.get("APP_RUNS_DIR", "runs"))


def models_root() -> Path:
    return Path(os.environ.get("APP_MODELS_DIR", "models"))


def show_progress(stream=None) -> bool:
    """Progress bars: APP_PROGRESS=1 shows them, =0 hides them; unset, only on a terminal."""
    env = os.environ.get("APP_PROGRESS")
    if env in ("0", "1"):
        return env == "1"
    return (stream or sys.stdout).isatty()


def console_width(stream) -> int | None:
    """Piped output (logs, CI, files) gets wide tables, not rich's 80-column default; COLUMNS wins."""
    return None if stream.isatty() or os.environ.get("COLUMNS") else 160


def debug() -> bool:
    """APP_DEBUG=1: tracebacks instead of one-line errors."""
    return bool(os.environ.get("APP_DEBUG"))


# ------------------------------------------------------------------ training settings

LOADERS = {"cached": "cached", "datablock": "datablock", "fast": "cached", "fastai": "datablock"}


@dataclass
class TrainConfig:
    """Everything that decides what a training run does."""

    command: str = "fit-one-cycle"  # fit-one-cycle | fine-tune | lr-find
    preset: str = "none"
    data: str = ""
    weights: str = "none"  # none | imagenet | PATH (.pth state dict or bundle directory)
    body_layers: int = 0  # pretrained weights: keep only the first N of AlexNet's 5 convolutions (0 = all)
    epochs: int = 5
    freeze_epochs: int = 1
    min_freeze_steps: int = 0  # fine-tune: the frozen phase runs at least this many optimizer steps
    lr: float = 1e-3
    size: int = 128  # final training and validation size
    # progressive resizing: "SIZE:FRACTION,..." of the epochs before `size`, e.g. "64:0.3,96:0.45"
    progressive: str = ""
    bs: int = 64
    seed: int = 42
    loader: str = "cached"  # cached (decoded cache, batch augmentation on the device) | datablock (fastai's)
    label_smoothing: float = 0.0
    head_dropout: float = 0.5  # dropout of fastai's head (its `ps`, default 0.5)
    mixup: float = 0.0  # MixUp alpha (fastai MixUp); 0 = off
    clip: float = 0.0  # max gradient norm (fastai GradientClip); 0 = off
    wd: float = 0.01
    pct_start: float = 0.25
    valid_every: int = 1  # validate every N epochs (always at each size's last epoch and the last)
    min_scale: float = 1.0  # random-resized-crop: smallest crop area, as a fraction
    max_rotate: float = 10.0
    max_lighting: float = 0.2
    max_warp: float = 0.2
    channels_last: bool = True
    compile: bool = False
    workers: int = -1  # DataBlock loader worker processes (-1 = fastai's default)
    device: str = "auto"
    lr_from: str = ""  # a run directory whose lr-find suggestion set `lr`
    time: float = 0.0  # minutes for the whole command (0 = the preset's epochs); see budget.py
    max_epochs: int = 0  # with `time`: the most epochs a fast machine may plan (0 = 3 x the preset's)

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

    def sizes(self) -> list[int]:
        """Every image size the run trains at, smallest first."""
        return [s for s, _ in parse_progressive(self.progressive)] + [self.size]

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
        """Also reads runs written before a setting was renamed (ps, loader fast/fastai)."""
        d = dict(d)
        if "ps" in d:
            d.setdefault("head_dropout", d.pop("ps"))
        if "loader" in d:
            d["loader"] = LOADERS.get(d["loader"], d["loader"])
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


def check_sizes(cfg: TrainConfig) -> None:
    """Every size the run will use is one AlexNet can take (its last pooling needs 63 px)."""
    for size in cfg.sizes():
        if size < MIN_SIZE:
            raise UsageError(f"--size {size} is too small: AlexNet needs at least {MIN_SIZE} px")


# Named recipes (see benchmarks/accuracy.md for how each was chosen and what it reached).
PRESETS: dict[str, dict] = {
    # fastai's defaults, the measured anchor: 128 px, 5 epochs, lr 1e-3, default augmentation.
    "fastai-default": dict(
        epochs=5, lr=1e-3, size=128, bs=64, loader="datablock", label_smoothing=0.0,
        min_scale=1.0, pct_start=0.25, wd=0.01, channels_last=False,
    ),
    # 2-core CPU, random init, <= 15 minutes all included.
    "cpu-quick": dict(
        epochs=19, lr=1e-3, size=128, progressive="64:0.42,96:0.42", bs=64, head_dropout=0.1,
        loader="cached", label_smoothing=0.1, min_scale=0.6, max_rotate=5.0, max_warp=0.0, max_lighting=0.0,
        pct_start=0.25, wd=0.01, valid_every=4,
    ),
    # One modern GPU, random init: many short epochs at full resolution. lr 2e-3 is the CPU recipe's
    # 1e-3 at bs 64 scaled by sqrt(256 / 64) (linear scaling gives 4e-3, and 2.5e-3 at bs 64 already
    # left this BatchNorm-free body at chance on the CPU); clipping at norm 10 guards the peak.
    "gpu-fast": dict(
        epochs=40, lr=2e-3, size=160, progressive="128:0.5", bs=256, clip=10.0,
        loader="cached", label_smoothing=0.1, min_scale=0.3, pct_start=0.25, wd=0.05,
    ),
    # Pretrained weights on a 2-core CPU, <= 10 minutes: a short fine_tune at a small size (1 frozen +
    # 2 unfrozen epochs at 128 px; timed with a torchvision-format state dict, benchmarks/finetune-cpu.json).
    "cpu-finetune": dict(
        command="fine-tune", epochs=2, freeze_epochs=1, lr=2e-3, size=128, bs=64, loader="cached",
        label_smoothing=0.1, min_scale=0.5, max_rotate=5.0, max_warp=0.0, pct_start=0.3, wd=0.01,
    ),
    # ImageNet (or user-supplied) weights on a GPU: fastai fine_tune practice.
    "finetune": dict(
        command="fine-tune", epochs=8, freeze_epochs=2, lr=2e-3, size=224, progressive="160:0.5",
        bs=64, loader="cached", label_smoothing=0.1, min_scale=0.5,
        pct_start=0.3, wd=0.01,
    ),
}
PRESET_NAMES = ["auto", *PRESETS]


def choose_preset(preset: str, weights: str, cuda: bool) -> str:
    """`auto`: the recipe for these weights on this device."""
    if preset != "auto":
        if preset not in PRESETS and preset != "none":
            raise UsageError(f"unknown preset {preset!r}; choose from {', '.join(PRESET_NAMES)}")
        return preset
    if weights != "none":
        return "finetune" if cuda else "cpu-finetune"
    return "gpu-fast" if cuda else "cpu-quick"


def fit_size_to_images(cfg: TrainConfig, side: int) -> TrainConfig:
    """Images smaller than the recipe's size are not upscaled past what they hold: the final size
    becomes their median shorter side (to a multiple of 8, at least AlexNet's 64 px), the progressive
    sizes scaled with it. The recipe keeps its epochs' worth of time for more epochs."""
    if not side or side >= cfg.size:
        return cfg
    size = max(MIN_SIZE, int(round(side / 8)) * 8)
    return cfg.replace(size=size, progressive=cfg.scaled_progressive(size))


MAIN_JOB_MINUTES_CPU = 15.0  # `train` on a CPU keeps this promise unless --time says otherwise


def resolve(command: str, preset: str = "auto", weights: str = "none", cuda: bool = False, **flags) -> TrainConfig:
    """Defaults < preset < the flags the user typed (None = not typed). Pure: no I/O.
    `train` runs the command its preset names (fine-tune for the fine-tuning presets)."""
    preset = choose_preset(preset, weights, cuda)
    values = dict(PRESETS.get(preset, {}))
    if command == "train":
        command = values.get("command", "fit-one-cycle")
        if flags.get("time") is None and flags.get("epochs") is None and not cuda:
            flags = {**flags, "time": MAIN_JOB_MINUTES_CPU}
    values.pop("command", None)
    if flags.get("time") and flags.get("epochs") is not None:
        raise UsageError("--time plans the epochs for this machine: give --time or --epochs, not both")
    cfg = TrainConfig(command=command, preset=preset, weights=weights).replace(**values)
    given = {k: (str(v) if isinstance(v, Path) else v) for k, v in flags.items() if v is not None}
    if "loader" in given:
        if given["loader"] not in LOADERS:
            raise UsageError(f"unknown --loader {given['loader']!r} (choose cached or datablock)")
        given["loader"] = LOADERS[given["loader"]]
    if "size" in given and "progressive" not in given:  # keep the preset's resizing ratios
        given["progressive"] = cfg.scaled_progressive(given["size"])
    if given.get("progressive") == "none":
        given["progressive"] = ""
    try:
        parse_progressive(given.get("progressive", cfg.progressive))
    except ValueError as e:
        raise UsageError(f"--progressive: {e}") from None
    cfg = cfg.replace(**given)
    check_sizes(cfg)
    return cfg

"""The training settings as one typed object (TrainConfig, a pydantic model), with the rules any
layer may check (image sizes AlexNet can take, progressive-resizing specs). Presets and the merge
rule that fills it (and reads a settings file, `train --config`) live in training/presets.py."""

from __future__ import annotations

import difflib

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import UsageError

MIN_SIZE = 64  # AlexNet + fastai head fails below 63 px ("Output size is too small")
# the decoded cache stores CACHE_ROOM x a training size (room for random crops), up to CACHE_MAX px:
# a test size up to that room needs no upsampling of it
CACHE_ROOM, CACHE_MAX = 1.25, 224
# AlexNet's three max-pools cover their whole maps only at multiples of 32 px (64, 96, 128, 160, ...);
# at 144 px, say, the last pool drops the last row and column of conv5's 8 x 8 map (tests/core/test_config.py)
POOL_STRIDE = 32


LOADERS = {"cached": "cached", "datablock": "datablock", "fast": "cached", "fastai": "datablock"}


class TrainConfig(BaseModel):
    """Everything that decides what a training run does. Strict types (a run's config.json and a
    settings file are checked field by field); `replace` copies without checking, as code passes
    values it already typed."""

    model_config = ConfigDict(strict=True, extra="forbid")

    command: str = "fit-one-cycle"  # fit-one-cycle | fine-tune | lr-find
    preset: str = "none"
    data: str = ""
    # --labels FILE.csv (fname,label[,is_valid]); "" = the folders say the classes. A run stores it
    # relative to `data` when it lies inside it, so the dataset can move with its CSV.
    labels: str = ""
    layout: str = "auto"  # --layout: auto | split-folders | class-folders (how the folders are read)
    label_delim: str = ""  # --label-delim: a multi-label CSV's delimiter ("" = ; or | when the file has them)
    valid_pct: float = 0.2  # the validation share where the layout gives no split (drawn file by file)
    split_seed: int = 42  # the seed of that draw (fixed: every command draws the same files)
    split_rule: int = 2  # how the split is drawn (data/layout.py SPLIT_RULE); runs before it: 1
    balance: str = "none"  # none | weights (class weights in the loss) | sampler (fastai's weighted DataLoader)
    resize: str = "crop"  # crop | squish | pad: fastai's ResizeMethod, the same in training, evaluation and export
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
    # validation, evaluation and the exports see images at up to size x test_scale (test_size())
    test_scale: float = 1.0
    valid_every: int = 1  # validate every N epochs (always at each size's last epoch and the last)
    min_scale: float = 1.0  # random-resized-crop: smallest crop area, as a fraction
    max_rotate: float = 10.0
    max_lighting: float = 0.2
    max_warp: float = 0.2
    channels_last: bool = True
    precision: str = "auto"  # auto | fp32 | bf16 (fp16: a GPU without bf16); resolved when a run opens
    compile: bool = False
    workers: int = -1  # DataBlock loader worker processes (-1 = fastai's default)
    device: str = "auto"
    lr_from: str = ""  # a run directory whose lr-find suggestion set `lr`
    time: float = 0.0  # minutes for the whole command (0 = the preset's epochs); see training/budget.py
    max_epochs: int = 0  # with `time`: the most epochs a fast machine may plan (0 = 3 x the preset's)

    def replace(self, **changes) -> TrainConfig:
        unknown = sorted(set(changes) - set(type(self).model_fields))
        if unknown:
            raise TypeError(f"TrainConfig has no setting {', '.join(unknown)}")
        return self.model_copy(update=changes)

    def schedule(self, total_epochs: int) -> list[tuple[int, int]]:
        """[(first epoch, size), ...]: the progressive sizes, then `size` for the remaining epochs."""
        out, done = [], 0.0
        for size, frac in parse_progressive(self.progressive):
            out.append((int(round(done * total_epochs)), size))
            done += frac
        out.append((int(round(done * total_epochs)), self.size))
        return [(e, s) for i, (e, s) in enumerate(out) if i == len(out) - 1 or e < out[i + 1][0]]

    def test_size(self, size: int | None = None) -> int:
        """The size validation, evaluation and the exports use for a training size (`size` by default).
        Random-resized crops zoom in, so objects look bigger in training than in a whole image at
        the same size; the model then sees a whole image best a little larger (FixRes, Touvron et
        al. 2019): 160 px for cpu-quick's 128, +1.0 and +1.55 points on two 15-minute runs."""
        return test_size_for(self.size if size is None else size, self.test_scale)

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

    def shrunk_progressive(self, share: float) -> str:
        """The same sizes with `share` of their fractions of the epochs (0: every epoch at `size`)."""
        return ",".join(f"{s}:{f * share:.6g}" for s, f in parse_progressive(self.progressive) if f * share > 0)

    def to_dict(self) -> dict:
        return self.model_dump()

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """A run's config.json: strict types; runs written before a setting was renamed (ps, loader
        fast/fastai) still read, and settings no longer known are left out. ValueError: one line."""
        d = {"split_rule": 1, **renamed(d)}  # a run written before the split rule was recorded drew with rule 1
        cfg = validated(cls, {k: v for k, v in d.items() if k in cls.model_fields}, strict=True)
        parse_progressive(cfg.progressive)
        return cfg


def renamed(d: dict) -> dict:
    """Settings under the names they had before: `ps` is head_dropout, loaders fast and fastai."""
    d = dict(d)
    if "ps" in d:
        d.setdefault("head_dropout", d.pop("ps"))
    if "loader" in d:
        d["loader"] = LOADERS.get(d["loader"], d["loader"])
    return d


# pydantic's error types in the words the one-line errors use
_EXPECTED = {"int_type": "a whole number", "int_from_float": "a whole number", "int_parsing": "a whole number",
             "float_type": "a number", "float_parsing": "a number", "string_type": "text",
             "bool_type": "true or false", "bool_parsing": "true or false"}


def validated(cls, values: dict, strict: bool):
    """cls(**values) checked by pydantic; the first problem as one line (ValueError)."""
    try:
        return cls.model_validate(values, strict=strict)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(map(str, err["loc"])) or "settings"
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(key, list(cls.model_fields), n=1)
            raise ValueError(f"{key} is not a setting" + (f" (did you mean {close[0]}?)" if close else "")) from None
        what = _EXPECTED.get(err["type"], err["msg"].lower())
        raise ValueError(f"{key} is {err.get('input')!r}, expected {what}") from None


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


def test_size_for(size: int, scale: float) -> int:
    """The largest multiple of POOL_STRIDE above `size` and at most size x scale, inside the decoded
    cache's room for `size` (its stored size: CACHE_ROOM x it, at most CACHE_MAX); else `size`.
    A size between two multiples scored worse than the training size itself (benchmarks/runs/
    test-sizes-amx.json: 136-152 px against 128 and 160)."""
    room = min(size * scale, max(size, CACHE_MAX))
    best = int(room // POOL_STRIDE) * POOL_STRIDE
    return best if best > size else size


def check_sizes(cfg: TrainConfig) -> None:
    """Every size the run will use is one AlexNet can take (its last pooling needs 63 px), and the
    test scale one the decoded cache has room for."""
    for size in cfg.sizes():
        if size < MIN_SIZE:
            raise UsageError(f"--size {size} is too small: AlexNet needs at least {MIN_SIZE} px")
    if not 1 <= cfg.test_scale <= CACHE_ROOM:
        raise UsageError(f"--test-scale {cfg.test_scale:g} is out of range: from 1 to {CACHE_ROOM:g} (the decoded "
                         f"cache keeps {CACHE_ROOM:g}x the training size; more would upsample it)")

"""Named recipes and the one merge rule: defaults < preset < the flags the user typed (`resolve`).

The resolved TrainConfig is written into every run directory (config.json), so a run can be
repeated, resumed and compared. `auto` picks the recipe for the weights and the training device."""

from __future__ import annotations

from pathlib import Path

from ..core.config import LOADERS, MIN_SIZE, TrainConfig, check_sizes, parse_progressive
from ..core.device import PRECISIONS
from ..core.errors import UsageError

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
        pct_start=0.25, wd=0.01, valid_every=4, test_scale=1.25,
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
        max_epochs=19,  # under --time: up to cpu-quick's 19 epochs, not 3 x 2 (which left 2/3 of 15 min unused)
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
    if given.get("precision", "auto") not in PRECISIONS:
        raise UsageError(f"unknown --precision {given['precision']!r} (choose {', '.join(PRECISIONS)})")
    if given.get("progressive") == "none":
        given["progressive"] = ""
    try:
        parse_progressive(given.get("progressive", cfg.progressive))
    except ValueError as e:
        raise UsageError(f"--progressive: {e}") from None
    cfg = cfg.replace(**given)
    check_sizes(cfg)
    return cfg


class SettingsFile(TrainConfig):
    """What `train --config FILE` may hold: the training flags (dashes or underscores) and every
    setting a run's config.json records, plus what happens at the end and the trackers."""

    tta: bool = False
    export: bool = True
    evaluate: bool = True
    track: list[str] | str = []


def read_settings(path) -> dict:
    """A settings file as flags: a run's config.json (its recorded settings, checked as any run's
    are; an lr-find source and a time plan's epochs left out, as they were resolved from elsewhere)
    or a YAML/JSON file written by hand (types as on the command line: `lr: 1e-3` is a number).
    Every problem is one line (exit 2)."""
    import yaml

    from ..core.config import renamed, validated

    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--config {p}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        raise UsageError(f"--config {p}: not YAML or JSON" + (f" (line {where.line + 1})" if where else "")) from None
    if not isinstance(raw, dict):
        raise UsageError(f"--config {p}: expected settings as `key: value` lines, found {type(raw).__name__}")
    try:
        if isinstance(raw.get("config"), dict):  # a run's config.json
            return _recorded(raw)
        values = renamed({str(k).replace("-", "_"): v for k, v in raw.items()})
        checked = validated(SettingsFile, values, strict=False)
        if checked.progressive != "none":
            parse_progressive(checked.progressive)
    except ValueError as e:
        raise UsageError(f"--config {p}: {e}") from None
    return {k: getattr(checked, k) for k in values}


def _recorded(meta: dict) -> dict:
    """A run's recorded settings as flags, with how it finished and what it tracked."""
    cfg = TrainConfig.from_dict(meta["config"]).to_dict()
    cfg.pop("lr_from")  # its lr is recorded: the lr-find run it came from is not needed (nor read) again
    if cfg.get("time"):  # a time budget plans its epochs again on this machine, from the preset's
        cfg.pop("epochs")
    finish = {k: v for k, v in (meta.get("finish") or {}).items() if k in ("tta",) and isinstance(v, bool)}
    return {**cfg, **finish, "track": list(meta.get("track") or [])}


def with_settings_file(path, typed: dict) -> dict:
    """`train --config FILE` and the flags typed beside it: the file's settings as if typed, the
    typed ones over them (a typed --epochs replaces the file's --time and the other way round)."""
    settings = read_settings(path)
    if typed.get("epochs") is not None:
        settings.pop("time", None)
    if typed.get("time") is not None:
        settings.pop("epochs", None)
    settings.update(typed)
    if "command" in settings:  # the phases the recipe runs (train's own are its preset's)
        settings["recipe_command"] = settings.pop("command")
        if settings["recipe_command"] not in ("fit-one-cycle", "fine-tune"):
            raise UsageError(f"--config {path}: command {settings['recipe_command']!r} is not a training command "
                             "(fit-one-cycle or fine-tune)")
    return settings

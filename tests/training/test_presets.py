"""The merge rule (defaults < preset < typed flags) and the preset each machine and weights get,
as pure functions: no data, no torch."""

import pytest

from app.core.config import TrainConfig
from app.core.errors import UsageError
from app.training.presets import PRESETS, choose_preset, resolve


def test_flags_beat_the_preset_which_beats_the_defaults():
    cfg = resolve("fit-one-cycle", "cpu-quick", "none", cuda=False, lr=3e-4, epochs=None)
    assert cfg.lr == 3e-4  # typed
    assert cfg.epochs == PRESETS["cpu-quick"]["epochs"] and cfg.head_dropout == 0.1  # the preset's
    assert cfg.max_rotate == 5.0 and cfg.mixup == TrainConfig().mixup  # preset's, then the default
    assert cfg.command == "fit-one-cycle" and cfg.preset == "cpu-quick"


def test_auto_picks_the_recipe_for_the_device_and_the_weights():
    assert choose_preset("auto", "none", cuda=False) == "cpu-quick"
    assert choose_preset("auto", "none", cuda=True) == "gpu-fast"
    assert choose_preset("auto", "imagenet", cuda=False) == "cpu-finetune"
    assert choose_preset("auto", "/w/alexnet.pth", cuda=True) == "finetune"
    with pytest.raises(UsageError, match="unknown preset 'fast'"):
        choose_preset("fast", "none", cuda=False)


def test_train_runs_its_presets_command_and_a_cpu_budget():
    cpu = resolve("train", "auto", "imagenet", cuda=False)
    assert cpu.command == "fine-tune" and cpu.preset == "cpu-finetune" and cpu.time == 15
    gpu = resolve("train", "auto", "none", cuda=True)
    assert gpu.command == "fit-one-cycle" and gpu.preset == "gpu-fast" and gpu.time == 0
    fixed = resolve("train", "auto", "none", cuda=False, epochs=3)  # epochs typed: no budget
    assert fixed.epochs == 3 and fixed.time == 0


def test_size_keeps_the_presets_resizing_ratios_and_sizes_are_checked_once():
    cfg = resolve("fit-one-cycle", "cpu-quick", "none", size=256)
    assert cfg.progressive == "128:0.42,192:0.42"
    assert resolve("fit-one-cycle", "cpu-quick", "none", size=96).progressive == "72:0.42"  # 48 px dropped
    assert resolve("fit-one-cycle", "cpu-quick", "none", progressive="none").progressive == ""
    with pytest.raises(UsageError, match="--size 32 is too small"):
        resolve("fit-one-cycle", "cpu-quick", "none", size=32, progressive="none")
    with pytest.raises(UsageError, match="--size 48 is too small"):
        resolve("fit-one-cycle", "none", "none", size=128, progressive="48:0.5")
    with pytest.raises(UsageError, match="--progressive"):
        resolve("fit-one-cycle", "none", "none", progressive="64:0.6,96:0.6")


def test_cpu_quick_validates_and_ships_at_a_quarter_above_its_training_size():
    """Issue 29: cpu-quick trains on random-resized crops and is judged (and exported) on whole images
    up to 1.25x larger, the decoded cache's room, at a size AlexNet's pools cover: 160 px for 128, and
    96 and 64 stay (120 and 80 are no such size); a typed --test-scale wins and one past that room is
    a one-line usage error."""
    cfg = resolve("fit-one-cycle", "cpu-quick", "none")
    assert (cfg.size, cfg.test_size(), cfg.test_size(96), cfg.test_size(64)) == (128, 160, 96, 64)
    assert resolve("fit-one-cycle", "cpu-quick", "none", size=160).test_size() == 192
    assert resolve("fit-one-cycle", "cpu-quick", "none", test_scale=1.0).test_size() == 128
    assert resolve("fit-one-cycle", "fastai-default", "none").test_size() == 128  # the anchor keeps fastai's
    for bad in (1.5, 0.8):
        with pytest.raises(UsageError, match=f"--test-scale {bad:g} is out of range: from 1 to 1.25"):
            resolve("fit-one-cycle", "cpu-quick", "none", test_scale=bad)


def test_loader_names_and_old_runs():
    assert resolve("fit-one-cycle", "none", "none", loader="fast").loader == "cached"
    assert resolve("fit-one-cycle", "none", "none", loader="datablock").loader == "datablock"
    with pytest.raises(UsageError, match="unknown --loader"):
        resolve("fit-one-cycle", "none", "none", loader="turbo")
    old = TrainConfig.from_dict({"ps": 0.25, "loader": "fastai", "gone_setting": 1})
    assert old.head_dropout == 0.25 and old.loader == "datablock"


def test_small_images_are_not_upscaled_past_what_they_hold():
    from app.training.presets import fit_size_to_images

    cfg = resolve("fit-one-cycle", "cpu-quick", "none")
    assert fit_size_to_images(cfg, 500) == cfg  # big enough: the recipe as it is
    small = fit_size_to_images(cfg, 100)
    assert small.size == 96 and small.progressive == "72:0.42"
    tiny = fit_size_to_images(cfg, 28)
    assert tiny.size == 64 and tiny.progressive == "" and tiny.epochs == cfg.epochs

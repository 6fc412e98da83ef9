"""A run's config.json is checked as it is read back (--resume, evaluate, export, review): a value of
the wrong type is one line naming the file and the setting, never a crash later."""

import json

import pytest

from ..conftest import assert_one_line_error, run_cli


@pytest.mark.parametrize("key,value,words", [("size", "64", "expected a whole number"),
                                             ("progressive", "abc", "SIZE:FRACTION"),
                                             ("lr", [1e-3], "expected a number"),
                                             ("compile", "yes", "true or false")])
def test_a_config_of_the_wrong_types_is_one_line(tiny_data, tmp_path, key, value, words):
    run = tmp_path / "run"
    (run / "models").mkdir(parents=True)
    cfg = {"command": "fit-one-cycle", "data": str(tiny_data), "epochs": 2, "size": 64, key: value}
    (run / "config.json").write_text(json.dumps({"config": cfg, "classes": ["a", "b"], "status": "interrupted"}))
    for args in (["fit-one-cycle", "--resume", run], ["evaluate", run], ["export", run]):
        assert_one_line_error(run_cli(*args), 5, "config.json", key, words)


def test_a_config_that_is_not_an_object_is_one_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("[1, 2]")
    assert_one_line_error(run_cli("fit-one-cycle", "--resume", run), 5, "config.json")


# TrainConfig as a pydantic model (in this process: no interpreter start per case)


def test_train_config_keeps_its_interface():
    from app.core.config import TrainConfig

    cfg = TrainConfig(size=128, progressive="64:0.35,96:0.41", epochs=10)
    assert cfg.schedule(10) == [(0, 64), (4, 96), (8, 128)] and cfg.sizes() == [64, 96, 128]
    again = cfg.replace(lr=2e-3, epochs=3)
    assert (again.lr, again.epochs, cfg.lr, cfg.epochs) == (2e-3, 3, 1e-3, 10)  # a copy; the first unchanged
    assert TrainConfig.from_dict(again.to_dict()) == again and list(again.to_dict())[:3] == ["command", "preset", "data"]
    with pytest.raises(TypeError, match="no setting lrr"):
        cfg.replace(lrr=1)
    with pytest.raises(ValueError):
        TrainConfig(size="64")  # strict: a string is not a size
    assert TrainConfig(lr=1).lr == 1.0 and isinstance(TrainConfig(lr=1).lr, float)


def _pools_drop(size: int) -> int:
    """Rows of a feature map that one of torchvision AlexNet's max-pools leaves out at `size` px."""
    import torch
    import torchvision

    x, dropped = torch.zeros(1, 3, size, size), 0
    for layer in torchvision.models.alexnet().features:
        n, x = x.shape[-1], layer(x)
        if isinstance(layer, torch.nn.MaxPool2d):
            dropped += n - (2 * x.shape[-1] + 1)  # kernel 3, stride 2: k outputs read 2k + 1 rows
    return dropped


def test_the_test_size_is_one_where_alexnets_pools_cover_the_image_inside_the_caches_room():
    """The sizes a test size may take are those where torch's own AlexNet drops no row in any
    max-pool (multiples of 32); 144 px, say, drops one: measured 1-2.5 points below 128 and 160."""
    from app.core.config import test_size_for
    from app.data.cache import stored_size

    assert [s for s in range(64, 232, 8) if _pools_drop(s) == 0] == [64, 96, 128, 160, 192, 224]
    assert [test_size_for(s, 1.25) for s in (64, 96, 100, 128, 160, 192, 256)] == [64, 96, 100, 160, 192, 224, 256]
    assert [test_size_for(s, 1.0) for s in (64, 100, 128)] == [64, 100, 128]  # 1: the training size, as typed
    for s in range(64, 300):
        t = test_size_for(s, 1.25)
        assert t == s or (s < t <= min(1.25 * s, stored_size(s)) and _pools_drop(t) == 0), (s, t)


def test_a_config_json_written_before_still_reads(tmp_path):
    """Settings under their old names (ps, loader fast/fastai) and settings no longer known, as runs
    of earlier versions wrote them."""
    from app.core.rundir import load_config

    old = {"command": "fine-tune", "data": "/d", "epochs": 3, "size": 96, "ps": 0.25, "loader": "fastai",
           "gone_setting": 1, "lr": 0.002}
    (tmp_path / "config.json").write_text(json.dumps({"config": old, "classes": ["a"]}))
    cfg, meta = load_config(tmp_path)
    assert (cfg.head_dropout, cfg.loader, cfg.command, cfg.size, cfg.lr) == (0.25, "datablock", "fine-tune", 96, 0.002)
    assert not hasattr(cfg, "gone_setting") and meta["classes"] == ["a"]


@pytest.mark.parametrize("key,value,words", [("size", "64", "expected a whole number"), ("size", True, "whole number"),
                                             ("lr", [1e-3], "expected a number"), ("compile", 1, "true or false"),
                                             ("data", 3, "expected text")])
def test_a_config_of_the_wrong_types_is_one_line_in_process(tmp_path, capsys, key, value, words):
    from app.cli import main

    run = tmp_path / "run"
    (run / "models").mkdir(parents=True)
    cfg = {"command": "fit-one-cycle", "data": "/d", "epochs": 2, "size": 64, key: value}
    (run / "config.json").write_text(json.dumps({"config": cfg, "classes": ["a", "b"], "status": "interrupted"}))
    rc = main(["export", str(run)])
    out = capsys.readouterr()
    lines = [ln for ln in out.err.splitlines() if ln.strip()]
    assert rc == 5 and len(lines) == 1 and "Traceback" not in out.err, out.err
    assert "config.json" in lines[0] and f"{key} is {value!r}" in lines[0] and words in lines[0]

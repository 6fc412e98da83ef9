"""bench --transfer: the cached source (reused with the same data and recipe, rebuilt when either
changes, nothing half-made left by a failed build), the arms' equal budgets read back from their
runs, the draws, the JSON merge, and the one-line stop without a source dataset."""

import json
import os
import shutil

import pytest

from app.bench import transfer
from app.core.errors import DataError

from ..conftest import SHARED, assert_one_line_error, need_shared, run_cli

SOURCE = ["n02102040", "n02979186"]  # English springer, cassette player: not among the target's classes
TINY = dict(transfer.SOURCE_RECIPE, epochs=1, bs=8, valid_every=1)


@pytest.fixture(scope="module")
def source_data(tmp_path_factory):
    need_shared()
    from app.data.subset import make_subset

    return make_subset(SHARED, tmp_path_factory.mktemp("src") / "source", 8, 4, classes=SOURCE, seed=3)


@pytest.fixture(scope="module")
def built(source_data, tmp_path_factory):
    home = tmp_path_factory.mktemp("sources")
    return home, transfer.source_model(source_data, TINY, "cpu", log=lambda *_: None, home=home)


def _stamp(info) -> int:
    return os.stat(os.path.join(info["bundle"], "model.safetensors")).st_mtime_ns


def test_the_source_is_built_once_and_reused_for_the_same_data_and_recipe(built, source_data):
    home, first = built
    assert not first["reused"] and first["classes"] == 2 and first["train_images"] == 16
    assert first["n_val"] == 8 and 0 <= first["accuracy"] <= 1 and first["build_s"] > 0
    assert first["epochs"] == 1 and first["settings"]["size"] == 64
    assert (home / first["key"] / "bundle" / "model.json").is_file()
    assert not list(home.glob(".building-*"))  # the work folder was renamed into place
    again = transfer.source_model(source_data, TINY, "cpu", log=lambda *_: None, home=home)
    assert again["reused"] and again["key"] == first["key"] and again["bundle"] == first["bundle"]
    assert _stamp(again) == _stamp(first)  # the same file: nothing was trained or exported again


def test_the_source_is_rebuilt_when_its_data_or_its_recipe_changes(built, source_data, tmp_path):
    home, first = built
    recipe = transfer.source_model(source_data, {**TINY, "epochs": 2}, "cpu", log=lambda *_: None, home=home)
    assert not recipe["reused"] and recipe["key"] != first["key"] and recipe["epochs"] == 2
    changed = tmp_path / "source"
    shutil.copytree(source_data, changed)
    one = next((changed / "train" / SOURCE[0]).iterdir())
    shutil.copy2(one, one.with_name("extra_" + one.name))  # one more training image
    data = transfer.source_model(changed, TINY, "cpu", log=lambda *_: None, home=home)
    assert not data["reused"] and data["key"] not in (first["key"], recipe["key"]) and data["train_images"] == 17
    moved = transfer.source_model(changed, TINY, "cpu", log=lambda *_: None, home=home)
    assert moved["reused"] and moved["key"] == data["key"]  # the same files: found again, not rebuilt


def test_a_failed_build_leaves_no_source_behind(source_data, tmp_path, monkeypatch):
    def broken(cfg, out, *a, **k):  # killed mid-training, with part of the run written
        out.mkdir(parents=True)
        (out / "history.csv").write_text("epoch\n")
        raise KeyboardInterrupt

    monkeypatch.setattr(transfer, "_train", broken)
    with pytest.raises(KeyboardInterrupt):
        transfer.source_model(source_data, TINY, "cpu", log=lambda *_: None, home=tmp_path)
    assert list(tmp_path.iterdir()) == []  # no entry, no work folder: the next run builds it afresh


def test_draws_link_k_images_per_class_and_every_validation_image(tiny_data, tmp_path):
    a = transfer.draw(tiny_data, tmp_path / "a", 3, seed=0, val_from=tmp_path / "val")
    b = transfer.draw(tiny_data, tmp_path / "b", 3, seed=1, val_from=tmp_path / "val")
    classes = sorted(p.name for p in (tiny_data / "train").iterdir())
    for root in (a, b):
        assert sorted(p.name for p in (root / "train").iterdir()) == classes
        assert all(len(list((root / "train" / c).iterdir())) == 3 for c in classes)
        assert sorted(p.name for p in (root / "val").rglob("*.*")) == sorted(p.name for p in (tiny_data / "val").rglob("*.*"))
    picks = [sorted(p.name for p in (r / "train").rglob("*.*")) for r in (a, b)]
    assert picks[0] != picks[1]  # drawn again per seed
    v = next((a / "val").rglob("*.*"))
    assert os.stat(v).st_ino == os.stat(tmp_path / "val" / v.relative_to(a)).st_ino  # linked, not copied again
    every = transfer.draw(tiny_data, tmp_path / "all", "all", seed=0)
    assert len(list((every / "train").rglob("*.*"))) == len(list((tiny_data / "train").rglob("*.*")))


def test_the_arms_train_with_equal_budgets(built, tiny_data, tmp_path):
    _, source = built
    arms = transfer._arms()
    assert set(transfer._arms(body_layers=(2,))) == {*arms, "fine_tune_2_layers"}
    res = transfer.run_arms(tiny_data, source, (4,), 1, 3, arms, "cpu", tmp_path, log=lambda *_: None)
    row = res["runs"][0]
    assert row["train_images"] == 16 and row["val_images"] == 16 and row["classes"] == 4
    runs = [row[a] for a in arms]
    assert [r["epochs"] for r in runs] == [3, 3]  # history rows: the frozen epoch is one of the 3
    assert [r["frozen_epochs"] for r in runs] == [0, 1]
    assert [r["samples_seen"] for r in runs] == [3 * 16] * 2  # batches.csv: the same images, epochs and bs
    assert {tuple(r["sizes"]) for r in runs} == {(64,)} and {r["bs"] for r in runs} == {16}
    assert all(r["n_val"] == 16 for r in runs)
    assert len({r["lr"] for r in runs}) > 1  # each arm's own lr-find
    by_k = res["by_k"][0]
    assert by_k["fine_tune"]["gain"] == pytest.approx(row["fine_tune"]["accuracy"] - row["scratch"]["accuracy"])


def test_a_part_not_run_keeps_its_results_in_the_json(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"bench": "transfer", "arms": {"by_k": [1]}, "main_job": {"old": 1}}))
    res = transfer.merged(path, {"bench": "transfer", "main_job": {"new": 1}})
    assert res["arms"] == {"by_k": [1]} and res["main_job"] == {"new": 1} and res["kept_from_earlier"] == ["arms"]
    path.write_text(json.dumps({"bench": "speed", "arms": 1}))
    assert "arms" not in transfer.merged(path, {"bench": "transfer"})


def test_without_a_source_dataset_it_stops_in_one_line(tmp_path, monkeypatch):
    p = run_cli("bench", "--transfer", "--source-data", tmp_path / "missing", timeout=60)
    assert_one_line_error(p, 3, "no source dataset", str(tmp_path / "missing"), "--source-data")
    monkeypatch.setattr(transfer, "SHARED_SOURCE_DATA", tmp_path / "gone")  # the default beside the checkout
    with pytest.raises(DataError, match="Tiny ImageNet.*--source-data"):
        transfer.source_dataset(None)
    p = run_cli("bench", "--transfer", "--ks", "10,ten", timeout=60)
    assert_one_line_error(p, 2, "--ks")


def test_a_scratch_run_is_reused_only_when_it_is_that_run(tmp_path):
    """--scratch-run: a finished `train --weights none --time M` run on the target is read as the
    main job's first arm; any other run (another budget, other weights, unfinished, another dataset,
    no metrics) is one UsageError naming it."""
    import json

    import pytest

    from app.core.errors import UsageError

    data = tmp_path / "data"
    data.mkdir()
    run = tmp_path / "run"
    (run / "figures").mkdir(parents=True)
    meta = {"status": "finished", "weights_used": "none", "wall_seconds": 880.2, "fit_seconds": 846.6,
            "config": {"time": 15.0, "data": str(data), "epochs": 38, "size": 128, "preset": "cpu-quick"},
            "plan": {"summary": "s", "predicted_s": 888.0}}
    (run / "metrics.json").write_text(json.dumps({"accuracy": 0.8217, "f1_macro": 0.8216, "n": 3925}))
    for bad in ({"status": "running"}, {"weights_used": "imagenet"}, {"config": {**meta["config"], "time": 10.0}},
                {"config": {**meta["config"], "data": str(tmp_path)}}):
        (run / "config.json").write_text(json.dumps({**meta, **bad}))
        with pytest.raises(UsageError, match="--scratch-run"):
            transfer.finished_scratch(run, data, 15.0)
    (run / "config.json").write_text(json.dumps(meta))
    r = transfer.finished_scratch(run, data, 15.0)
    assert r["accuracy"] == 0.8217 and r["wall_s"] == 880.2 and r["epochs"] == 38 and not r["over_budget"]
    assert r["reused_from"] == str(run)
    (run / "metrics.json").unlink()
    with pytest.raises(UsageError, match="not a finished run"):
        transfer.finished_scratch(run, data, 15.0)


def test_a_build_killed_outright_is_swept_by_the_next_one(source_data, tmp_path):
    """SIGKILL runs no `finally`: the killed build's folder (.building-KEY-PID, a dead PID) stays
    until the next build removes it; a live process's folder is left alone."""
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".building-abc-{int(dead.stdout)}" / "run" / "source"
    live = tmp_path / f".building-abc-{os.getpid()}"
    stale.mkdir(parents=True)
    live.mkdir()
    got = transfer.source_model(source_data, TINY, "cpu", log=lambda *_: None, home=tmp_path)
    assert not stale.parent.parent.exists() and live.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, got["key"]])

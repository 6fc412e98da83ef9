"""The CLI as a user types it: the lr-find -> fine-tune -> export -> predict chain on real images,
--help everywhere, and every bad input answered with one line and its exit code."""

import csv
import json
from pathlib import Path

import pytest
import torch

from .conftest import ROOT, assert_one_line_error, assert_png, run_cli

COMMANDS = ["data", "lr-find", "fine-tune", "fit-one-cycle", "train", "evaluate", "report", "compare",
            "review", "export", "predict", "bench"]


@pytest.fixture(scope="session")
def torchvision_sd(tmp_path_factory):
    """A torchvision-format AlexNet state dict, as a user would bring with --weights PATH."""
    from torchvision.models import alexnet

    torch.manual_seed(123)
    path = tmp_path_factory.mktemp("weights") / "alexnet_sd.pth"
    torch.save(alexnet(weights=None).state_dict(), path)
    return path


@pytest.fixture(scope="session")
def chain(small_data, torchvision_sd, tmp_path_factory):
    """lr-find -> fine-tune -> export, each a new process; returns the paths they made."""
    base = tmp_path_factory.mktemp("chain")
    lf = base / "lrfind"
    p = run_cli("lr-find", "--data", small_data, "--size", 64, "--bs", 32, "--weights", torchvision_sd, "--out", lf,
                check=True)
    ft = base / "finetune"
    p2 = run_cli("fine-tune", "--data", small_data, "--lr-from", lf, "--freeze-epochs", 1, "--epochs", 2,
                 "--size", 64, "--bs", 32, "--weights", torchvision_sd, "--out", ft, check=True)
    pkl = base / "models" / "model.pkl"
    p3 = run_cli("export", ft, "--to", pkl, check=True)
    return {"lrfind": lf, "run": ft, "pkl": pkl, "bundle": pkl.with_suffix(""), "outs": (p, p2, p3)}


def test_help_shows_every_command_and_defaults():
    p = run_cli("--help", check=True)
    for c in COMMANDS:
        assert c in p.stdout
    for c in COMMANDS:
        h = run_cli(c, "--help", check=True).stdout
        assert "Usage" in h
    assert "default: 42" in run_cli("fit-one-cycle", "--help").stdout.replace("[", "").replace("]", "")
    assert "pickle" in run_cli("predict", "--help").stdout.lower()


def test_lr_find_writes_suggestions_plot_and_recommendation(chain):
    import math

    d = json.loads((chain["lrfind"] / "lr_find.json").read_text())
    assert set(d["suggestions"]) == {"valley", "slide", "minimum", "steep"}
    lrs, losses = d["lrs"], d["losses"]
    assert len(lrs) == len(losses) > 20 and all(a < b for a, b in zip(lrs, lrs[1:]))  # the sweep, rising
    assert all(math.isfinite(x) for x in losses)
    assert all(lrs[0] <= v <= lrs[-1] for v in d["suggestions"].values())  # suggestions lie on the curve
    assert d["recommended"] == max(d["suggestions"]["valley"], d["suggestions"]["minimum"] / 4)
    assert_png(chain["lrfind"] / "figures" / "10_lr_find.png")
    assert "recommended lr" in chain["outs"][0].stdout


def test_fine_tune_used_the_lr_and_wrote_a_complete_run(chain):
    run = chain["run"]
    cfg = json.loads((run / "config.json").read_text())
    rec = json.loads((chain["lrfind"] / "lr_find.json").read_text())["recommended"]
    assert cfg["config"]["lr"] == pytest.approx(rec)
    assert cfg["config"]["command"] == "fine-tune" and cfg["status"] == "finished"
    assert cfg["versions"]["fastai"] and cfg["device"] and cfg["seed"] == 42
    with open(run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert [r["phase"] for r in rows] == ["frozen", "unfrozen", "unfrozen"]
    m = json.loads((run / "metrics.json").read_text())
    for k in ("accuracy", "precision_macro", "recall_macro", "f1_macro"):
        assert 0 <= m[k] <= 1
    with open(run / "batches.csv") as f:
        b = list(csv.DictReader(f))
    unfrozen = [r for r in b if int(r["epoch"]) >= 1]
    for r in unfrozen:  # fastai's discriminative lrs, read back from the optimizer each batch: x10 per group
        g = [float(r[f"lr_group{i}"]) for i in range(3)]
        assert g[1] / g[0] == pytest.approx(10) and g[2] / g[1] == pytest.approx(10) and float(r["lr"]) == g[2]
    assert max(float(r["lr_group2"]) for r in unfrozen) == pytest.approx(rec / 2, rel=1e-6)  # peak: base lr / 2
    for f in ("models/last.pth", "models/best.pth", "train.log", "report.html", "figures/06_confusion_matrix.png"):
        assert (run / f).is_file(), f


def test_export_and_predict_folder_and_file(chain, small_data, tmp_path):
    assert chain["pkl"].is_file() and (chain["bundle"] / "model.onnx").is_file()
    folder = small_data / "val" / "n03445777"
    for model in (chain["bundle"], chain["pkl"]):
        out = tmp_path / f"{model.name}.csv"
        p = run_cli("predict", model, folder, "--top-k", 2, "--csv", out, check=True)
        assert "classified 15 image(s), skipped 0" in p.stdout
        with open(out) as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 15 and set(rows[0]) == {"path", "class_1", "prob_1", "class_2", "prob_2"}
        assert all(r["class_1"] in {"tench", "church", "golf ball", "parachute"} for r in rows)
        assert all(0 <= float(r["prob_1"]) <= 1 for r in rows)
    one = next(folder.iterdir())
    p = run_cli("predict", chain["bundle"], one, check=True)
    assert "probability" in p.stdout


def test_state_dict_round_trip_keeps_body_weights(torchvision_sd, tiny_data, tmp_path):
    """--weights PATH through the CLI; training only the head leaves the body exactly as loaded."""
    run = tmp_path / "headonly"
    p = run_cli("fine-tune", "--data", tiny_data, "--weights", torchvision_sd, "--freeze-epochs", 1, "--epochs", 0,
                "--size", 64, "--bs", 16, "--out", run, "--no-evaluate", check=True)
    assert "body tensors" in p.stdout
    sd = torch.load(torchvision_sd, weights_only=True)
    model = torch.load(run / "models" / "last.pth", weights_only=True)["model"]
    body = {k: v for k, v in sd.items() if k.startswith("features.")}
    assert len(body) == 10
    for k, v in body.items():
        assert torch.equal(model["0.0." + k[len("features."):]], v), k


def test_no_figures_scores_the_run_and_evaluate_draws_them_later(tiny_data, tmp_path):
    """--no-figures: the metrics as usual, no figure and no report (seconds sooner, for sweeps), and
    config.json says so (a resume finishes as recorded there); `evaluate RUN` draws every figure and
    writes the report afterwards."""
    run = tmp_path / "run"
    p = run_cli("fit-one-cycle", "--data", tiny_data, "--epochs", 1, "--size", 64, "--bs", 8, "--out", run,
                "--no-figures", check=True)
    m = json.loads((run / "metrics.json").read_text())
    assert m["n"] == 16 and 0 <= m["accuracy"] <= 1 and "accuracy" in p.stdout
    assert not (run / "figures").exists() and not (run / "report.html").exists() and "figures:" not in p.stdout
    assert json.loads((run / "config.json").read_text())["finish"]["figures"] is False
    run_cli("evaluate", run, check=True)
    assert (run / "report.html").is_file()
    for name in ("06_confusion_matrix.png", "09_top_losses.jpg"):
        assert_png(run / "figures" / name)


def test_bad_inputs_are_one_line_with_exit_codes(tiny_data, tmp_path, torchvision_sd):
    assert_one_line_error(run_cli("fit-one-cycle", "--data", tmp_path / "nope", "--epochs", 1), 3, "not found", "nope")
    bad = tmp_path / "bad.pth"
    sd = torch.load(torchvision_sd, weights_only=True)
    sd["features.3.weight"] = torch.zeros(10, 64, 5, 5)
    torch.save(sd, bad)
    assert_one_line_error(run_cli("fit-one-cycle", "--data", tiny_data, "--weights", bad, "--size", 64, "--epochs", 1),
                          4, "features.3.weight", "wrong shape", "(10, 64, 5, 5)")
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    assert_one_line_error(run_cli("fit-one-cycle", "--data", tiny_data, "--weights", junk, "--epochs", 1), 4, "junk.pth")
    assert_one_line_error(run_cli("fit-one-cycle", "--data", tiny_data, "--weights", tmp_path / "none.pth", "--epochs", 1),
                          4, "not found")
    exists = tmp_path / "exists"
    exists.mkdir()
    (exists / "keep.txt").write_text("mine")
    assert_one_line_error(run_cli("fit-one-cycle", "--data", tiny_data, "--out", exists, "--epochs", 1), 5, "already exists")
    assert (exists / "keep.txt").read_text() == "mine"
    assert_one_line_error(run_cli("fit-one-cycle", "--data", tiny_data, "--size", 32, "--epochs", 1), 2, "64")
    assert_one_line_error(run_cli("fit-one-cycle", "--data", tiny_data, "--test-scale", 2, "--epochs", 1), 2,
                          "--test-scale 2", "1.25")
    assert_one_line_error(run_cli("predict", tmp_path / "missing.pkl", tiny_data), 4, "not found")
    assert_one_line_error(run_cli("evaluate", tmp_path / "norun"), 5, "not found")
    assert_one_line_error(run_cli("predict", tmp_path / "x.pkl", tmp_path / "no-such-dir"), 3, "no such image")


def test_fine_tune_defaults_to_imagenet_and_refuses_clearly_offline(tiny_data, tmp_path):
    offline = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
               "TORCH_HOME": str(tmp_path / "torch")}
    p = run_cli("fine-tune", "--data", tiny_data, "--epochs", 1, "--out", tmp_path / "ft", env=offline)
    assert_one_line_error(p, 6, "alexnet-owt-7be5be79.pth", "--weights PATH", str(tmp_path / "torch"))
    assert not (tmp_path / "ft").exists()  # refused before a run directory was made


def test_clip_and_mixup_typed_on_the_command_line_reach_fastais_callbacks(tiny_data, tmp_path):
    run = tmp_path / "run"
    run_cli("fit-one-cycle", "--data", tiny_data, "--epochs", 1, "--size", 64, "--bs", 8, "--clip", 1.5,
            "--mixup", 0.4, "--out", run, check=True)
    cfg = json.loads((run / "config.json").read_text())["config"]
    assert cfg["clip"] == 1.5 and cfg["mixup"] == 0.4
    summary = (run / "summary.txt").read_text()  # learn.summary() lists the Learner's callbacks
    assert "MixUp" in summary and "GradientClipWhenOver" in summary


# ---- features no test ran before (issue 23): each typed as a user types it, each checked for its effect


def test_body_layers_keeps_only_the_first_convolutions(torchvision_sd, tiny_data):
    from app.core.config import TrainConfig
    from app.data.loaders import datablock_dls
    from app.data.scan import scan
    from app.model.learner import build_learner
    from app.model.weights import Weights

    sd = torch.load(torchvision_sd, weights_only=True)
    said = []
    dls = datablock_dls(scan(tiny_data), TrainConfig(size=64, bs=4, workers=0), 64)
    learn = build_learner(dls, Weights("state_dict", torchvision_sd), body_layers=2, log=said.append)
    convs = [m for m in learn.model[0][0] if isinstance(m, torch.nn.Conv2d)]
    kept = [torch.equal(c.weight, sd[f"features.{i}.weight"]) for c, i in zip(convs, (0, 3, 6, 8, 10))]
    assert kept == [True, True, False, False, False]
    assert any("the first 2 convolution(s) kept, the other 3 re-initialised" in m for m in said)


def test_min_freeze_steps_lengthens_the_frozen_phase(torchvision_sd, tiny_data, tmp_path):
    run = tmp_path / "run"
    p = run_cli("fine-tune", "--data", tiny_data, "--weights", torchvision_sd, "--min-freeze-steps", 10,
                "--freeze-epochs", 1, "--epochs", 1, "--size", 64, "--bs", 16, "--out", run, "--no-evaluate",
                check=True)
    # 32 training images at bs 16: 2 steps an epoch, so 10 steps take 5 frozen epochs
    assert "frozen phase: 5 epochs of 2 steps (at least 10 steps), not 1" in p.stdout
    with open(run / "history.csv") as f:
        assert [r["phase"] for r in csv.DictReader(f)] == ["frozen"] * 5 + ["unfrozen"]


def test_workers_reach_the_datablock_loader(tiny_data, tmp_path):
    run = tmp_path / "run"
    run_cli("fit-one-cycle", "--data", tiny_data, "--loader", "datablock", "--workers", 1, "--epochs", 1,
            "--size", 64, "--bs", 16, "--out", run, "--no-evaluate", check=True)
    assert json.loads((run / "config.json").read_text())["config"]["workers"] == 1
    from app.core.config import TrainConfig
    from app.data.loaders import datablock_dls
    from app.data.scan import scan

    dls = datablock_dls(scan(tiny_data), TrainConfig(size=64, bs=8, workers=1), 64)
    assert dls.train.fake_l.num_workers == 1


def test_export_which_best_and_a_bundle_as_weights(chain, tmp_path):
    from safetensors.torch import load_file

    best = torch.load(chain["run"] / "models" / "best.pth", weights_only=True)["model"]
    pkl = tmp_path / "b" / "best.pkl"
    run_cli("export", chain["run"], "--which", "best", "--to", pkl, check=True)
    exported = load_file(str(pkl.with_suffix("") / "model.safetensors"))
    assert all(torch.equal(exported[k], v) for k, v in best.items())
    run = tmp_path / "again"
    p = run_cli("fine-tune", "--data", json.loads((chain["run"] / "config.json").read_text())["config"]["data"],
                "--weights", pkl.with_suffix(""), "--freeze-epochs", 1, "--epochs", 1, "--size", 64, "--bs", 32,
                "--out", run, "--no-evaluate", check=True)
    assert "whole model (same classes)" in p.stdout


def test_evaluate_data_new_path_after_the_dataset_moved(tiny_data, tmp_path):
    import shutil

    data = tmp_path / "old-place"
    shutil.copytree(tiny_data, data)
    run = tmp_path / "run"
    run_cli("fit-one-cycle", "--data", data, "--epochs", 1, "--size", 64, "--bs", 16, "--out", run,
            "--no-evaluate", check=True)
    moved = data.rename(tmp_path / "new-place")
    assert_one_line_error(run_cli("evaluate", run), 3, "data folder is gone", "--data NEW_PATH")
    p = run_cli("evaluate", run, "--data", moved, check=True)
    assert "accuracy" in p.stdout
    with open(run / "top_losses.csv") as f:
        assert all(r["path"].startswith(str(moved)) for r in csv.DictReader(f))


def test_train_writes_the_pickle_and_the_bundle_and_the_report_says_the_weights(tiny_data, tmp_path):
    import re

    run = tmp_path / "run"
    p = run_cli("train", "--data", tiny_data, "--epochs", 1, "--out", run, check=True)
    pkl = Path(re.search(r"learner pickle: (\S+)", p.stdout)[1])
    bundle = Path(re.search(r"bundle: (\S+)", p.stdout)[1])
    assert pkl.is_file() and (bundle / "model.onnx").is_file() and (bundle / "model.json").is_file()
    html = (run / "report.html").read_text()
    assert "<b>Weights:</b> --weights auto: ImageNet weights unavailable offline, so random init" in html


def test_a_pickle_that_would_name_this_package_is_refused(chain, tmp_path, monkeypatch):
    from app.core.errors import RunError
    from app.data.loaders import ResizeBatch
    from app.shipping import export as export_mod

    real = export_mod.stock_dls

    def with_our_transform(*a, **k):
        dls = real(*a, **k)
        dls.train.after_batch.add(ResizeBatch(64))  # an object of app.data.loaders inside the learner
        return dls

    monkeypatch.setattr(export_mod, "stock_dls", with_our_transform)
    from app.model.learner import load_run

    learn, cfg, ds = load_run(chain["run"], log=lambda *_: None)
    pkl = tmp_path / "x" / "named.pkl"
    with pytest.raises(RunError, match="would need this package to load .*app.data.loaders"):
        export_mod.export_learner(learn, chain["run"], pkl, ds=ds, log=lambda *_: None)
    assert not pkl.exists() and not pkl.with_suffix("").exists() and list(pkl.parent.iterdir()) == []


def _tmux(*args, sock):
    import subprocess

    return subprocess.run(["tmux", "-L", sock, *args], capture_output=True, text=True, timeout=30)


def test_a_real_terminal_sees_one_live_bar_and_one_line_per_epoch(small_data, tmp_path):
    """`fit-one-cycle --epochs 2` in tmux (150 columns), as a person sees it: while it trains, one
    live bar (epoch, batch, loss, time left); at the end, a handful of lines, one per epoch with '-'
    for the skipped validation, and no bar or fastprogress line left behind (there were ~37 lines
    an epoch). APP_PROGRESS is unset: the suite's 0 would hide every bar."""
    import os
    import shlex
    import shutil
    import sys
    import time

    from .conftest import ROOT

    if not shutil.which("tmux"):
        pytest.skip("tmux is not installed (sudo apt-get install tmux)")
    sock, done = f"app-test-{os.getpid()}", tmp_path / "exit"
    env = {k: os.environ[k] for k in ("APP_CACHE_DIR", "APP_RUNS_DIR", "APP_MODELS_DIR", "PYTHONWARNINGS")
           if k in os.environ}
    # COLUMNS/LINES: tmux starts the pane's shell at 80x24 before the window takes its size
    cmd = (f"cd {shlex.quote(str(ROOT))} && env -u APP_PROGRESS -u CI -u COLUMNS -u LINES "
           + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
           + f" {shlex.quote(sys.executable)} -m app fit-one-cycle --data {shlex.quote(str(small_data))} --epochs 2"
           f" --size 64 --bs 16 --out {shlex.quote(str(tmp_path / 'run'))}; echo $? > {shlex.quote(str(done))}; sleep 600")
    _tmux("new-session", "-d", "-x", "150", "-y", "50", cmd, sock=sock)
    try:
        live, t = set(), time.time()
        while not done.exists() and time.time() - t < 300:
            live.update(ln for ln in _tmux("capture-pane", "-p", sock=sock).stdout.splitlines() if "━" in ln)
            time.sleep(0.2)
        pane = _tmux("capture-pane", "-p", "-S", "-2000", sock=sock).stdout
    finally:
        _tmux("kill-server", sock=sock)
    assert done.read_text().strip() == "0", pane
    assert any("epoch 2/2" in ln and "loss" in ln and "left" in ln for ln in live), live  # the bar was live
    lines = [ln for ln in pane.splitlines() if ln.strip()]
    assert len(lines) <= 14, pane
    assert not any(c in pane for c in "━█") and "Epoch 1/2" not in pane and "nan" not in pane, pane
    epochs = [ln for ln in lines if ln.startswith("epoch ")]
    assert len(epochs) == 2 and "valid_loss - accuracy -" in epochs[0] and "accuracy 0." in epochs[1], pane


def test_precision_is_recorded_with_the_cpus_bf16_and_a_bad_one_is_one_line(tiny_data, tmp_path):
    run = tmp_path / "bf16"
    run_cli("fit-one-cycle", "--data", tiny_data, "--epochs", 1, "--size", 64, "--bs", 8, "--precision", "bf16",
            "--out", run, "--no-evaluate", check=True)
    meta = json.loads((run / "config.json").read_text())
    assert meta["config"]["precision"] == "bf16" and meta["precision_requested"] == "bf16"
    assert set(meta["cpu_bf16"]) == {"mkldnn_bf16", "flags", "native"}
    auto = tmp_path / "auto"
    run_cli("fit-one-cycle", "--data", tiny_data, "--epochs", 1, "--size", 64, "--bs", 8, "--out", auto,
            "--no-evaluate", check=True)
    meta = json.loads((auto / "config.json").read_text())
    assert meta["precision_requested"] == "auto" and meta["config"]["precision"] == "fp32"  # auto on a CPU, for now
    assert_one_line_error(run_cli("fit-one-cycle", "--data", tiny_data, "--precision", "half", "--epochs", 1), 2,
                          "--precision", "half")


def test_a_relative_data_path_is_stored_resolved_and_works_from_another_folder(tiny_data, tmp_path):
    """Claim confirmed (issue 23): `--data` was stored as typed, so `evaluate`, `export` and the rest
    broke when run from another folder. Trained with a relative --data from one folder, the run is
    evaluated and exported from another."""
    import json
    import os

    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir(), elsewhere.mkdir()
    rel = os.path.relpath(tiny_data, here)
    run = tmp_path / "run"
    env = {"PYTHONPATH": str(ROOT)}
    run_cli("fit-one-cycle", "--data", rel, "--epochs", 1, "--size", 64, "--bs", 8, "--out", run, "--no-evaluate",
            cwd=here, env=env, check=True)
    assert json.loads((run / "config.json").read_text())["config"]["data"] == str(Path(tiny_data).resolve())
    run_cli("evaluate", run, cwd=elsewhere, env=env, check=True)
    run_cli("export", run, cwd=elsewhere, env=env, check=True)
    assert json.loads((run / "metrics.json").read_text())["n"] == 16 and (run / "export" / "run" / "model.json").is_file()


def test_body_layers_from_the_cli_fine_tunes_a_bundle_with_the_first_convolutions_only(fitted, tiny_data, tmp_path):
    """`fine-tune --weights BUNDLE --body-layers 2`, typed as a user types it (the option was never
    run through the CLI): the run says which layers it kept and records the setting. Which weights
    each convolution starts from is test_body_layers_keeps_only_the_first_convolutions."""
    import json

    src, _ = fitted
    run_cli("export", src, "--to", tmp_path / "src.pkl", check=True)  # the shared run stays as it was
    bundle = tmp_path / "src"
    run = tmp_path / "ft"
    p = run_cli("fine-tune", "--data", tiny_data, "--weights", bundle, "--body-layers", 2, "--epochs", 1,
                "--freeze-epochs", 1, "--size", 64, "--bs", 8, "--out", run, "--no-evaluate", check=True)
    assert json.loads((run / "config.json").read_text())["config"]["body_layers"] == 2
    assert "the first 2 convolution(s) kept, the other 3 re-initialised" in p.stdout, p.stdout


def test_every_path_a_run_writes_is_absolute_after_a_relative_data(tiny_data, tmp_path):
    """Claim 8 (issue 28): `train --data ./d` (which scans the data itself to fit the size) wrote
    `d/val/...` into top_losses.csv, so review from another folder found nothing and --apply refused
    every decision as outside the root."""
    import csv
    import shutil

    from .conftest import cli

    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copytree(tiny_data, here / "d")
    run = tmp_path / "run"
    cli("train", "--preset", "fastai-default", "--data", "./d", "--epochs", 1, "--out", run, cwd=here, check=True)
    with open(run / "top_losses.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 16 and all(Path(r["path"]).is_absolute() and Path(r["path"]).is_file() for r in rows)
    victim = Path(rows[0]["path"])
    (run / "decisions.csv").write_text("path,decision,new_class,actual,predicted,loss,time\n"
                                       f"{victim},remove,,a,b,1.0,t\n", encoding="utf-8")
    p = cli("review", run, "--apply", "--yes", cwd=elsewhere, check=True)
    assert "moved 1 file(s)" in p.stdout and not victim.exists()
    cli("review", run, "--undo", "--yes", cwd=elsewhere, check=True)
    assert victim.is_file()

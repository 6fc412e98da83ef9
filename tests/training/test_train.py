"""Training on real images: beats chance, one history row per epoch, checkpoints, resume after
SIGKILL with the same schedule, Ctrl-C saves and prints the resume command."""

import csv
import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from app.core.config import TrainConfig
from app.training.callbacks import ProgressiveResize, ValidEvery
from app.training.epochs import phases, total_epochs
from app.training.lr_find import recommend_lr

from ..conftest import FIT_ARGS as ARGS
from ..conftest import ROOT, run_cli


def _history(run):
    with open(run / "history.csv") as f:
        return list(csv.DictReader(f))


def test_a_small_fit_beats_chance_on_held_out_images(fitted):
    run, _ = fitted
    m = json.loads((run / "metrics.json").read_text())
    assert m["n"] == 60
    assert m["accuracy"] >= 0.40, m["accuracy"]  # chance is 0.25; 0.40 is > 2.5 sigma above it
    assert m["f1_macro"] > 0.30


def test_history_has_one_row_per_epoch_and_progressive_sizes(fitted):
    run, p = fitted
    rows = _history(run)
    assert [int(r["epoch"]) for r in rows] == list(range(8))
    assert [r["size"] for r in rows] == ["64"] * 8  # --size 64: the preset's 96->128 ratio falls below 64
    # the preset validates every 4th epoch (and always the last): the others have empty columns
    assert [r["epoch"] for r in rows if r["accuracy"]] == ["3", "7"]
    assert all(0 <= float(r["accuracy"]) <= 1 for r in rows if r["accuracy"])
    assert all(r["valid_loss"] == "" and r["train_loss"] for r in rows if not r["accuracy"])
    assert "epoch 7:" in p.stdout  # one plain line per epoch when not on a terminal
    # elapsed_s: seconds of fitting when each epoch's row was written, against two clocks it does not read:
    # fastai's own per-epoch durations (mm:ss, cut to whole seconds), each inside its epoch's interval,
    # and the fit's time in config.json, which ends after the last row
    elapsed = [float(r["elapsed_s"]) for r in rows]
    durations = [int(m) * 60 + int(s) for m, s in (r["time"].split(":") for r in rows)]
    assert all(b - a >= d for a, b, d in zip([0.0] + elapsed, elapsed, durations)), (elapsed, durations)
    assert elapsed[-1] <= json.loads((run / "config.json").read_text())["fit_seconds"] + 0.1
    with open(run / "batches.csv") as f:
        b = list(csv.DictReader(f))
    assert len(b) == 8 * (160 // 16) and int(b[-1]["samples"]) == 8 * 160


def test_checkpoints_hold_what_resume_needs(fitted):
    run, _ = fitted
    last = torch.load(run / "models" / "last.pth", weights_only=True)
    assert last["epoch"] == 7 and set(last) >= {"model", "opt", "rng", "record"}
    best = torch.load(run / "models" / "best.pth", weights_only=True)
    assert best["accuracy"] == max(float(r["accuracy"]) for r in _history(run) if r["accuracy"])


def test_phases_and_resize_schedule():
    ft = TrainConfig(command="fine-tune", epochs=3, freeze_epochs=2, lr=1e-3)
    ph = phases(ft)
    assert [p["name"] for p in ph] == ["frozen", "unfrozen"] and total_epochs(ft) == 5
    assert ph[1]["lr"].stop == pytest.approx(5e-4) and ph[1]["lr"].start == pytest.approx(5e-6)  # fastai fine_tune
    cfg = TrainConfig(size=128, progressive="64:0.35,96:0.41")
    assert cfg.schedule(17) == [(0, 64), (6, 96), (13, 128)]
    cb = ProgressiveResize(cfg.schedule(17))
    assert [cb.size_at(e) for e in (0, 5, 6, 12, 13, 16)] == [64, 64, 96, 96, 128, 128]
    assert cfg.scaled_progressive(256) == "128:0.35,192:0.41"
    assert TrainConfig(size=128).schedule(5) == [(0, 128)]
    ve = ValidEvery(cfg.replace(epochs=17, valid_every=4))  # every 4th, each size's last epoch, the last epoch
    assert [e for e in range(17) if ve.wanted(e)] == [3, 5, 7, 11, 12, 15, 16]
    assert all(ValidEvery(cfg.replace(epochs=17, valid_every=1)).wanted(e) for e in range(17))


def test_lr_rule():
    assert recommend_lr({"valley": 1e-3, "minimum": 4e-3, "slide": 2e-3, "steep": 1e-5}) == 1e-3
    assert recommend_lr({"valley": 1.9e-4, "minimum": 4e-3, "slide": 2e-3, "steep": 1e-5}) == pytest.approx(1e-3)


def _wait_for(path, proc, timeout=300):
    t = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t < timeout, f"{path} never appeared"
        time.sleep(0.2)


def test_resume_after_sigkill_matches_an_uninterrupted_run(small_data, tmp_path):
    args = ["fit-one-cycle", "--data", small_data, "--epochs", 4, *ARGS]
    whole = tmp_path / "whole"
    run_cli(*args, "--out", whole, "--no-evaluate", check=True)

    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "app", *map(str, args), "--out", str(cut), "--no-evaluate"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(cut / "models" / "last.pth", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = torch.load(cut / "models" / "last.pth", weights_only=True)["epoch"]
    assert done < 3, "the run finished before it could be killed"

    p = run_cli("fit-one-cycle", "--resume", cut, check=True)
    assert f"resuming {cut} at epoch {done + 1}" in p.stdout
    a, b = _history(whole), _history(cut)
    assert [r["epoch"] for r in b] == ["0", "1", "2", "3"]  # no duplicates, no gaps
    elapsed = [float(r["elapsed_s"]) for r in b]  # the fitting clock carries on across the kill:
    assert all(x < y for x, y in zip(elapsed, elapsed[1:])), elapsed  # the resumed process's fit alone is shorter
    assert elapsed[-1] > json.loads((cut / "config.json").read_text())["fit_seconds"] + 0.5 * elapsed[done], elapsed
    assert abs(float(a[-1]["accuracy"]) - float(b[-1]["accuracy"])) <= 0.01
    for ra, rb in zip(a, b):  # the smoothed train loss carries on across the kill, not restarted
        assert abs(float(ra["train_loss"]) - float(rb["train_loss"])) < 1e-4, (ra, rb)
    la = [float(r["lr"]) for r in csv.DictReader(open(whole / "batches.csv"))]
    lb = [float(r["lr"]) for r in csv.DictReader(open(cut / "batches.csv"))]
    assert len(la) == len(lb) and max(abs(x - y) for x, y in zip(la, lb)) < 1e-12  # same schedule
    assert json.loads((cut / "config.json").read_text())["status"] == "finished"


def test_ctrl_c_saves_and_prints_the_resume_command(small_data, tmp_path):
    run = tmp_path / "stopped"
    # SIGINT restored in the child: a shell that starts the suite in the background makes it ignored
    proc = subprocess.Popen([sys.executable, "-m", "app", "fit-one-cycle", "--data", str(small_data), "--epochs", "20",
                             *map(str, ARGS), "--out", str(run)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _wait_for(run / "models" / "last.pth", proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    assert f"python -m app fit-one-cycle --resume {run}" in err and "Traceback" not in err
    assert json.loads((run / "config.json").read_text())["status"] == "interrupted"
    assert torch.load(run / "models" / "last.pth", weights_only=True)["epoch"] >= 0


def test_mixup_and_gradient_clip_settings_become_fastai_callbacks(small_data, tmp_path):
    from fastai.callback.mixup import MixUp
    from fastai.callback.training import GradientClip

    from app.data.cache import open_or_build, stored_size
    from app.data.loaders import cached_dls
    from app.data.scan import scan
    from app.model.learner import build

    cfg = TrainConfig(size=64, bs=16, mixup=0.4, clip=2.0)
    dls = cached_dls(open_or_build(scan(small_data), stored_size(64), log=lambda *_: None), cfg, 64)
    learn = build(cfg, dls, tmp_path, torch.device("cpu"), lambda *a, **k: None)
    assert [round(float(cb.distrib.concentration1), 3) for cb in learn.cbs if isinstance(cb, MixUp)] == [0.4]
    assert [cb.max_norm for cb in learn.cbs if isinstance(cb, GradientClip)] == [2.0]
    plain = build(cfg.replace(mixup=0.0, clip=0.0), dls, tmp_path, torch.device("cpu"), lambda *a, **k: None)
    assert not any(isinstance(cb, (MixUp, GradientClip)) for cb in plain.cbs)


def test_gradient_clip_scales_only_gradients_over_the_limit():
    from types import SimpleNamespace

    from app.model.callbacks import GradientClipWhenOver

    model = torch.nn.Linear(3, 2)
    cb = GradientClipWhenOver(max_norm=1.0)
    cb.learn = SimpleNamespace(model=model)
    for scale, expect in ((0.1, None), (50.0, 1.0)):
        for p in model.parameters():
            p.grad = torch.full_like(p, scale)
        before = torch.cat([p.grad.flatten() for p in model.parameters()])
        cb.before_step()
        after = torch.cat([p.grad.flatten() for p in model.parameters()])
        if expect is None:
            assert torch.equal(before, after)  # under the limit: untouched
        else:
            assert abs(after.norm().item() - expect) < 1e-4  # over it: scaled down to the limit
            assert torch.allclose(after / after.norm(), before / before.norm())


def test_compile_trains_and_checkpoints_the_plain_model(tiny_data, tmp_path):
    """--compile compiles in place: fastai's AlexNet splitter still indexes the model, and the
    checkpoint's keys are the plain model's (the old torch.compile wrapper failed at the first
    optimizer: "'OptimizedModule' object is not subscriptable")."""
    run = tmp_path / "compiled"
    p = run_cli("fit-one-cycle", "--data", tiny_data, "--compile", "--epochs", 1, "--size", 64, "--bs", 16,
                "--out", run, "--no-evaluate", timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    keys = list(torch.load(run / "models" / "last.pth", weights_only=True)["model"])
    assert keys[0] == "0.0.0.weight" and not any("_orig_mod" in k for k in keys)
    assert json.loads((run / "config.json").read_text())["config"]["compile"] is True


def test_seeding_is_bit_exact_on_cpu_and_fast_on_cuda(tiny_data, tmp_path):
    """Two CPU runs with one seed train to bit-identical weights and losses (what the name says, now
    checked); on CUDA cuDNN's autotuner is on, since runs there are not bit-exact anyway."""
    from app.core.device import seed_everything

    runs = []
    for name in ("a", "b"):
        run = tmp_path / name
        run_cli("fit-one-cycle", "--data", tiny_data, "--epochs", 2, *ARGS, "--valid-every", 1, "--out", run,
                "--no-evaluate", check=True)
        runs.append(run)
    wa, wb = (torch.load(r / "models" / "last.pth", weights_only=True)["model"] for r in runs)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (runs[0] / "batches.csv").read_text() == (runs[1] / "batches.csv").read_text()
    seed_everything(0, torch.device("cpu"))
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    seed_everything(0, torch.device("cuda"))  # only flags: no GPU needed to set them
    assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
    seed_everything(0, torch.device("cpu"))


def test_progressive_resizing_really_changes_the_batches_and_the_cache(small_data, tmp_path, monkeypatch):
    """A real size change end to end: set_size on every transform, the cached loader switching to
    the cache stored for the new size, validation at the final size, and history saying so."""
    from app.model.callbacks import ModelInputs
    from app.model.weights import Weights
    from app.training.after_fit import Finish
    from app.training.presets import resolve
    from app.training.train import train

    seen = []
    before = ModelInputs.before_batch

    def spy(self):
        dl = self.dls.train if self.training else self.dls.valid
        seen.append((self.training, self.epoch, self.xb[0].shape[-1], dl.stores.size))
        before(self)

    monkeypatch.setattr(ModelInputs, "before_batch", spy)
    cfg = resolve("fit-one-cycle", "none", "none", data=small_data, size=96, progressive="64:0.5", epochs=2, bs=32,
                  valid_every=1)
    run = train(cfg, out=str(tmp_path / "run"), weights=Weights("none"), finish=Finish(figures=False))
    train_sizes = {(e, px, store) for t, e, px, store in seen if t}
    valid_sizes = {(e, px) for t, e, px, _ in seen if not t}
    assert sum(not t for t, *_ in seen) == 4  # 2 validation batches per epoch, none after (evaluation reuses them)
    assert train_sizes == {(0, 64, 80), (1, 96, 128)}  # 64 px from the 80-px cache, 96 px from the 128-px one
    assert valid_sizes == {(0, 64), (1, 96)}  # and no second pass after training: its last one is reused
    assert [r["size"] for r in _history(run)] == ["64", "96"]
    assert json.loads((run / "metrics.json").read_text())["size"] == 96


def _kill_after_first_checkpoint(args, out):
    proc = subprocess.Popen([sys.executable, "-m", "app", *map(str, args), "--out", str(out)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(out / "models" / "last.pth", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return torch.load(out / "models" / "last.pth", weights_only=True)["epoch"]


def test_fine_tune_resumed_at_the_phase_boundary_matches_an_uninterrupted_run(small_data, tmp_path):
    """Claim confirmed from fastai's source: Learner.unfreeze() clears Adam's state (freeze_to ->
    opt.clear_state()), so an uninterrupted fine_tune starts its unfrozen phase with fresh moments,
    while a run resumed there loaded the frozen phase's. Killed right after the frozen epoch's
    checkpoint, resumed, it now trains exactly as the uninterrupted run."""
    args = ["fine-tune", "--data", small_data, "--weights", "none", "--freeze-epochs", 1, "--epochs", 2, *ARGS,
            "--valid-every", 1, "--no-evaluate"]
    whole = tmp_path / "whole"
    run_cli(*args, "--out", whole, check=True)
    cut = tmp_path / "cut"
    assert _kill_after_first_checkpoint(args, cut) == 0  # the frozen phase's only epoch: the boundary
    run_cli("fine-tune", "--resume", cut, check=True)
    a, b = _history(whole), _history(cut)
    assert [r["phase"] for r in b] == ["frozen", "unfrozen", "unfrozen"]
    for ra, rb in zip(a, b):
        assert abs(float(ra["train_loss"]) - float(rb["train_loss"])) < 1e-4, (ra, rb)
        assert (ra["valid_loss"] == "") == (rb["valid_loss"] == "")
        if ra["valid_loss"]:
            assert abs(float(ra["valid_loss"]) - float(rb["valid_loss"])) < 1e-4, (ra, rb)


def test_the_best_score_carries_across_phases_resumed_or_not(monkeypatch, tmp_path):
    """Claim confirmed by reading _fit: the unfrozen phase's Checkpoint started with best=None in an
    uninterrupted run (best.pth reset at the phase change) but with the checkpoint's best when
    resumed. Now both hand the first phase's best to the second."""
    from types import SimpleNamespace

    from app.training import train as train_mod

    got = []

    def fake_phase(learn, s, ph, start_epoch, ckpt, best=None):
        got.append((ph["name"], best))
        return {"frozen": 0.9, "unfrozen": 0.95}[ph["name"]] if best is None or best < 0.9 else best

    monkeypatch.setattr(train_mod, "_fit_phase", fake_phase)
    s = SimpleNamespace(cfg=TrainConfig(command="fine-tune", freeze_epochs=1, epochs=2), run=tmp_path)
    train_mod._fit(None, s, 0, None)
    assert got == [("frozen", None), ("unfrozen", 0.9)]
    got.clear()
    train_mod._fit(None, s, 1, {"best": 0.8, "epoch": 0})
    assert got == [("unfrozen", 0.8)]


def test_resume_refuses_other_classes_or_changed_files_and_needs_no_hub_for_imagenet_runs(tiny_data, tmp_path):
    import shutil

    data = tmp_path / "d"
    shutil.copytree(tiny_data, data)
    run = tmp_path / "run"
    run_cli("fit-one-cycle", "--data", data, "--epochs", 2, *ARGS, "--out", run, "--no-evaluate", check=True)
    cfg = json.loads((run / "config.json").read_text())
    cfg["config"]["weights"] = "imagenet"  # as a run that fine-tuned ImageNet weights records it
    (run / "config.json").write_text(json.dumps(cfg))
    p = run_cli("fit-one-cycle", "--resume", run, env={"TORCH_HOME": str(tmp_path / "empty-hub")})
    assert p.returncode == 0, p.stderr  # the checkpoint holds the weights: no hub cache, no download
    victim = next((data / "val" / sorted(p.name for p in (data / "val").iterdir())[0]).iterdir())
    victim.write_bytes(victim.read_bytes() + b"\0")  # one file changed
    from ..conftest import assert_one_line_error

    assert_one_line_error(run_cli("fit-one-cycle", "--resume", run), 3, "changed since", "--resume needs the same")
    victim.unlink()
    shutil.rmtree(data / "val" / victim.parent.name)
    shutil.rmtree(data / "train" / victim.parent.name)
    assert_one_line_error(run_cli("fit-one-cycle", "--resume", run), 3, "classes in", "not the ones")


def test_a_resumed_train_run_finishes_as_train_does(small_data, tmp_path):
    """Claim confirmed: `train` interrupted printed `fit-one-cycle --resume RUN`, which then did not
    export (export and TTA were flags of the command, not of the run). A real `train` is killed after
    its first checkpoint; the printed resume command then evaluates and exports, as train would."""
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "app", "train", "--data", str(small_data), "--epochs", "6",
                             "--out", str(run)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(run / "models" / "last.pth", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((run / "config.json").read_text())["finish"]["export"] is True
    assert torch.load(run / "models" / "last.pth", weights_only=True)["epoch"] < 5 and not (run / "export").exists()
    run_cli("fit-one-cycle", "--resume", run, check=True)
    assert (run / "export" / "run.pkl").is_file() and (run / "export" / "run" / "model.json").is_file()
    assert (run / "metrics.json").is_file() and (run / "report.html").is_file()


@pytest.mark.parametrize("device, preset, minutes", [("cpu", "cpu-quick", 15.0), ("auto", "gpu-fast", 0.0)])
def test_the_preset_and_the_budget_follow_the_device_that_trains(tiny_data, monkeypatch, device, preset, minutes):
    """`train --device cpu` on a machine with a GPU: the CPU recipe and the CPU time budget (it
    was gpu-fast with no budget, chosen from cuda_available()). The GPU is faked; nothing trains."""
    from app.core import device as dev
    from app.training import train as train_mod

    monkeypatch.setattr(dev, "cuda_available", lambda: True)
    seen = []
    monkeypatch.setattr(train_mod, "train", lambda cfg, **kw: seen.append(cfg))
    train_mod.run_command("train", "auto", "none", data=tiny_data, device=device, epochs=None, time=None)
    assert (seen[0].preset, seen[0].time, seen[0].device) == (preset, minutes, device)

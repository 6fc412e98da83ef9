"""Every GPU branch, on a real CUDA device: nvJPEG against PIL, the cache held on the device, a short
gpu-fast fit in bf16 and channels_last, resume on CUDA, --compile, the stock loader, fine-tune from
a state dict, bench, and DDP when two GPUs exist. Marked `gpu`; skipped (with the reason) without
CUDA. benchmarks/gpu_check.sh runs them on a GPU machine."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from .conftest import EASY, ROOT, SHARED, run_cli

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                  reason="no CUDA GPU here (benchmarks/gpu_check.sh runs these on one)")]
GPU_ARGS = ["--size", 64, "--bs", 32, "--seed", 3]


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    """Real photos saved four ways: RGB, grayscale, CMYK, and rotated by an EXIF tag; plus a corrupt one."""
    src = Image.open(next((SHARED / "val" / EASY[1]).iterdir())).convert("RGB")
    d = tmp_path_factory.mktemp("jpegs")
    src.save(d / "rgb.jpg", quality=92)
    src.convert("L").save(d / "gray.jpg", quality=92)
    src.convert("CMYK").save(d / "cmyk.jpg", quality=92)
    wide = src.resize((180, 120))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    wide.save(d / "exif.jpg", exif=exif.tobytes(), quality=92)
    (d / "bad.jpg").write_bytes((d / "rgb.jpg").read_bytes()[:300])
    return d


def _decode(paths, decoder):
    from app.data.cache import decoded

    out = []
    for res in decoded([str(p) for p in paths], (80,), decoder=decoder, workers=1):
        out.append(res if isinstance(res, str) else np.frombuffer(res[0], np.uint8).reshape(3, 80, 80))
    return out


def test_nvjpeg_decodes_like_pil(jpegs):
    names = ["rgb", "gray", "cmyk", "exif", "bad"]
    gpu = _decode([jpegs / f"{n}.jpg" for n in names], "torchvision")
    cpu = _decode([jpegs / f"{n}.jpg" for n in names], "pil")
    for n, a, b in zip(names[:4], gpu, cpu):
        diff = np.abs(a.astype(int) - b.astype(int)).mean()
        assert diff < 3.0, (n, diff)  # the same picture, the same way up (a missed rotation gives ~40)
    assert isinstance(gpu[4], str) and gpu[4] == cpu[4]  # the corrupt file: PIL's verdict, the batch survives


def test_cache_is_held_on_the_gpu(small_data):
    from app.core.config import TrainConfig
    from app.data.cache import open_or_build, stored_size
    from app.data.loaders import cached_dls
    from app.data.scan import scan

    dls = cached_dls(open_or_build(scan(small_data), stored_size(64), log=lambda *_: None), TrainConfig(bs=16), 64,
                     torch.device("cuda"))
    store = dls.train.stores
    assert all(v is not None and v.is_cuda for v in store.images.values())
    xb, yb = dls.train.one_batch()
    assert xb.is_cuda and yb.is_cuda and xb.shape == (16, 3, 64, 64)


def test_gpu_fast_fit_runs_in_bf16_and_channels_last(small_data, tmp_path):
    from fastai.callback.core import Callback

    from app.data.loaders import make_dls
    from app.model.learner import build
    from app.training.presets import resolve

    cfg = resolve("fit-one-cycle", "gpu-fast", "none", cuda=True, data=small_data, size=64, bs=32, epochs=1)
    device = torch.device("cuda")
    _, dls = make_dls(cfg, 64, device)
    learn = build(cfg, dls, tmp_path, device, log=lambda *_: None)
    seen = {}

    class Probe(Callback):
        def after_pred(self):
            if self.training and "dtype" not in seen:
                seen["dtype"] = self.pred.dtype
                seen["channels_last"] = self.xb[0].is_contiguous(memory_format=torch.channels_last)

    learn.fit_one_cycle(1, cfg.lr, cbs=[Probe()])
    assert seen == {"dtype": torch.bfloat16, "channels_last": True}


def test_cli_fit_resume_on_cuda(small_data, tmp_path):
    """A CUDA run resumed from its checkpoint: the optimizer state goes back beside the parameters."""
    run = tmp_path / "run"
    run_cli("fit-one-cycle", "--data", small_data, "--epochs", 2, *GPU_ARGS, "--out", run, "--no-evaluate", check=True)
    cfg = json.loads((run / "config.json").read_text())
    assert not cfg["device"].startswith("cpu")
    ckpt = torch.load(run / "models" / "last.pth", weights_only=True)
    ckpt["epoch"] = 0  # as if killed after the first epoch
    torch.save(ckpt, run / "models" / "last.pth")
    p = run_cli("fit-one-cycle", "--resume", run, check=True)
    assert f"resuming {run} at epoch 1" in p.stdout
    assert json.loads((run / "config.json").read_text())["status"] == "finished"


@pytest.mark.parametrize("extra", [["--compile"], ["--loader", "datablock"]], ids=["compile", "datablock"])
def test_cli_fit_variants_on_cuda(small_data, tmp_path, extra):
    run = tmp_path / "run"
    run_cli("fit-one-cycle", "--data", small_data, "--epochs", 1, *GPU_ARGS, *extra, "--out", run, check=True,
            timeout=900)
    m = json.loads((run / "metrics.json").read_text())
    assert m["n"] == 60 and 0 <= m["accuracy"] <= 1


def test_cli_fine_tune_from_a_state_dict_on_cuda(small_data, tmp_path):
    from torchvision.models import alexnet

    sd = tmp_path / "alexnet.pth"
    torch.save(alexnet(weights=None).state_dict(), sd)
    run = tmp_path / "ft"
    p = run_cli("fine-tune", "--data", small_data, "--weights", sd, "--freeze-epochs", 1, "--epochs", 1, *GPU_ARGS,
                "--out", run, "--export", check=True)
    assert "body tensors" in p.stdout
    assert json.loads((run / "config.json").read_text())["weights_used"] == "state_dict"


def test_bench_on_cuda(tmp_path):
    out = tmp_path / "bench.json"
    run_cli("bench", "--data", SHARED, "--images", 256, "--size", 64, "--bs", 32, "--repeats", 1, "--json", out,
            check=True)
    res = json.loads(out.read_text())
    assert all(res[k] > 0 for k in ("ceiling_train_img_s", "fast_train_img_s", "fastai_train_img_s"))
    assert "cpu" not in res["device"]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DDP needs two GPUs")
def test_ddp_on_two_gpus(small_data, tmp_path):
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = {**os.environ, "APP_RUNS_DIR": str(tmp_path / "runs")}
    p = subprocess.run([torchrun, "--nproc_per_node", "2", "-m", "app", "fit-one-cycle", "--data", str(small_data),
                        "--epochs", "2", "--size", "96", "--progressive", "64:0.5", "--bs", "16"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    run = next((tmp_path / "runs").iterdir())
    assert json.loads((run / "config.json").read_text())["world_size"] == 2


@pytest.mark.parametrize("device, preset, minutes", [("cpu", "cpu-quick", 15.0), ("cuda", "gpu-fast", 0.0)])
def test_the_preset_follows_the_device_asked_for_on_a_real_gpu_machine(small_data, monkeypatch, device, preset,
                                                                       minutes):
    """Issue 24: `train --device cpu` here gets the CPU recipe and budget, not gpu-fast with none."""
    from app.training import train as train_mod

    seen = []
    monkeypatch.setattr(train_mod, "train", lambda cfg, **kw: seen.append(cfg))
    train_mod.run_command("train", "auto", "none", data=small_data, device=device, epochs=None, time=None)
    assert (seen[0].preset, seen[0].time) == (preset, minutes)


def test_cpu_bf16_is_not_used_on_a_gpu_and_auto_is_the_cards_bf16():
    from app.core.device import resolve_precision

    assert resolve_precision("auto", torch.device("cuda")) in ("bf16", "fp16")
    assert resolve_precision("fp32", torch.device("cuda")) == "fp32"

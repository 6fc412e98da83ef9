"""`python -m app bench`: speed and memory, measured as ratios within one run on one machine.

Default: on a class-balanced subset (copied to a temporary folder, with its own cache), the
model-only training ceiling (synthetic batches already on the device), each loader alone,
end-to-end training with each loader (fastai fit, training passes timed by a callback), folder
predict vs a Python loop of learn.predict, and cold-start predict of a bundle vs a pickle.
`--scale`: generated datasets of 10,000 and 100,000 images, peak host memory and train img/s.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from .settings import PROJECT_ROOT, TrainConfig


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _subset(src: Path, dst: Path, n_train: int, n_val: int) -> Path:
    from .data import make_subset, scan

    ds = scan(src)
    k = len(ds.classes)
    return make_subset(src, dst, max(1, n_train // k), max(1, n_val // k))


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ceiling(learn, size: int, bs: int, device, steps: int = 8) -> float:
    """Training img/s of the model alone: same model, loss, optimizer and memory format."""
    import torch

    model, loss_fn = learn.model.to(device), learn.loss_func
    if learn.opt is None:
        learn.create_opt()
    x = torch.randn(bs, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, learn.dls.c, (bs,), device=device)
    model.to(memory_format=torch.channels_last).train()
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else _null()

    def step():
        with amp:
            loss = loss_fn(model(x), y)
        loss.backward()
        learn.opt.step()
        learn.opt.zero_grad()

    for _ in range(2):
        step()
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * bs / (time.perf_counter() - t)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def loader_alone(dl, device, max_batches: int = 40) -> float:
    n, t = 0, time.perf_counter()
    for i, (xb, _) in enumerate(dl):
        n += len(xb)
        if i + 1 >= max_batches:
            break
    _sync(device)
    return n / (time.perf_counter() - t)


def train_speed(learn, epochs: int = 1, warmup: int = 3) -> dict:
    """fastai fit; a callback times the training passes in steady state (after `warmup` batches,
    loading included) and the whole fit (validation included)."""
    from fastai.callback.core import Callback

    class Timer(Callback):
        order = 100

        def before_fit(self):
            self.stamps, self.sizes, self.t_fit = [], [], time.perf_counter()

        def after_batch(self):
            if self.training:
                _sync(self.dls.device or torch.device("cpu"))
                self.stamps.append(time.perf_counter())
                self.sizes.append(len(self.yb[0]))

        def after_fit(self):
            self.fit_s = time.perf_counter() - self.t_fit

    import torch

    timer = Timer()
    learn.fit(epochs, 1e-4, cbs=[timer])
    k = min(warmup, len(timer.stamps) - 2)
    steady = sum(timer.sizes[k + 1 :]) / (timer.stamps[-1] - timer.stamps[k])
    return {"train_img_s": steady, "epoch_img_s": sum(timer.sizes) / timer.fit_s}


def _learner(dls, cfg, device):
    from .train import _learner

    return _learner(cfg, dls, Path(tempfile.mkdtemp(prefix="bench-run-")), device, lambda *a, **k: None)


def run_bench(data, size: int = 128, bs: int = 64, images: int = 1280, json_path: Path | None = None,
              console=None, device: str = "auto", repeats: int = 3) -> dict:
    log = console.print if console else print
    tmp = Path(tempfile.mkdtemp(prefix="app-bench-"))
    os.environ["APP_CACHE_DIR"] = str(tmp / "cache")  # a cold, private cache: nothing of the user's is touched
    try:
        return _bench(data, size, bs, images, json_path, log, device, tmp, repeats)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _bench(data, size, bs, images, json_path, log, device_name, tmp, repeats) -> dict:
    import torch
    from fastai.torch_core import set_seed

    from .cache import open_or_build, stored_size
    from .data import resolve_data, scan
    from .loaders import datablock_dls, fast_dls
    from .runs import device_info, versions
    from .settings import check_size
    from .train import pick_device

    check_size(size)
    device = pick_device(device_name)
    src = resolve_data(str(data) if data else None)
    root = _subset(src, tmp / "data", images, max(bs, images // 4))
    ds = scan(root)
    cfg = TrainConfig(size=size, bs=bs, min_scale=0.35, label_smoothing=0.1, loader="fast")
    res: dict = {"device": device_info(device), "size": size, "bs": bs, "train_images": len(ds.split("train")),
                 "val_images": len(ds.split("val")), "versions": versions(),
                 "command": "python -m app " + " ".join(sys.argv[1:]) if sys.argv[0].endswith(("app", "__main__.py")) else "",
                 "torch_threads": torch.get_num_threads()}
    set_seed(0)
    t = time.perf_counter()
    cache = open_or_build(ds, stored_size(size), log=lambda *_: None)
    res["cache_build_s"] = time.perf_counter() - t
    fast = fast_dls(cache, cfg, size, device)
    std = datablock_dls(ds, cfg.replace(loader="fastai", min_scale=1.0), size, device)
    log(f"bench on {res['device']}: {res['train_images']} training images, {size}px, bs {bs}")

    learn_fast = _learner(fast, cfg, device)
    learn_std = _learner(std, cfg.replace(loader="fastai"), device)
    res["fastai_loader_img_s"] = loader_alone(std.train, device)
    res["fast_loader_img_s"] = loader_alone(fast.train, device)
    log(f"  loader alone: fastai {res['fastai_loader_img_s']:.0f} img/s, fast {res['fast_loader_img_s']:.0f} img/s")

    # Interleaved rounds, best of each: a shared machine's speed drifts over seconds, and the
    # ratios must compare the three under the same conditions (timeit's rule: the fastest is the
    # least disturbed).
    rounds = {"ceiling": [], "fastai": [], "fast": []}
    steps = max(8, res["train_images"] // bs)
    for r in range(repeats):
        rounds["ceiling"].append(ceiling(learn_fast, size, bs, device, steps=steps))
        rounds["fastai"].append(train_speed(learn_std))
        rounds["fast"].append(train_speed(learn_fast))
        log(f"  round {r + 1}/{repeats}: ceiling {rounds['ceiling'][-1]:.1f}, fastai "
            f"{rounds['fastai'][-1]['train_img_s']:.1f}, fast {rounds['fast'][-1]['train_img_s']:.1f} img/s")
    res["rounds"] = repeats
    res["ceiling_train_img_s"] = max(rounds["ceiling"])
    s = max(rounds["fastai"], key=lambda d: d["train_img_s"])
    f = max(rounds["fast"], key=lambda d: d["train_img_s"])
    res["fastai_train_img_s"], res["fastai_epoch_img_s"] = s["train_img_s"], s["epoch_img_s"]
    res["fast_train_img_s"], res["fast_epoch_img_s"] = f["train_img_s"], f["epoch_img_s"]
    log(f"  model-only ceiling       {res['ceiling_train_img_s']:8.1f} img/s (best of {repeats})")
    res["per_round_train_img_s"] = {k: [round(v if isinstance(v, float) else v["train_img_s"], 1) for v in vs]
                                    for k, vs in rounds.items()}
    res["fast_vs_ceiling"] = res["fast_train_img_s"] / res["ceiling_train_img_s"]
    res["fast_vs_fastai"] = res["fast_train_img_s"] / res["fastai_train_img_s"]
    res["fastai_vs_ceiling"] = res["fastai_train_img_s"] / res["ceiling_train_img_s"]
    log(f"  training: fastai {res['fastai_train_img_s']:.1f}, fast {res['fast_train_img_s']:.1f} img/s "
        f"(fast/ceiling {res['fast_vs_ceiling']:.2f}, fast/fastai {res['fast_vs_fastai']:.2f})")

    res.update(_predict_bench(learn_fast, ds, cfg, tmp, bs, log, repeats))
    res["peak_rss_mb"] = _rss_mb()
    _table(res, log)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(res, indent=2))
        log(f"wrote {json_path}")
    return res


def _predict_bench(learn, ds, cfg, tmp: Path, bs: int, log, repeats: int = 3) -> dict:
    """Folder predict (batched) vs a loop of learn.predict, and cold start bundle vs pickle."""
    from fastai.learner import load_learner

    from .export import export_learner
    from .predict import BundlePredictor, predict_path
    from .runs import save_config, versions

    run = tmp / "run"
    run.mkdir()
    save_config(run, cfg.replace(data=str(ds.root)), classes=list(learn.dls.vocab), synsets=ds.classes,
                versions=versions())
    pkl, bundle = export_learner(learn, run, tmp / "models" / "bench.pkl", ds=ds, log=lambda *_: None)
    folder = ds.root / "val"
    files = [it.path for it in ds.split("val")]
    out: dict = {"predict_images": len(files)}

    t = time.perf_counter()
    predict_path(pkl, folder, bs=bs)
    out["predict_folder_pickle_img_s"] = len(files) / (time.perf_counter() - t)
    t = time.perf_counter()
    predict_path(bundle, folder, bs=bs)
    out["predict_folder_bundle_img_s"] = len(files) / (time.perf_counter() - t)
    with warnings.catch_warnings():  # the pickle warning is the README's and --help's to give
        warnings.simplefilter("ignore")
        lp = load_learner(pkl, cpu=True)
    sample = files[: min(len(files), 48)]
    t = time.perf_counter()
    for f in sample:
        lp.predict(f)
    out["predict_loop_img_s"] = len(sample) / (time.perf_counter() - t)
    out["predict_folder_vs_loop"] = out["predict_folder_pickle_img_s"] / out["predict_loop_img_s"]
    out["predict_bundle_vs_loop"] = out["predict_folder_bundle_img_s"] / out["predict_loop_img_s"]
    log(f"  predict folder: pickle {out['predict_folder_pickle_img_s']:.0f} img/s, bundle "
        f"{out['predict_folder_bundle_img_s']:.0f} img/s; learn.predict loop {out['predict_loop_img_s']:.1f} img/s")
    assert BundlePredictor(bundle).classes == list(learn.dls.vocab)

    img = str(files[0])
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}

    def cold(model) -> float:
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            p = subprocess.run([sys.executable, "-m", "app", "predict", str(model), img], cwd=PROJECT_ROOT, env=env,
                               capture_output=True, text=True)
            if p.returncode:
                raise RuntimeError(f"predict {model} failed: {p.stderr.strip().splitlines()[-1:]}")
            best = min(best, time.perf_counter() - t)
        return best

    out["cold_predict_bundle_s"] = cold(bundle)
    out["cold_predict_pickle_s"] = cold(pkl)
    out["cold_pickle_vs_bundle"] = out["cold_predict_pickle_s"] / out["cold_predict_bundle_s"]
    log(f"  cold predict (new process, one image): bundle {out['cold_predict_bundle_s']:.2f}s, "
        f"pickle {out['cold_predict_pickle_s']:.2f}s")
    return out


def _table(res: dict, log) -> None:
    from rich.table import Table

    t = Table(title=f"bench: {res['device']}, {res['size']}px, bs {res['bs']}", title_justify="left")
    t.add_column("measure")
    t.add_column("value", justify="right")
    for k, v in res.items():
        if isinstance(v, float):
            t.add_row(k, f"{v:.3f}" if v < 10 else f"{v:.1f}")
    log(t)


# ------------------------------------------------------------------ --scale


def _make_images(root: Path, n: int, n_classes: int = 10, size: int = 72, seed: int = 0) -> None:
    """n small JPEGs in train/ and val/ (90/10), class = dominant hue plus noise: learnable, cheap."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n_classes, 3))
    for i in range(n):
        c = i % n_classes
        split = "val" if (i // n_classes) % 10 == 0 else "train"  # every class in both splits
        d = root / split / f"class{c:02d}"
        if i < 2 * n_classes * 10:
            d.mkdir(parents=True, exist_ok=True)
        arr = np.clip(base[c] + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(d / f"img{i:07d}.jpg", quality=85)


def _scale_one(root: str, size: int, bs: int, batches: int) -> dict:
    """Runs in a fresh process: scan, cache, then train for `batches` batches over the whole set."""
    import torch

    from .cache import open_or_build
    from .data import scan
    from .loaders import fast_dls
    from .train import pick_device

    device = pick_device("auto")
    t = time.perf_counter()
    ds = scan(root)
    cache = open_or_build(ds, size, log=lambda *_: None)
    prep_s = time.perf_counter() - t
    cfg = TrainConfig(size=size, bs=bs, min_scale=0.35, loader="fast")
    dls = fast_dls(cache, cfg, size, device)
    learn = _learner(dls, cfg, device)
    n_all = loader_pass = 0
    t = time.perf_counter()
    for xb, _ in dls.train:  # one full pass of the loader: every row is read once
        n_all += len(xb)
    loader_pass = n_all / (time.perf_counter() - t)
    from fastai.callback.core import Callback, CancelFitException

    class Stop(Callback):
        def after_batch(self):
            if self.training and self.iter + 1 >= batches:
                raise CancelFitException

    t = time.perf_counter()
    learn.fit(1, 1e-4, cbs=[Stop()])
    train_s = time.perf_counter() - t
    return {"images": len(ds.items), "prep_s": prep_s, "loader_img_s": loader_pass,
            "train_img_s": batches * bs / train_s, "peak_rss_mb": _rss_mb(), "torch_threads": torch.get_num_threads()}


def run_scale(json_path: Path | None = None, console=None, device: str = "auto", sizes=(10_000, 100_000),
              img_size: int = 64, bs: int = 64, batches: int = 30) -> dict:
    from .runs import device_info, versions
    from .train import pick_device

    log = console.print if console else print
    tmp = Path(tempfile.mkdtemp(prefix="app-scale-"))
    out = {"device": device_info(pick_device(device)), "size": img_size, "bs": bs, "batches": batches,
           "versions": versions(), "runs": []}
    try:
        for n in sizes:
            root = tmp / f"d{n}"
            t = time.perf_counter()
            _make_images(root, n)
            gen_s = time.perf_counter() - t
            code = (f"import json,sys; from app.bench import _scale_one; "
                    f"print(json.dumps(_scale_one({str(root)!r}, {img_size}, {bs}, {batches})))")
            env = {**os.environ, "APP_CACHE_DIR": str(tmp / "cache"), "PYTHONWARNINGS": "ignore"}
            p = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
            if p.returncode:
                raise RuntimeError(p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "scale worker failed")
            r = json.loads(p.stdout.strip().splitlines()[-1])
            r["generate_s"] = gen_s
            out["runs"].append(r)
            log(f"  {r['images']:>7} images: peak host memory {r['peak_rss_mb']:.0f} MB, train {r['train_img_s']:.0f} img/s, "
                f"full loader pass {r['loader_img_s']:.0f} img/s")
            shutil.rmtree(root, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    a, b = out["runs"][0], out["runs"][-1]
    out["rss_growth"] = b["peak_rss_mb"] / a["peak_rss_mb"]
    out["images_growth"] = b["images"] / a["images"]
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(out, indent=2))
        log(f"wrote {json_path}")
    return out


__all__ = ["run_bench", "run_scale", "random"]

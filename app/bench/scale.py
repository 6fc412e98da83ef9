"""`python -m app bench --scale`: generated datasets of 10,000 and 100,000 images; peak host memory,
training img/s and a full pass of the cached loader, each size in a fresh process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..core.config import TrainConfig
from ..core.host import rss_mb
from ..core.paths import PROJECT_ROOT


def make_images(root: Path, n: int, n_classes: int = 10, size: int = 72, seed: int = 0, gray: bool = False) -> None:
    """n small JPEGs in train/ and val/ (90/10), class = dominant hue (or brightness) plus noise:
    learnable, cheap."""
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
        im = Image.fromarray(arr)
        (im.convert("L") if gray else im).save(d / f"img{i:07d}.jpg", quality=85)


def scale_one(root: str, size: int, bs: int, batches: int) -> dict:
    """Runs in a fresh process: scan, cache, then train for `batches` batches over the whole set."""
    import torch
    from fastai.callback.core import Callback, CancelFitException

    from ..core.device import pick_device
    from ..data.cache import open_or_build
    from ..data.loaders import cached_dls
    from ..data.scan import scan
    from ..model.learner import build

    device = pick_device("auto")
    t = time.perf_counter()
    ds = scan(root)
    cache = open_or_build(ds, size, log=lambda *_: None)
    prep_s = time.perf_counter() - t
    cfg = TrainConfig(size=size, bs=bs, min_scale=0.35, loader="cached")
    dls = cached_dls(cache, cfg, size, device)
    learn = build(cfg, dls, Path(tempfile.mkdtemp(prefix="scale-run-")), device, lambda *a, **k: None)
    n_all = 0
    t = time.perf_counter()
    for xb, _ in dls.train:  # one full pass of the loader: every row is read once
        n_all += len(xb)
    loader_pass = n_all / (time.perf_counter() - t)

    class Stop(Callback):
        def after_batch(self):
            if self.training and self.iter + 1 >= batches:
                raise CancelFitException

    t = time.perf_counter()
    learn.fit(1, 1e-4, cbs=[Stop()])
    train_s = time.perf_counter() - t
    return {"images": len(ds.items), "prep_s": prep_s, "loader_img_s": loader_pass,
            "train_img_s": batches * bs / train_s, "peak_rss_mb": rss_mb(), "torch_threads": torch.get_num_threads()}


def run_scale(log=print, device: str = "auto", sizes=(10_000, 100_000), img_size: int = 64, bs: int = 64,
              batches: int = 30) -> dict:
    from ..core.device import pick_device
    from ..core.rundir import device_info, versions

    tmp = Path(tempfile.mkdtemp(prefix="app-scale-"))
    out = {"device": device_info(pick_device(device)), "size": img_size, "bs": bs, "batches": batches,
           "versions": versions(), "runs": []}
    try:
        for n in sizes:
            r = _one_size(tmp, n, img_size, bs, batches)
            out["runs"].append(r)
            log(f"  {r['images']:>7} images: peak host memory {r['peak_rss_mb']:.0f} MB, train {r['train_img_s']:.0f} "
                f"img/s, full loader pass {r['loader_img_s']:.0f} img/s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    a, b = out["runs"][0], out["runs"][-1]
    out["rss_growth"] = b["peak_rss_mb"] / a["peak_rss_mb"]
    out["images_growth"] = b["images"] / a["images"]
    return out


def _one_size(tmp: Path, n: int, img_size: int, bs: int, batches: int) -> dict:
    root = tmp / f"d{n}"
    t = time.perf_counter()
    make_images(root, n)
    gen_s = time.perf_counter() - t
    code = (f"import json; from app.bench.scale import scale_one; "
            f"print(json.dumps(scale_one({str(root)!r}, {img_size}, {bs}, {batches})))")
    env = {**os.environ, "APP_CACHE_DIR": str(tmp / "cache"), "PYTHONWARNINGS": "ignore"}
    p = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    shutil.rmtree(root, ignore_errors=True)
    if p.returncode:
        raise RuntimeError(p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "scale worker failed")
    return {**json.loads(p.stdout.strip().splitlines()[-1]), "generate_s": gen_s}

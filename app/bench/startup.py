"""`python -m app bench --scan`: the first two minutes of a run (issue 29). How fast a dataset is
read the first time, on 13k (Imagenette) and 40k (Tiny ImageNet) images, so the growth is seen:

- `header_scan`: what `train` does now, every file's header read (layout, classes, splits, sizes),
- `cache_build`: the decoded cache at the main job's stored sizes, the one full decode of each file,
  which also gives each file its verdict,
- `full_scan`: what `data` (and the old `train`) does, every file decoded to check it,
- `warm_scan`: the second run's scan (verdicts remembered),
- `first_batch`: README command 1's `train` itself, in a new process, stopped at its first batch:
  on a cold cache, then twice warm (the seconds of each phase, from its config.json).

Each arm runs in a private cache, in this order; the files are then in the OS page cache for the
arms after the first (said in the JSON), which favours the later arms."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from ..core.paths import PROJECT_ROOT

DATASETS = {"imagenette2-224": PROJECT_ROOT.parent / "shared" / "data" / "imagenette2-224",
            "tiny-imagenet-200-64": PROJECT_ROOT.parent / "shared" / "data" / "tiny-imagenet-200-64"}


def run_scan(data=None, log=print) -> dict:
    from ..core.rundir import device_info, versions
    from .keep import model_only_img_s

    sets = {Path(data).name: Path(data)} if data else {k: v for k, v in DATASETS.items() if v.is_dir()}
    tmp = Path(tempfile.mkdtemp(prefix="app-scan-"))
    try:
        res = {"device": device_info("cpu"), "versions": versions(),
               "host_model_only_img_s_128px": model_only_img_s(next(iter(sets.values())), tmp / "probe"),
               "page_cache": "the first arm of each dataset reads from disk, the later ones mostly from the OS page "
                             "cache", "datasets": {}}
        for name, root in sets.items():
            res["datasets"][name] = _one(root, tmp / name, log)
        first = next(iter(sets.values()))
        res["first_batch"] = {"data": str(first), **first_batch(first, tmp / "first-batch", log)}
        return res
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _one(root: Path, tmp: Path, log) -> dict:
    import os

    from ..core.config import TrainConfig
    from ..data.cache import open_or_build_all, stored_size
    from ..data.scan import scan
    from ..training.presets import PRESETS, fit_size_to_images

    out = {}
    os.environ["APP_CACHE_DIR"] = str(tmp / "cache")
    t = time.perf_counter()
    ds = scan(root, verify="header")
    out["header_scan"] = _rate(len(ds.items), time.perf_counter() - t)
    cfg = fit_size_to_images(TrainConfig(**{k: v for k, v in PRESETS["cpu-quick"].items()}), ds.median_side())
    sizes = sorted({stored_size(s) for s in cfg.sizes()})
    t = time.perf_counter()
    open_or_build_all(ds, sizes, log=lambda *_: None)
    out["cache_build"] = {**_rate(len(ds.items), time.perf_counter() - t), "stored_sizes": sizes}
    t = time.perf_counter()
    scan(root, verify="header")
    out["warm_scan"] = _rate(len(ds.items), time.perf_counter() - t)
    os.environ["APP_CACHE_DIR"] = str(tmp / "cache-full")
    t = time.perf_counter()
    scan(root, verify=True)
    out["full_scan"] = _rate(len(ds.items), time.perf_counter() - t)
    out["first_run_s"] = {"now (header scan + cache build)": round(out["header_scan"]["s"] + out["cache_build"]["s"], 1),
                          "before (full scan + cache build)": round(out["full_scan"]["s"] + out["cache_build"]["s"], 1)}
    log(f"  {root.name}: {len(ds.items)} images; header scan {out['header_scan']['img_s']:.0f} img/s, cache build "
        f"{out['cache_build']['img_s']:.0f} img/s, full scan {out['full_scan']['img_s']:.0f} img/s, warm scan "
        f"{out['warm_scan']['s']:.1f} s")
    return out


def _rate(n: int, s: float) -> dict:
    return {"images": n, "s": round(s, 2), "img_s": round(n / max(s, 1e-9), 1)}


FIRST_BATCH_RUNS = ("cold", "warm", "warm")


def first_batch(root: Path, tmp: Path, log, minutes: float = 5.0) -> dict:
    """`train --data ROOT --time MINUTES` as a user starts it, stopped (Ctrl-C) at its first batch: the
    phases before it on a cold cache (a private one), then warm twice."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "APP_CACHE_DIR": str(tmp / "cache"), "APP_RUNS_DIR": str(tmp / "runs"),
           "APP_MODELS_DIR": str(tmp / "models"), "APP_PROGRESS": "0"}
    runs = []
    for i, kind in enumerate(FIRST_BATCH_RUNS):
        run = tmp / f"run{i}"
        p = subprocess.Popen([sys.executable, "-m", "app", "train", "--data", str(root), "--time", str(minutes),
                              "--out", str(run)], cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        try:
            cfg = _until_first_batch(run / "config.json", p)
        finally:
            _stop(p)
        phases = cfg.get("phases", {})
        runs.append({"cache": kind, "first_batch_s": phases.get("first_batch"), "phases_s": phases,
                     "speeds_source": cfg.get("speeds_source"),
                     "precision_choice": cfg.get("precision_choice"), "exit": p.returncode})
        log(f"  first batch ({kind} cache): {phases.get('first_batch')} s after the start ({(runs[-1]['speeds_source'] or {}).get('source')})")
    return {"command": f"python -m app train --data DATA --time {minutes:g}, stopped at its first batch", "runs": runs}


def _until_first_batch(config: Path, p, timeout_s: float = 900.0) -> dict:
    import json

    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            cfg = json.loads(config.read_text(encoding="utf-8"))
            if "first_batch" in cfg.get("phases", {}):
                return cfg
        except (OSError, ValueError):
            pass
        if p.poll() is not None:
            return {}
        time.sleep(0.2)
    return {}


def _stop(p) -> None:
    import signal
    import subprocess

    if p.poll() is None:
        p.send_signal(signal.SIGINT)  # as a user stops it; a run stopped so is left resumable
        try:
            p.wait(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

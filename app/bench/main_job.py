"""`python -m app bench --precision-budget MINUTES`: the main job (`train --time MINUTES`, random
init, Imagenette) in fp32 and in bf16 at equal budget, --seeds seeds each, on this host (issue 29).

A budgeted run is judged at equal time: bf16 trains more epochs in the same minutes, and the
question is whether they outweigh its small loss per epoch. Each arm runs as a user runs it (a new
process), interleaved (fp32, bf16, fp32, ...: a slow stretch of the host costs both), on one warm
decoded cache built before the first (so no arm pays the first run's decode). The JSON gives each
arm's accuracy, epochs, fitted seconds and phases, and per precision the mean and range."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..core.errors import AppError
from ..core.paths import PROJECT_ROOT
from .timing import command_line

PRECISIONS = ("fp32", "bf16")


def run_precision_budget(data=None, minutes: float = 15.0, seeds: int = 3, log=print) -> dict:
    from ..core.device import cpu_bf16
    from ..core.rundir import device_info, versions
    from ..data.download import resolve_data
    from .keep import model_only_img_s

    tmp = Path(tempfile.mkdtemp(prefix="app-precision-"))
    try:
        root = resolve_data(str(data) if data else None)
        res = {"device": device_info("cpu"), "versions": versions(), "command": command_line(), "cpu_bf16": cpu_bf16(),
               "budget_minutes": minutes, "data": str(root), "seeds": seeds,
               "host_model_only_img_s_128px": model_only_img_s(root, tmp / "probe"), "arms": []}
        log(f"precision at equal budget: train --time {minutes:g} in fp32 and bf16, {seeds} seed(s) each; this host "
            f"trains the model alone at {res['host_model_only_img_s_128px']:.0f} img/s (128 px, fp32)")
        _warm_cache(root, tmp / "cache")
        for seed in range(seeds):
            for p in PRECISIONS:
                arm = _arm(root, minutes, p, seed, tmp)
                res["arms"].append(arm)
                log(f"  seed {seed} {p}: {arm['accuracy'] * 100:.2f} % in {arm['epochs']} epochs "
                    f"(fit {arm['fit_s']:.0f} s, wall {arm['wall_s']:.0f} s)")
        res["summary"] = _summary(res["arms"])
        res["host_model_only_img_s_128px_after"] = model_only_img_s(root, tmp / "probe2")
        s = res["summary"]
        log(f"  fp32 {s['fp32']['accuracy_mean'] * 100:.2f} % ({s['fp32']['epochs_mean']:.1f} epochs), bf16 "
            f"{s['bf16']['accuracy_mean'] * 100:.2f} % ({s['bf16']['epochs_mean']:.1f} epochs): bf16 "
            f"{'wins' if s['bf16_wins'] else 'does not win'} at equal time on this host")
        return res
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _warm_cache(root: Path, cache: Path) -> None:
    """The main job's decoded cache, built once, before any arm (each arm then finds it current)."""
    old = os.environ.get("APP_CACHE_DIR")
    os.environ["APP_CACHE_DIR"] = str(cache)
    try:
        from ..core.config import TrainConfig
        from ..data.cache import open_or_build_all, stored_size
        from ..data.scan import scan
        from ..training.presets import PRESETS, fit_size_to_images

        ds = scan(root, verify="header")
        cfg = fit_size_to_images(TrainConfig(**PRESETS["cpu-quick"]), ds.median_side())
        open_or_build_all(ds, sorted({stored_size(s) for s in cfg.sizes()}), log=lambda *_: None)
    finally:
        os.environ.pop("APP_CACHE_DIR") if old is None else os.environ.__setitem__("APP_CACHE_DIR", old)


def _arm(root: Path, minutes: float, precision: str, seed: int, tmp: Path) -> dict:
    from .keep import _result

    out = tmp / f"{precision}-{seed}"
    env = {**os.environ, "APP_CACHE_DIR": str(tmp / "cache"), "APP_MODELS_DIR": str(tmp / "models"),
           "APP_PROGRESS": "0", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "app", "train", "--data", str(root), "--time", f"{minutes:g}", "--weights", "none",
           "--precision", precision, "--seed", str(seed), "--out", str(out)]
    t0 = time.time()
    p = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, encoding="utf-8")
    wall = time.time() - t0
    if p.returncode:
        last = (p.stderr.strip().splitlines() or ["no message"])[-1].removeprefix("error: ")
        raise AppError(f"bench --precision-budget: train --precision {precision} failed: {last}", code=p.returncode)
    res = _result(out, cmd, wall, minutes, None, p.stdout)
    import json

    meta = json.loads((out / "config.json").read_text(encoding="utf-8"))
    res.update(precision=meta["config"]["precision"], seed=seed, phases=meta.get("phases"))
    return res


def _summary(arms: list[dict]) -> dict:
    out = {}
    for p in PRECISIONS:
        acc = [a["accuracy"] for a in arms if a["precision"] == p]
        ep = [a["epochs"] for a in arms if a["precision"] == p]
        out[p] = {"accuracy_mean": round(statistics.mean(acc), 4), "accuracy_min": min(acc), "accuracy_max": max(acc),
                  "epochs_mean": round(statistics.mean(ep), 1), "epochs": ep, "n": len(acc)}
    out["bf16_minus_fp32_points"] = round(100 * (out["bf16"]["accuracy_mean"] - out["fp32"]["accuracy_mean"]), 2)
    out["bf16_wins"] = out["bf16_minus_fp32_points"] > 0
    return out

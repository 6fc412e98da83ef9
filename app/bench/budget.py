"""`python -m app bench --budget MINUTES`: the fair comparison, same machine, same minutes.

On Imagenette and on a generated dataset unlike it (small grayscale pictures of shapes, four
classes with other names), the main job (`train --weights none`) and fastai's defaults
(`fit-one-cycle --preset fastai-default`) each get the same wall-clock budget (`--time`), run as a
user runs them: a new process each, a cold cache each. Imagenette gets MINUTES, the small dataset a
third of them; `--data DIR` runs that dataset alone, given MINUTES. Accuracy, planned and actual
time, and the size of every figure and of the report, for both, as JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..core.paths import PROJECT_ROOT
from .timing import command_line

SHAPES = ["circle", "square", "triangle", "cross"]


ARMS = {
    "ours": ["train", "--weights", "none"],
    "fastai_default": ["fit-one-cycle", "--preset", "fastai-default"],
}


def make_shapes(root: Path, per_class: int = 600, val_per_class: int = 150, side: int = 48, seed: int = 0) -> Path:
    """Grayscale `side`-px pictures of four shapes: random size, place, rotation, grey levels and
    noise. Nothing like Imagenette: small, few classes, one channel, other names."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("val", val_per_class)):
        for shape in SHAPES:
            d = root / split / shape
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                bg, fg = rng.integers(0, 256, 2)
                if abs(int(bg) - int(fg)) < 35:
                    fg = (int(bg) + 128) % 256
                im = Image.new("L", (side * 2, side * 2), int(bg))
                draw = ImageDraw.Draw(im)
                _blob(draw, side, rng)  # a distractor: a blurred-edged ellipse of another grey
                _draw(draw, shape, side, rng, int(fg))
                im = im.rotate(float(rng.uniform(0, 360)), fillcolor=int(bg)).resize((side, side), Image.BILINEAR)
                a = np.clip(np.asarray(im, np.float32) + rng.normal(0, 30, (side, side)), 0, 255).astype(np.uint8)
                Image.fromarray(a, "L").save(d / f"{shape}_{i:04d}.png")
    return root


def _blob(draw, side: int, rng) -> None:
    x, y = (float(rng.uniform(0, 2 * side)) for _ in range(2))
    w, h = (float(rng.uniform(0.1, 0.4)) * side for _ in range(2))
    draw.ellipse([x - w, y - h, x + w, y + h], fill=int(rng.integers(0, 256)))


def _draw(draw, shape: str, side: int, rng, fill: int) -> None:
    r = float(rng.uniform(0.15, 0.5)) * side
    cx, cy = (float(rng.uniform(side - side / 3, side + side / 3)) for _ in range(2))
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    else:
        w = r / 3
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)


def run_budget(data=None, minutes: float = 15.0, log=print, device: str = "auto", datasets=("imagenette", "shapes"),
               small_minutes: float | None = None) -> dict:
    from ..core.device import pick_device
    from ..core.rundir import device_info, versions
    from ..data.download import resolve_data

    tmp = Path(tempfile.mkdtemp(prefix="app-budget-"))
    small_minutes = small_minutes or max(2.0, round(minutes / 3, 1))
    res = {"device": device_info(pick_device(device)), "versions": versions(), "command": command_line(),
           "budget_minutes": {"imagenette": minutes, "shapes": small_minutes}, "datasets": {}}
    try:
        roots = {"imagenette": resolve_data(str(data) if data else None)}
        if data:  # a dataset of the user's: that one alone, under its folder's name
            roots, datasets = {Path(data).name: roots["imagenette"]}, (Path(data).name,)
            res["budget_minutes"] = {datasets[0]: minutes}
        if "shapes" in datasets:
            roots["shapes"] = make_shapes(tmp / "shapes")
        for name in datasets:
            m = small_minutes if name == "shapes" else minutes
            arms = {arm: user_run(args, roots[name], m, tmp / f"{name}-{arm}", device) for arm, args in ARMS.items()}
            arms["gain_points"] = round(100 * (arms["ours"]["accuracy"] - arms["fastai_default"]["accuracy"]), 2)
            res["datasets"][name] = {"root": str(roots[name]), "minutes": m, **arms}
            log(f"  {name} ({m:g} min each): ours {arms['ours']['accuracy'] * 100:.2f} % in "
                f"{arms['ours']['wall_s']:.0f} s, fastai defaults {arms['fastai_default']['accuracy'] * 100:.2f} % in "
                f"{arms['fastai_default']['wall_s']:.0f} s ({arms['gain_points']:+.2f} points)")
        return res
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def user_run(args: list[str], data: Path, minutes: float, out: Path, device: str) -> dict:
    """One command as a user runs it: a new process, a cold cache, the budget from the prompt (the
    transfer bench's main job too)."""
    env = {**os.environ, "APP_CACHE_DIR": str(out) + "-cache", "APP_MODELS_DIR": str(out) + "-models",
           "APP_PROGRESS": "0", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "app", *args, "--data", str(data), "--time", f"{minutes:g}", "--device", device,
           "--out", str(out)]
    t = time.time()
    p = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    wall = time.time() - t
    if p.returncode:
        raise RuntimeError(f"{' '.join(args)} failed: {p.stderr.strip().splitlines()[-1:]}")
    meta = json.loads((out / "config.json").read_text(encoding="utf-8"))
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    plan = meta.get("plan", {})
    return {"command": "python -m app " + " ".join(cmd[3:]), "accuracy": m["accuracy"], "f1_macro": m["f1_macro"],
            "n_val": m["n"], "wall_s": round(wall, 1), "budget_s": minutes * 60, "over_budget": wall > minutes * 60,
            "epochs": meta["config"]["epochs"], "size": meta["config"]["size"], "preset": meta["config"]["preset"],
            "plan": plan.get("summary"), "predicted_s": plan.get("predicted_s"), "fit_s": meta.get("fit_seconds"),
            "precision": meta["config"].get("precision"), "precision_choice": meta.get("precision_choice"),
            "outputs": outputs(out)}


def outputs(run: Path) -> dict:
    """What a person opens after the run, by size: every figure's pixels and the report's bytes."""
    from PIL import Image

    figs = {}
    for f in sorted((run / "figures").glob("*.png")):
        with Image.open(f) as im:
            figs[f.name] = list(im.size)
    report = run / "report.html"
    return {"figures_px": figs, "report_bytes": report.stat().st_size if report.is_file() else None}

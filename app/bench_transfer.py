"""`python -m app bench --transfer`: what fine-tuning a pretrained body gains over training from
scratch, measured here, where ImageNet weights cannot be downloaded.

A source model is trained by the app from random init on 5 Imagenette classes (all their training
images) and exported; that is a small copy of ImageNet pretraining: features learned on some
classes, reused for others. On the other 5 classes, with K training images per class and all their
validation images, two arms train with the same epochs, size, data and seed: (a) fit-one-cycle
from random init, (b) fine-tune --weights SOURCE_BUNDLE. Each arm takes its lr from its own
lr-find run (the app's rule, `--lr-from`), as a user would. Every K is drawn again for each seed.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from .measure import command_line, private_cache
from .runs import read_json
from .settings import TrainConfig

SOURCE_CLASSES = ["n01440764", "n02102040", "n02979186", "n03000684", "n03028079"]  # tench .. church
TARGET_CLASSES = ["n03394916", "n03417042", "n03425413", "n03445777", "n03888257"]  # French horn .. parachute
SOURCE_RECIPE = dict(preset="cpu-quick", epochs=12, size=96, progressive="64:0.5", valid_every=12)
TARGET_RECIPE = dict(size=64, bs=16, epochs=12, label_smoothing=0.1, head_dropout=0.1, min_scale=0.6,
                     max_rotate=5.0, max_warp=0.0, max_lighting=0.0, wd=0.01, progressive="")


def run_transfer(data=None, log=print, device: str = "auto", ks=(10, 25, 100), seeds=(0, 1, 2),
                 json_path: Path | None = None, min_freeze_steps: int | None = None) -> dict:
    from .device import pick_device
    from .download import resolve_data
    from .runs import device_info, versions

    src = resolve_data(str(data) if data else None)
    tmp = Path(tempfile.mkdtemp(prefix="app-transfer-"))
    private_cache(tmp)
    os.environ["APP_MODELS_DIR"] = str(tmp / "models")  # the source bundle stays in the bench's folder
    t0 = time.time()
    res = {"device": device_info(pick_device(device)), "versions": versions(), "command": command_line(),
           "source_classes": SOURCE_CLASSES, "target_classes": TARGET_CLASSES, "target_recipe": TARGET_RECIPE,
           "min_freeze_steps": min_freeze_steps, "runs": []}
    try:
        res["source"] = _source(src, tmp, device, log)
        for seed in seeds:
            for k in ks:
                res["runs"].append(_one_draw(src, tmp, k, seed, res["source"]["bundle"], device, log,
                                             min_freeze_steps))
        res["by_k"] = summarise(res["runs"], ks)
        res["seconds"] = round(time.time() - t0, 1)
        if json_path:
            plot(res, Path(json_path).with_suffix(".png"))
            res["figure"] = str(Path(json_path).with_suffix(".png"))
        for row in res["by_k"]:
            log(f"  K={row['k']:>3}: scratch {row['scratch_accuracy'] * 100:.1f} %, transfer "
                f"{row['transfer_accuracy'] * 100:.1f} % ({row['gain'] * 100:+.1f} points, {row['seeds']} seeds)")
        return res
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _quiet():
    from rich.console import Console

    return Console(file=open(os.devnull, "w"))


def _train(cfg: TrainConfig, out: Path, weights: str, export: bool = False) -> dict:
    """One real training run (the library path the CLI takes, metrics without figures), quiet."""
    from .model import resolve_weights
    from .train import Finish, train

    t = time.time()
    run = train(cfg, out=str(out), weights=resolve_weights(weights), finish=Finish(figures=False, export=export),
                console=_quiet())
    return {"accuracy": read_json(run / "metrics.json")["accuracy"], "n": read_json(run / "metrics.json")["n"],
            "seconds": round(time.time() - t, 1), "lr": cfg.lr,
            "frozen_epochs": read_json(run / "config.json")["config"]["freeze_epochs"]}


def _lr(cfg: TrainConfig, out: Path) -> float:
    """The arm's lr: an lr-find run on its own learner (a pretrained body frozen, as fastai does),
    the app's recommendation."""
    from .lr_find import lr_find, lr_from_run

    return lr_from_run(lr_find(cfg.replace(command="lr-find"), out=str(out), console=_quiet()))


def _source(src: Path, tmp: Path, device: str, log) -> dict:
    from .settings import resolve
    from .subset import make_subset

    root = make_subset(src, tmp / "source-data", -1, -1, classes=SOURCE_CLASSES)
    cfg = resolve("fit-one-cycle", weights="none", data=root, device=device, **SOURCE_RECIPE)
    m = _train(cfg, tmp / "source", "none", export=True)
    log(f"  source: accuracy {m['accuracy'] * 100:.1f} % on the {m['n']} validation images of its 5 classes "
        f"({m['seconds']:.0f} s)")
    return {"accuracy": m["accuracy"], "seconds": m["seconds"], "bundle": str(tmp / "models" / "source"),
            "recipe": SOURCE_RECIPE, "train_images": sum(1 for _ in (root / "train").rglob("*.JPEG"))}


def _one_draw(src: Path, tmp: Path, k: int, seed: int, bundle: str, device: str, log, min_freeze_steps) -> dict:
    from .settings import resolve
    from .subset import make_subset

    root = make_subset(src, tmp / f"target-k{k}-s{seed}", k, -1, classes=TARGET_CLASSES, seed=seed)
    base = dict(TARGET_RECIPE, data=root, seed=seed, device=device, valid_every=TARGET_RECIPE["epochs"])
    scratch = resolve("fit-one-cycle", "none", "none", **base)
    scratch = scratch.replace(lr=_lr(scratch, tmp / f"lr-scratch-k{k}-s{seed}"))
    tune = resolve("fine-tune", "none", bundle, **{**base, "freeze_epochs": 1})
    if min_freeze_steps is not None:
        tune = tune.replace(min_freeze_steps=min_freeze_steps)
    tune = tune.replace(lr=_lr(tune, tmp / f"lr-transfer-k{k}-s{seed}"))
    # the same epochs in all: fine-tune's frozen epochs come out of its total
    a = _train(scratch, tmp / f"scratch-k{k}-s{seed}", "none")
    b = _train(tune.replace(epochs=max(1, tune.epochs - tune.freeze_epochs)), tmp / f"transfer-k{k}-s{seed}", bundle)
    log(f"  K={k:>3} seed {seed}: scratch {a['accuracy'] * 100:.1f} % (lr {a['lr']:.1e}), transfer "
        f"{b['accuracy'] * 100:.1f} % (lr {b['lr']:.1e}, {b['frozen_epochs']} frozen epoch(s))")
    return {"k": k, "seed": seed, "scratch_accuracy": a["accuracy"], "transfer_accuracy": b["accuracy"],
            "scratch_lr": a["lr"], "transfer_lr": b["lr"], "transfer_frozen_epochs": b["frozen_epochs"],
            "scratch_seconds": a["seconds"], "transfer_seconds": b["seconds"]}


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(runs: list[dict], ks) -> list[dict]:
    """Per K: the mean of each arm over the seeds, their spread, and the gain."""
    out = []
    for k in ks:
        rows = [r for r in runs if r["k"] == k]
        a, b = [r["scratch_accuracy"] for r in rows], [r["transfer_accuracy"] for r in rows]
        out.append({"k": k, "seeds": len(rows), "scratch_accuracy": statistics.mean(a),
                    "transfer_accuracy": statistics.mean(b), "scratch_sd": _sd(a), "transfer_sd": _sd(b),
                    "gain": statistics.mean(b) - statistics.mean(a),
                    "scratch_seconds": statistics.mean(r["scratch_seconds"] for r in rows),
                    "transfer_seconds": statistics.mean(r["transfer_seconds"] for r in rows)})
    return out


def plot(res: dict, path: Path) -> Path:
    """Accuracy against training images per class, one line per arm (mean and spread over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res["by_k"]
    k = [r["k"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.3))
    for arm, label in (("scratch", "fit-one-cycle from random init"),
                       ("transfer", "fine-tune from the source model")):
        ax.errorbar(k, [100 * r[f"{arm}_accuracy"] for r in rows], yerr=[100 * r[f"{arm}_sd"] for r in rows],
                    marker="o", capsize=4, label=label)
    ax.axhline(20, color="gray", ls=":", lw=1, label="chance (5 classes)")
    ax.set_xscale("log")
    ax.set_xticks(k, [str(x) for x in k])
    ax.set(xlabel="training images per class (K)", ylabel="validation accuracy (%)",
           title=f"Transfer vs scratch on 5 unseen classes (source {100 * res['source']['accuracy']:.1f} % on its own)")
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight", facecolor="white", dpi=110)
    plt.close(fig)
    return path

"""`python -m app bench --transfer`: what fine-tuning a pretrained body gains over training from
scratch, measured here, where ImageNet weights cannot be downloaded.

A source model is trained by the app from random init on 5 Imagenette classes (all their training
images) and exported; that is a small copy of ImageNet pretraining: features learned on some
classes, reused for others. On the other 5 classes, with K training images per class and all their
validation images, three arms train with the same epochs, size, data and seed: (a) fit-one-cycle
from random init, (b) fine-tune --weights SOURCE_BUNDLE, (c) the same with --body-layers 2 (only
the source's first two convolutions: its deeper layers turned out too specific to its 5 classes to
transfer). Each arm takes its lr from its own lr-find run (the app's rule, `--lr-from`), as a user
would. Every K is drawn again for each seed.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

from ..core.config import TrainConfig
from ..core.files import read_json
from .timing import command_line, private_cache

SOURCE_CLASSES = ["n01440764", "n02102040", "n02979186", "n03000684", "n03028079"]  # tench .. church


TARGET_CLASSES = ["n03394916", "n03417042", "n03425413", "n03445777", "n03888257"]  # French horn .. parachute


ARMS = {"scratch": None, "transfer": 0, "transfer_2_layers": 2}  # arm: --body-layers (None: random init)


SOURCE_RECIPE = dict(preset="cpu-quick", epochs=12, size=96, progressive="64:0.5", valid_every=12)


TARGET_RECIPE = dict(size=64, bs=16, epochs=12, label_smoothing=0.1, head_dropout=0.1, min_scale=0.6,
                     max_rotate=5.0, max_warp=0.0, max_lighting=0.0, wd=0.01, progressive="")


def run_transfer(data=None, log=print, device: str = "auto", ks=(10, 25, 100), seeds=(0, 1, 2),
                 json_path: Path | None = None, min_freeze_steps: int | None = None) -> dict:
    from ..core.device import pick_device
    from ..core.rundir import device_info, versions
    from ..data.download import resolve_data

    src = resolve_data(str(data) if data else None)
    tmp = Path(tempfile.mkdtemp(prefix="app-transfer-"))
    private_cache(tmp)
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
            log(f"  K={row['k']:>3} ({row['seeds']} seeds): scratch {row['scratch_accuracy'] * 100:.1f} %, transfer "
                f"{row['transfer_accuracy'] * 100:.1f} % ({row['transfer_gain'] * 100:+.1f}), 2 layers "
                f"{row['transfer_2_layers_accuracy'] * 100:.1f} % ({row['transfer_2_layers_gain'] * 100:+.1f})")
        return res
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _quiet():
    from rich.console import Console

    return Console(quiet=True)


def _train(cfg: TrainConfig, out: Path, weights: str, export: bool = False) -> dict:
    """One real training run (the library path the CLI takes, metrics without figures), quiet."""
    from ..model.weights import resolve_weights
    from ..training.after_fit import Finish
    from ..training.train import train

    t = time.time()
    run = train(cfg, out=str(out), weights=resolve_weights(weights), finish=Finish(figures=False, export=export),
                console=_quiet())
    return {"accuracy": read_json(run / "metrics.json")["accuracy"], "n": read_json(run / "metrics.json")["n"],
            "seconds": round(time.time() - t, 1), "lr": cfg.lr,
            "frozen_epochs": read_json(run / "config.json")["config"]["freeze_epochs"]}


def _lr(cfg: TrainConfig, out: Path) -> float:
    """The arm's lr: an lr-find run on its own learner (a pretrained body frozen, as fastai does),
    the app's recommendation."""
    from ..training.lr_find import lr_find, lr_from_run

    return lr_from_run(lr_find(cfg.replace(command="lr-find"), out=str(out), console=_quiet()))


def _source(src: Path, tmp: Path, device: str, log) -> dict:
    from ..data.scan import scan
    from ..data.subset import make_subset
    from ..shipping.export import EXPORT_DIR
    from ..training.presets import resolve

    root = make_subset(src, tmp / "source-data", -1, -1, classes=SOURCE_CLASSES)
    cfg = resolve("fit-one-cycle", weights="none", data=root, device=device, **SOURCE_RECIPE)
    m = _train(cfg, tmp / "source", "none", export=True)
    log(f"  source: accuracy {m['accuracy'] * 100:.1f} % on the {m['n']} validation images of its 5 classes "
        f"({m['seconds']:.0f} s)")
    return {"accuracy": m["accuracy"], "seconds": m["seconds"], "bundle": str(tmp / "source" / EXPORT_DIR / "source"),
            "recipe": SOURCE_RECIPE, "train_images": len(scan(root).split("train"))}


def _one_draw(src: Path, tmp: Path, k: int, seed: int, bundle: str, device: str, log, min_freeze_steps) -> dict:
    from ..data.subset import make_subset
    from ..training.presets import resolve

    root = make_subset(src, tmp / f"target-k{k}-s{seed}", k, -1, classes=TARGET_CLASSES, seed=seed)
    base = dict(TARGET_RECIPE, data=root, seed=seed, device=device, valid_every=TARGET_RECIPE["epochs"])
    row = {"k": k, "seed": seed}
    for arm, layers in ARMS.items():
        if layers is None:
            cfg, weights = resolve("fit-one-cycle", "none", "none", **base), "none"
        else:  # the same epochs in all arms: fine-tune's frozen epoch comes out of its total
            cfg = resolve("fine-tune", "none", bundle, **{**base, "freeze_epochs": 1, "epochs": base["epochs"] - 1,
                                                         "body_layers": layers})
            cfg, weights = cfg.replace(min_freeze_steps=min_freeze_steps or 0), bundle
        cfg = cfg.replace(lr=_lr(cfg, tmp / f"lr-{arm}-k{k}-s{seed}"))
        r = _train(cfg, tmp / f"{arm}-k{k}-s{seed}", weights)
        row.update({f"{arm}_accuracy": r["accuracy"], f"{arm}_lr": r["lr"], f"{arm}_seconds": r["seconds"]})
    log(f"  K={k:>3} seed {seed}: " + ", ".join(f"{arm} {row[f'{arm}_accuracy'] * 100:.1f} % (lr {row[f'{arm}_lr']:.1e})"
                                              for arm in ARMS))
    return row


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(runs: list[dict], ks) -> list[dict]:
    """Per K: each arm's mean over the seeds, its spread, its seconds, and its gain over scratch."""
    out = []
    for k in ks:
        rows = [r for r in runs if r["k"] == k]
        row = {"k": k, "seeds": len(rows)}
        for arm in ARMS:
            acc = [r[f"{arm}_accuracy"] for r in rows]
            row.update({f"{arm}_accuracy": statistics.mean(acc), f"{arm}_sd": _sd(acc),
                        f"{arm}_seconds": statistics.mean(r[f"{arm}_seconds"] for r in rows)})
            if arm != "scratch":
                row[f"{arm}_gain"] = row[f"{arm}_accuracy"] - row["scratch_accuracy"]
        out.append(row)
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
                       ("transfer", "fine-tune from the source model (--weights SOURCE)"),
                       ("transfer_2_layers", "the same, its first 2 convolutions only (--body-layers 2)")):
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

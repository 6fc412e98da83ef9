"""`python -m app bench --transfer`: what fine-tuning a pretrained body gains over training from
scratch, measured here, where ImageNet weights cannot be downloaded.

The stand-in for ImageNet weights is a source model that the app trains itself, from random init,
on a many-class dataset none of whose classes are Imagenette's (default: Tiny ImageNet's 200
classes at 64 px beside the checkout; `--source-data DIR`), exported as a bundle. It is cached
outside the repository (cache_root()/sources/<key>/), keyed by the source dataset's fingerprint and
every training setting: reused while both match, trained again when either changes.

Two parts use it, on the target (Imagenette: all its classes and validation images):
- "arms": with K training images per class (drawn again for each seed) and with all of them,
  `fit-one-cycle` from random init against `fine-tune --weights SOURCE`, with the same epochs (the
  fine-tune's frozen epoch is one of them), size, batch size, images and seed; each arm takes its lr
  from its own lr-find run (the app's rule), as a user would.
- "main-job": `train --weights none --time M` against `train --weights SOURCE --time M`, each as a
  user runs it (a new process, a cold cache), with when each first reached 75 %.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from ..core.config import TrainConfig
from ..core.errors import DataError, RunError, UsageError
from ..core.files import read_json, write_json
from ..core.paths import SHARED_SOURCE_DATA, cache_root
from .timing import command_line

# The source: cpu-quick's regularisation at the source's own 64 px, no progressive resizing, 16 epochs
# (about 20 minutes on an idle 2-core host whose ceiling is 294 img/s at 128 px; the 8 epochs
# reached 15.6 %). lr 1e-3, cpu-quick's: 2e-3 left the first epoch near chance (0.9 % after 1 of 3
# epochs). The candidates and what each reached: benchmarks/runs/transfer-source-probes.json.
SOURCE_RECIPE = dict(preset="cpu-quick", size=64, progressive="", epochs=16, lr=1e-3, bs=64, min_scale=0.6,
                     valid_every=4)


SOURCE_FORMAT = 1  # what a cached source folder holds; a change here rebuilds every cached source


# The arms' shared recipe (64 px: the source's size; small batches for K = 10 images per class).
TARGET_RECIPE = dict(size=64, bs=16, epochs=12, label_smoothing=0.1, head_dropout=0.1, min_scale=0.6,
                     max_rotate=5.0, max_warp=0.0, max_lighting=0.0, wd=0.01, progressive="")


ARMS = {  # arm: (command, fine-tuned from the source, --body-layers)
    "scratch": ("fit-one-cycle", False, 0),
    "fine_tune": ("fine-tune", True, 0),
}


MAIN_JOB = {"scratch": ["train", "--weights", "none"], "fine_tune": ["train", "--weights", "{source}"]}


PARTS = ("arms", "main-job")  # --parts; "source" alone builds (or finds) the source and stops


KS = (10, 25, 100, "all")  # training images per class; "all": every one, with one seed


REACH = 0.75  # the main job's accuracy milestone: when each arm first reached it


def run_transfer(data=None, source_data=None, log=print, device: str = "auto", parts=PARTS, ks=KS, seeds: int = 3,
                 epochs: int | None = None, source_epochs: int | None = None, minutes: float = 15.0,
                 body_layers=(), json_path: Path | None = None, scratch_run: Path | None = None) -> dict:
    """The parts asked for, with the source they need; merged into `json_path`'s earlier results
    (a part not run this time keeps them), the figure drawn beside it."""
    from ..core.device import pick_device
    from ..core.rundir import device_info, versions
    from ..data.download import resolve_data

    t0, parts, ks, epochs = time.time(), _check_parts(parts), parse_ks(ks), epochs or TARGET_RECIPE["epochs"]
    if epochs < 2:
        raise UsageError(f"--epochs {epochs}: the arms need at least 2 (fine-tune's frozen epoch and one more)")
    source_root = source_dataset(source_data)
    target = resolve_data(str(data) if data else None)
    res = {"bench": "transfer", "device": device_info(pick_device(device)), "versions": versions(),
           "command": command_line(), "target_data": str(target), "host_ceiling_img_s_128px": [host_ceiling(target, device)]}
    log(f"  this host: model-only training {res['host_ceiling_img_s_128px'][0]:.0f} img/s at 128 px, bs 64")
    recipe = {**SOURCE_RECIPE, **({"epochs": source_epochs} if source_epochs else {})}
    res["source"] = source_model(source_root, recipe, device, log)
    try:
        with _private_dirs() as tmp:
            if "arms" in parts:
                res["arms"] = run_arms(target, res["source"], ks, seeds, epochs, _arms(body_layers), device, tmp, log)
            if "main-job" in parts:
                res["main_job"] = run_main_job(target, res["source"], minutes, device, tmp, log,
                                               scratch_run=scratch_run)
    except BaseException:  # a failed or interrupted part: what finished before it is kept
        if json_path:
            write_json(json_path, {**merged(json_path, res), "incomplete": True})
            log(f"  incomplete: the parts that finished are in {json_path}")
        raise
    res["host_ceiling_img_s_128px"].append(host_ceiling(target, device))
    res["seconds"] = round(time.time() - t0, 1)
    res = merged(json_path, res)
    if json_path and res.get("arms"):
        res["figure"] = str(plot(res, Path(json_path).with_suffix(".png")))
    return res


def _check_parts(parts) -> tuple:
    parts = tuple(p for p in parts if p != "source")
    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise UsageError(f"unknown --parts {', '.join(bad)} (choose from source, {', '.join(PARTS)})")
    return parts


def parse_ks(ks) -> tuple:
    """"10,25,100,all" (or a sequence) -> (10, 25, 100, "all"); UsageError for anything else."""
    items = [str(k).strip() for k in (ks.split(",") if isinstance(ks, str) else ks) if str(k).strip()]
    out = tuple("all" if k == "all" else int(k) if k.isdigit() and int(k) > 0 else None for k in items)
    if not out or None in out:
        raise UsageError(f"--ks {ks!r}: give training images per class as positive numbers or 'all', e.g. 10,25,all")
    return out


def source_dataset(source_data) -> Path:
    """--source-data, else the Tiny ImageNet copy beside the checkout; absent: one line (exit 3)."""
    root = Path(source_data).expanduser() if source_data else SHARED_SOURCE_DATA
    if not root.is_dir():
        raise DataError(f"no source dataset at {root}: the transfer bench trains its stand-in for ImageNet weights "
                        "on a many-class dataset (Tiny ImageNet, 200 classes at 64 px, is not downloaded here); "
                        "pass --source-data DIR (a folder holding train/<class>/ and val/<class>/)")
    return root


@contextmanager
def _private_dirs():
    """A temporary folder holding this bench's cold cache and exports, removed afterwards; the
    environment restored (nothing of the user's is read or touched)."""
    tmp = Path(tempfile.mkdtemp(prefix="app-transfer-"))
    with _env(APP_CACHE_DIR=tmp / "cache"):
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def _env(**values):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update({k: str(v) for k, v in values.items()})
    try:
        yield
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


# ---- the source: trained once per dataset and recipe, cached ----------------------------------------------

def source_config(root: Path, recipe: dict, device: str = "auto") -> TrainConfig:
    from ..training.presets import resolve

    return resolve("fit-one-cycle", weights="none", data=str(root), device=device, **recipe)


def source_key(fingerprint: str, cfg: TrainConfig) -> str:
    """The cache key: the dataset's fingerprint and every training setting (not where the data lies
    or which device trains it)."""
    settings = {k: v for k, v in cfg.to_dict().items() if k not in ("data", "device")}
    blob = json.dumps({"format": SOURCE_FORMAT, "data": fingerprint, "settings": settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def source_model(root: Path, recipe: dict, device: str = "auto", log=print, home: Path | None = None) -> dict:
    """The source bundle for this dataset and recipe: the cached one when both match, else trained
    now (the app's own training at the source's size), exported and cached. Its accuracy on its own
    validation images and its build time are in the result."""
    from ..data.scan import scan

    ds = scan(root)
    cfg = source_config(root, recipe, device)
    key = source_key(ds.fingerprint(), cfg)
    folder = (home or cache_root() / "sources") / key
    info = cached_source(folder, key)
    if info:
        log(f"  source: cached {folder} ({info['accuracy'] * 100:.1f} % on its {info['n_val']} validation images, "
            f"built in {info['build_s'] / 60:.1f} min)")
        return {**info, "reused": True}
    log(f"  source: training {cfg.epochs} epochs at {cfg.size} px on {len(ds.split('train'))} images of "
        f"{len(ds.classes)} classes ({root}); cached as {folder}")
    with _private_dirs():  # the source's decoded cache is the bench's own, removed afterwards
        info = build_source(ds, cfg, key, folder)
    log(f"  source: {info['accuracy'] * 100:.1f} % on its {info['n_val']} validation images "
        f"(chance {100 / len(ds.classes):.1f} %), built in {info['build_s'] / 60:.1f} min")
    return {**info, "reused": False}


def cached_source(folder: Path, key: str) -> dict | None:
    """A complete cached source (its record and its bundle), else None."""
    try:
        info = json.loads((folder / "source.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if info.get("key") != key or not (folder / "bundle" / "model.json").is_file():
        return None
    return {**info, "bundle": str(folder / "bundle")}


def build_source(ds, cfg: TrainConfig, key: str, folder: Path) -> dict:
    """Trains and exports the source in a folder beside the cache's, renamed into place only when
    complete (a killed build leaves no half-made source)."""
    work = folder.parent / f".building-{key}-{os.getpid()}"
    _sweep_dead_builds(folder.parent)
    shutil.rmtree(work, ignore_errors=True)
    t = time.time()
    try:
        from ..shipping.export import EXPORT_DIR

        m = _train(cfg, work / "run" / "source", "none", export=True, ds=ds)
        os.replace(work / "run" / "source" / EXPORT_DIR / "source", work / "bundle")
        shutil.rmtree(work / "run" / "source" / EXPORT_DIR)  # the pickle: the bundle is what fine-tuning reads
        shutil.rmtree(work / "run" / "source" / "models", ignore_errors=True)  # checkpoints: not needed again
        info = {"key": key, "data": str(ds.root), "fingerprint": ds.fingerprint(), "classes": len(ds.classes),
                "train_images": len(ds.split("train")), "settings": cfg.to_dict(), "accuracy": m["accuracy"],
                "n_val": m["n_val"], "epochs": m["epochs"], "build_s": round(time.time() - t, 1),
                "fit_s": m["fit_s"], "accuracy_per_epoch": m["curve"], "built": time.strftime("%Y-%m-%d %H:%M")}
        write_json(work / "source.json", info)
        if folder.exists():  # an incomplete or stale entry of this key: the cache's own, replaced
            shutil.rmtree(folder)
        os.replace(work, folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {**info, "bundle": str(folder / "bundle")}


def _sweep_dead_builds(parent: Path) -> None:
    """Builds killed before they finished (.building-KEY-PID of a process that no longer runs): removed."""
    import psutil

    for d in parent.glob(".building-*-*"):
        pid = d.name.rpartition("-")[2]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(d, ignore_errors=True)


# ---- one training run, read back from its files -----------------------------------------------------------

def _quiet():
    from rich.console import Console

    return Console(quiet=True)


def _train(cfg: TrainConfig, out: Path, weights: str, export: bool = False, ds=None) -> dict:
    """One real training run (the library path the CLI takes, metrics without figures), quiet; what
    it did is read back from its own files (history, batches, metrics, config)."""
    from ..model.weights import resolve_weights
    from ..training.after_fit import Finish
    from ..training.train import train

    t = time.time()
    run = train(cfg, out=str(out), weights=resolve_weights(weights), finish=Finish(figures=False, export=export),
                console=_quiet(), ds=ds)
    m, meta, hist = read_json(run / "metrics.json"), read_json(run / "config.json"), history(run)
    with open(run / "batches.csv", newline="", encoding="utf-8") as f:
        samples = int(list(csv.DictReader(f))[-1]["samples"])
    return {"accuracy": m["accuracy"], "n_val": m["n"], "lr": meta["config"]["lr"], "seconds": round(time.time() - t, 1),
            "fit_s": meta["fit_seconds"], "epochs": len(hist), "frozen_epochs": sum(r["phase"] == "frozen" for r in hist),
            "sizes": sorted({int(r["size"]) for r in hist}), "bs": meta["config"]["bs"], "samples_seen": samples,
            "curve": [[int(r["epoch"]), float(r["accuracy"]), float(r.get("elapsed_s") or "nan")]
                      for r in hist if r["accuracy"]]}


def history(run: Path) -> list[dict]:
    with open(Path(run) / "history.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _lr(cfg: TrainConfig, out: Path) -> float:
    """The arm's lr: an lr-find run on its own learner (a pretrained body frozen, as fastai does),
    the app's recommendation."""
    from ..training.lr_find import lr_find, lr_from_run

    return lr_from_run(lr_find(cfg.replace(command="lr-find"), out=str(out), console=_quiet()))


# ---- the arms: K images per class, both ways, equal budgets -----------------------------------------------

def _arms(body_layers=()) -> dict:
    """The arms table, with a `fine-tune --body-layers N` arm for each N asked for."""
    return {**ARMS, **{f"fine_tune_{n}_layers": ("fine-tune", True, int(n)) for n in body_layers}}


def arm_config(spec: tuple, root: Path, seed: int, epochs: int, source: str, device: str = "auto") -> TrainConfig:
    """Equal budgets: every arm has the same recipe, total epochs, size, batch size, images and seed;
    a fine-tune's frozen epoch is one of its `epochs`."""
    from ..training.presets import resolve

    command, pretrained, layers = spec
    base = dict(TARGET_RECIPE, data=str(root), seed=seed, device=device, epochs=epochs, valid_every=epochs)
    if not pretrained:
        return resolve(command, "none", "none", **base)
    return resolve(command, "none", source, **{**base, "freeze_epochs": 1, "epochs": epochs - 1, "body_layers": layers})


def draw(src: Path, dst: Path, k, seed: int, val_from: Path | None = None) -> Path:
    """K random training images per class of `src` ("all": every one) and all its validation
    images, as hard links in `dst` (copies where links cannot be made), in any layout the app reads.
    `val_from`: a folder holding the validation images once, linked from then on (made on first use)."""
    from ..data.subset import make_subset, put

    if val_from is not None and not val_from.is_dir():
        make_subset(src, val_from, 0, -1, seed=seed, link=True)
    make_subset(src, dst, -1 if k == "all" else int(k), 0 if val_from is not None else -1, seed=seed, link=True)
    if val_from is not None:
        for p in (val_from / "val").rglob("*"):
            if p.is_file():
                put(p, dst / p.relative_to(val_from), link=True)
    return dst


def run_arms(target: Path, source: dict, ks, seeds: int, epochs: int, arms: dict, device: str, tmp: Path,
             log) -> dict:
    """Every draw (K per class, seed) and arm; all data with the first seed only."""
    t, runs = time.time(), []
    for seed in range(seeds):
        for k in ks:
            if k == "all" and seed > 0:
                continue
            runs.append(one_draw(target, tmp, k, seed, source["bundle"], arms, epochs, device, log))
    by_k = summarise(runs, ks, arms)
    for row in by_k:
        log(f"  K={row['k']:>3} ({row['seeds']} seed(s)): " + ", ".join(
            f"{arm} {row[arm]['accuracy'] * 100:.1f} %" + (f" ({row[arm]['gain'] * 100:+.1f})" if arm != "scratch" else "")
            for arm in arms))
    return {"source_key": source["key"], "recipe": {**TARGET_RECIPE, "epochs": epochs},
            "arms": {a: {"command": c, "from_source": p, "body_layers": n} for a, (c, p, n) in arms.items()},
            "runs": runs, "by_k": by_k, "seconds": round(time.time() - t, 1)}


def one_draw(target: Path, tmp: Path, k, seed: int, bundle: str, arms: dict, epochs: int, device: str, log) -> dict:
    """One draw of K images per class, every arm trained on it; its folders removed afterwards."""
    from ..core.paths import dataset_cache_dir
    from ..data.scan import scan

    root = draw(target, tmp / f"target-k{k}-s{seed}", k, seed, val_from=tmp / "target-val")
    ds = scan(root)
    row = {"k": k, "seed": seed, "classes": len(ds.classes), "train_images": len(ds.split("train")),
           "val_images": len(ds.split("val"))}
    for arm, spec in arms.items():
        cfg = arm_config(spec, root, seed, epochs, bundle, device)
        cfg = cfg.replace(lr=_lr(cfg, tmp / f"lr-{arm}-k{k}-s{seed}"))
        row[arm] = _train(cfg, tmp / f"{arm}-k{k}-s{seed}", cfg.weights)  # its own scan: verdicts remembered
        shutil.rmtree(tmp / f"{arm}-k{k}-s{seed}" / "models", ignore_errors=True)
    log(f"  K={k:>3} seed {seed}: " + ", ".join(
        f"{arm} {row[arm]['accuracy'] * 100:.1f} % (lr {row[arm]['lr']:.1e})" for arm in arms))
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(dataset_cache_dir(root), ignore_errors=True)
    return row


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(runs: list[dict], ks, arms) -> list[dict]:
    """Per K: each arm's mean accuracy over the seeds, its spread and seconds, its gain over scratch."""
    out = []
    for k in ks:
        rows = [r for r in runs if r["k"] == k]
        if not rows:
            continue
        row = {"k": k, "seeds": len(rows), "classes": rows[0]["classes"],
               "train_images": statistics.mean(r["train_images"] for r in rows)}
        for arm in arms:
            acc = [r[arm]["accuracy"] for r in rows]
            row[arm] = {"accuracy": statistics.mean(acc), "sd": _sd(acc), "per_seed": acc,
                        "seconds": statistics.mean(r[arm]["seconds"] for r in rows)}
            if arm != "scratch":
                row[arm]["gain"] = row[arm]["accuracy"] - row["scratch"]["accuracy"]
        out.append(row)
    return out


# ---- the main job both ways --------------------------------------------------------------------------------

def run_main_job(target: Path, source: dict, minutes: float, device: str, tmp: Path, log, reach: float = REACH,
                 scratch_run: Path | None = None) -> dict:
    """`train --weights none` and `train --weights SOURCE`, the same --time, each a new process with
    a cold cache; accuracy, epochs, wall time and when each first reached `reach`. `scratch_run`: a
    finished `train --weights none` run of this host, data and budget, taken as the first arm."""
    from .budget import user_run

    t, out = time.time(), {"source_key": source["key"], "minutes": minutes, "reach": reach}
    for arm, args in MAIN_JOB.items():
        run = tmp / f"main-{arm}"
        if arm == "scratch" and scratch_run:
            run, r = Path(scratch_run), finished_scratch(Path(scratch_run), target, minutes)
        else:
            r = user_run([a.format(source=source["bundle"]) for a in args], target, minutes, run, device)
        out[arm] = {**r, **reached(run, reach)}
        when = out[arm]["time_to_reach_s"]
        log(f"  main job, {arm}: {r['accuracy'] * 100:.2f} % in {r['wall_s']:.0f} s ({out[arm]['epochs_trained']} epochs, "
            f"{r['preset']}); {reach * 100:.0f} % " + (f"after {when:.0f} s" if when is not None else "never reached"))
    out["gain_points"] = round(100 * (out["fine_tune"]["accuracy"] - out["scratch"]["accuracy"]), 2)
    a, b = out["scratch"]["time_to_reach_s"], out["fine_tune"]["time_to_reach_s"]
    out["fine_tune_sooner_by_s"] = round(a - b, 1) if a is not None and b is not None else None
    out["seconds"] = round(time.time() - t, 1)
    return out


def finished_scratch(run: Path, target: Path, minutes: float) -> dict:
    """A finished `train --weights none --time MINUTES` run on `target`, read as user_run reports one
    (its wall time: the run's own wall_seconds); UsageError when it is not that run."""
    from .budget import outputs

    try:
        meta, m = read_json(run / "config.json"), read_json(run / "metrics.json")
    except (OSError, ValueError, RunError) as e:
        raise UsageError(f"--scratch-run {run}: not a finished run ({e})") from None
    cfg = meta.get("config", {})
    same = (meta.get("status") == "finished" and meta.get("weights_used") == "none" and cfg.get("time") == minutes
            and Path(cfg.get("data", "")).resolve() == Path(target).resolve())
    if not same:
        raise UsageError(f"--scratch-run {run}: not a finished `train --weights none --time {minutes:g}` run on {target}")
    plan = meta.get("plan", {})
    return {"command": "reused: " + str(run), "reused_from": str(run), "accuracy": m["accuracy"],
            "f1_macro": m["f1_macro"], "n_val": m["n"], "wall_s": meta.get("wall_seconds"), "budget_s": minutes * 60,
            "over_budget": (meta.get("wall_seconds") or 0) > minutes * 60, "epochs": cfg.get("epochs"),
            "size": cfg.get("size"), "preset": cfg.get("preset"), "plan": plan.get("summary"),
            "predicted_s": plan.get("predicted_s"), "fit_s": meta.get("fit_seconds"), "precision": meta.get("precision"),
            "outputs": outputs(run)}


def reached(run: Path, reach: float) -> dict:
    """When a run's validated epochs first reached `reach`: seconds of fitting (history's elapsed_s)
    and from the command's start (plus what came before the fit: the plan's elapsed_s). A recipe that
    validates every Nth epoch (cpu-quick: 4) is seen at those epochs only: an upper bound."""
    meta = read_json(Path(run) / "config.json")
    before = (meta.get("plan") or {}).get("elapsed_s")
    curve = [[int(r["epoch"]), float(r["accuracy"]), float(r["elapsed_s"])] for r in history(run) if r["accuracy"]]
    first = next((c for c in curve if c[1] >= reach), None)
    fit_t = first[2] if first else None
    return {"curve": curve, "epochs_trained": len(history(run)), "epoch_reached": first[0] if first else None,
            "time_to_reach_fit_s": fit_t,
            "time_to_reach_s": round(fit_t + before, 1) if fit_t is not None and before is not None else None,
            "before_fit_s": before}


# ---- the results: merged JSON, the host's speed, the figure ------------------------------------------------

def merged(json_path: Path | None, res: dict) -> dict:
    """A part not run this time keeps its results from an earlier transfer bench in `json_path`."""
    if not json_path or not Path(json_path).is_file():
        return res
    try:
        old = json.loads(Path(json_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return res
    if old.get("bench") != "transfer":
        return res
    kept = {k: old[k] for k in ("arms", "main_job") if k in old and k not in res}
    other = sorted(k for k, v in kept.items() if v.get("source_key") != res.get("source", {}).get("key"))
    return {**res, **kept, **({"kept_from_earlier": sorted(kept)} if kept else {}),
            **({"kept_with_another_source": other} if other else {})}


def host_ceiling(target: Path, device: str, rounds: int = 3) -> float:
    """This host's model-only training img/s at 128 px, bs 64 (the speed bench's ceiling, best of
    `rounds`), so every time here can be read against the machine's speed at that moment."""
    from ..core.device import pick_device
    from ..data.cache import open_or_build, stored_size
    from ..data.loaders import cached_dls
    from ..data.scan import scan
    from ..data.subset import make_subset
    from ..model.learner import build
    from .timing import ceiling

    dev = pick_device(device, log=lambda *_: None)
    cfg = TrainConfig(size=128, bs=64, min_scale=0.35, label_smoothing=0.1)
    with _private_dirs() as tmp:
        ds = scan(make_subset(target, tmp / "data", 2, 1))
        dls = cached_dls(open_or_build(ds, stored_size(128), log=lambda *_: None), cfg, 128, dev)
        learn = build(cfg, dls, tmp, dev, lambda *_: None)
        return round(max(ceiling(learn, 128, 64, dev) for _ in range(rounds)), 1)


def _k_axis(row: dict) -> float:
    return row["train_images"] / row["classes"] if row["k"] == "all" else row["k"]


def plot(res: dict, path: Path) -> Path:
    """Accuracy against training images per class, one line per arm (mean, and the spread over
    seeds as error bars); all the data at its mean per class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, arms = res["arms"]["by_k"], res["arms"]["arms"]
    x = [_k_axis(r) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.3))
    for arm, spec in arms.items():
        label = ("fit-one-cycle from random init" if not spec["from_source"] else
                 "fine-tune --weights SOURCE" + (f" --body-layers {spec['body_layers']}" if spec["body_layers"] else ""))
        ax.errorbar(x, [100 * r[arm]["accuracy"] for r in rows], yerr=[100 * r[arm]["sd"] for r in rows],
                    marker="o", capsize=4, label=label)
    n = rows[0]["classes"]
    ax.axhline(100 / n, color="gray", ls=":", lw=1, label=f"chance ({n} classes)")
    ax.set_xscale("log")
    ax.set_xticks(x, [f"all\n({v:.0f})" if r["k"] == "all" else str(r["k"]) for v, r in zip(x, rows)])
    ax.minorticks_off()
    src = res["source"]
    ax.set(xlabel="training images per class (K; error bars: SD over seeds)", ylabel="validation accuracy (%)",
           title=f"Imagenette, fine-tuned from a {src['classes']}-class source ({100 * src['accuracy']:.1f} % "
                 "on its own) vs from scratch")
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight", facecolor="white", dpi=110)
    plt.close(fig)
    return path

"""K-fold cross-validation over a dataset's training images, for out-of-sample probabilities.

Each fold is a real training run of the recipe (the run's own settings, or `train`'s for a bare
dataset) on a `--labels` CSV of the dataset's own files, nothing copied: the other folds' images
train and this fold's validate, so the fold's evaluation scores exactly the images it never saw.
The CSVs and the fold runs are kept in the audit folder; each fold's decoded cache (keyed by its
CSV) is removed once the fold is done. Under a time budget each fold is a `--time` run with the
keeper of `train`, on a clock of its own (core/host.own_clock)."""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import DataError, UsageError


@dataclass
class Fold:
    index: int  # 1-based
    held_out: list[int]  # indices into the dataset's training items
    csv: Path
    run: Path


def check_folds(ds, k: int) -> None:
    """One line when K folds cannot be made: fewer than 2, or a class with fewer training images than
    folds (each fold must hold one out and train on the others)."""
    if k < 2:
        raise UsageError(f"--folds {k}: cross-validation needs at least 2 folds (each image is scored by a "
                         "model that did not train on it)")
    counts = ds.counts()["train"]
    small = [(ds.names[i], n) for i, n in enumerate(counts) if n < k]
    if not small:
        return
    name, n = min(small, key=lambda x: x[1])
    if n < 2:
        raise DataError(f"no room for {k} folds: class {name!r} has {n} training image, and cross-validation needs "
                        "at least 2 per class (one held out, one trained on): add images or leave the class out")
    raise DataError(f"no room for {k} folds: class {name!r} has only {n} training images ({len(small)} class(es) "
                    f"have fewer than {k}) and each fold holds one out: add images or pass --folds {n}")


def make_folds(ds, k: int, seed: int, folder: Path) -> list[Fold]:
    """Stratified folds (scikit-learn's StratifiedKFold) of the training images, each written as its
    labels CSV; nothing is written into the dataset."""
    from sklearn.model_selection import StratifiedKFold

    train = ds.split("train")
    y = np.array([it.label for it in train])
    folder.mkdir(parents=True, exist_ok=True)
    folds = []
    for i, (_, held) in enumerate(StratifiedKFold(k, shuffle=True, random_state=seed).split(y, y), start=1):
        f = Fold(i, held.tolist(), folder / f"fold-{i}.csv", folder / f"fold-{i}")
        _write_csv(f.csv, ds, train, set(f.held_out))
        folds.append(f)
    return folds


def _write_csv(path: Path, ds, train: list, held: set[int]) -> None:
    from ..core.files import atomic

    with atomic(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["fname", "label", "is_valid"])
        for i, it in enumerate(train):
            w.writerow([it.path.relative_to(ds.root).as_posix(), ds.classes[it.label], int(i in held)])


def fold_config(cfg, fold: Fold, minutes: float | None, n_train: int):
    """The recipe on this fold's CSV, with its share of the budget (None or 0: the recipe's epochs). A
    fold with fewer than two of the recipe's batches of images trains in batches of a quarter of them
    (fastai drops a last partial batch: a batch bigger than the fold would train nothing)."""
    n = n_train - len(fold.held_out)
    bs = cfg.bs if n >= 2 * cfg.bs else max(2, n // 4)
    return cfg.replace(labels=str(fold.csv.resolve()), lr_from="", time=float(minutes or 0.0), compile=False, bs=bs)


def train_fold(cfg, fold: Fold, weights, console=None, progress=None):
    """One fold's run, on a clock of its own; its held-out probabilities (probs.npz) come with it."""
    from ..core.host import own_clock
    from ..training.after_fit import Finish
    from ..training.train import train

    with own_clock():
        return train(cfg, out=str(fold.run), weights=weights, console=console, progress=progress,
                     finish=Finish(evaluate=True, figures=False, export=False, probs=True))


def held_out_probs(fold: Fold, ds) -> tuple[list[int], np.ndarray]:
    """(indices into the training items, their probabilities) from the fold run's probs.npz."""
    from ..core.files import read_json

    data = np.load(fold.run / "probs.npz")
    if read_json(fold.run / "config.json").get("classes") != list(ds.names):
        raise DataError(f"{fold.run} was trained on other classes than the dataset's (changed since?)")
    train = ds.split("train")
    index = {_key(it.path, ds.root): i for i, it in enumerate(train)}
    rows = [index.get(_key(Path(p), ds.root)) for p in data["paths"]]
    if any(r is None for r in rows):
        raise DataError(f"{fold.run}: its validation files are not the held-out ones of the dataset (changed since?)")
    return rows, data["probs"]


def _key(path: Path, root: Path) -> str:
    """A file's place in the dataset, whether the loader named it through the root or its real path."""
    for base in (root, root.resolve()):
        try:
            return Path(path).relative_to(base).as_posix()
        except ValueError:
            continue
    return Path(path).resolve().as_posix()


def drop_fold_cache(ds, cfg) -> None:
    """A fold's decoded caches (one per stored size, keyed by its CSV): built for the fold only."""
    from ..data.cache import cache_dir, stored_size

    for size in {stored_size(s) for s in cfg.sizes()}:
        shutil.rmtree(cache_dir(ds.root, size, cfg.resize, str(Path(cfg.labels).resolve())), ignore_errors=True)


def fold_record(fold: Fold, ds, seconds: float) -> dict:
    """What audit.json says about a fold: its run, sizes, accuracy on its held-out images, epochs."""
    from ..core.files import read_json

    m = read_json(fold.run / "metrics.json") if (fold.run / "metrics.json").is_file() else {}
    meta = read_json(fold.run / "config.json")
    n_train = len(ds.split("train"))
    return {"fold": fold.index, "run": str(fold.run), "csv": str(fold.csv), "trained_on": n_train - len(fold.held_out),
            "held_out": len(fold.held_out), "accuracy": m.get("accuracy"), "epochs": meta["config"]["epochs"],
            "seconds": round(seconds, 1), "plan": meta.get("plan", {}).get("summary")}

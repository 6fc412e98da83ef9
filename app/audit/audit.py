"""`python -m app audit RUN_OR_DATA`: label issues, train/validation leakage, near duplicates and
low-quality images of a dataset, into a run-like folder (audit.csv, audit.json, the figures, the
report with its audit section; the folds' runs in folds/). The dataset is only read.

Validation images are scored by the run's own model (a bare dataset: by the folds' models, averaged:
none of them trained on a validation image); training images by the K fold runs that held them out.
With a time budget (`--time`; on a CPU 30 minutes unless said), cleanvision runs first (it needs no
model), then the folds share what is left less what follows them, each re-planned when it starts."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import UsageError
from ..core.host import process_seconds
from ..training.budget import END_MARGIN
from . import folds as F

AUDIT_MINUTES_CPU = 30.0  # `audit` on a CPU keeps this promise unless --time says otherwise
AFTER_FOLDS_FIXED_S = 40.0  # cleanlab, Grad-CAM, figures, report (measured ~25 s on Imagenette) and margin
SCORE_IMG_S_GUESS = 150.0  # validation img/s assumed before the first fold measured this machine
CAM_FILES = 200  # Grad-CAM overlays written (worst label issues and leaked images first)


EXTRA = ("cleanlab", "cleanvision", "pytorch_grad_cam", "torchmetrics")


def check_target(target: Path, out=None) -> None:
    """Before any heavy import: the audit extra installed, the target there, --out free."""
    import importlib.util

    from ..core.errors import DataError
    from ..core.files import refuse_existing

    missing = [m for m in EXTRA if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"audit needs {', '.join(missing)}: pip install .[audit]")
    if not Path(target).exists():
        raise DataError(f"no such run or dataset folder: {target}")
    refuse_existing(out)


@dataclass
class Source:
    """What is audited: the recipe, the scanned dataset, its weights, and the run whose model scores
    validation (None: a bare dataset, scored by the folds)."""

    cfg: object
    ds: object
    weights: object
    run: Path | None = None
    notes: list[str] = field(default_factory=list)


def open_source(target: Path, weights=None, preset: str = "auto", device: str = "auto", dataset: dict | None = None,
                progress=None) -> Source:
    """A run (its settings, data and weights; refused without a trained model) or a dataset (the
    recipe `train` would use on it)."""
    from ..core.rundir import checkpoint_path, load_config
    from ..data.scan import scan_for
    from ..model.weights import resolve_weights

    target = Path(target)
    if (target / "config.json").is_file():
        cfg, meta = load_config(target)
        checkpoint_path(target, "last")  # a run without a model: one line, before any work
        if not Path(cfg.data).is_dir():
            from ..core.errors import DataError

            raise DataError(f"the run's data folder is gone: {cfg.data} (moved?)")
        src = Source(cfg.replace(device=device), scan_for(cfg, progress=progress), resolve_weights(cfg.weights), target)
    else:
        src = _dataset_source(target, weights, preset, device, dataset or {}, progress)
    if getattr(src.ds, "multi", False):
        from ..core.errors import DataError

        raise DataError(f"{target}: a multi-label dataset; audit finds label issues of one label per image only "
                        "(review RUN --train steps through a multi-label run's worst images)")
    return src


def _dataset_source(root: Path, weights, preset: str, device: str, dataset: dict, progress) -> Source:
    from ..core.device import trains_on_cuda
    from ..data.scan import scan_for
    from ..model.weights import resolve_weights
    from ..training.presets import fit_size_to_images, resolve

    w = resolve_weights(weights or "auto", progress=progress)
    cfg = resolve("train", preset, w.spec, trains_on_cuda(device), data=str(root.resolve()), device=device,
                  time=1.0, **{k: v for k, v in dataset.items() if v is not None})
    ds = scan_for(cfg, progress=progress)
    cfg = fit_size_to_images(cfg, ds.median_side()).replace(labels=ds.layout.labels if ds.layout else "")
    notes = [w.reason] if w.kind == "none" and weights in (None, "auto") else []
    return Source(cfg, ds, w, None, notes)


def budget_minutes(minutes: float | None, device: str, epochs: int | None = None) -> float:
    """--time as given; unset: AUDIT_MINUTES_CPU on a CPU, none (the recipe's epochs) on a GPU or with
    --epochs (each fold's epochs, which no budget re-plans)."""
    from ..core.device import trains_on_cuda

    if minutes and epochs:
        raise UsageError("--time plans each fold's epochs for this machine: give --time or --epochs, not both")
    if minutes is None:
        return 0.0 if trains_on_cuda(device) or epochs else AUDIT_MINUTES_CPU
    return float(minutes)


def fold_minutes(budget_min: float, folds_left: int, after_s: float) -> float:
    """Each remaining fold's share of what the budget has left once what follows the folds is set aside."""
    left = budget_min * 60 * (1 - END_MARGIN) - process_seconds() - after_s
    return max(left, 0.0) / folds_left / 60


def after_folds_seconds(src: Source, k: int, valid_img_s: float | None) -> float:
    """What follows the folds: one pass over every image (and K over validation for a bare dataset),
    then cleanlab, Grad-CAM, the figures and the report."""
    n_train, n_val = len(src.ds.split("train")), len(src.ds.split("val"))
    passes = n_train + n_val + (k * n_val if src.run is None else 0)
    return passes / (valid_img_s or SCORE_IMG_S_GUESS) * 1.2 + AFTER_FOLDS_FIXED_S


def run_folds(src: Source, folds: list, budget_min: float, console=None, progress=None, log=print) -> list[dict]:
    """Train every fold (each on its share of the time left) and keep its held-out probabilities."""
    records, valid_rate = [], None
    for n, fold in enumerate(folds):
        after = after_folds_seconds(src, len(folds), valid_rate)
        minutes = fold_minutes(budget_min, len(folds) - n, after) if budget_min else 0.0
        if budget_min and minutes < MIN_FOLD_MINUTES:
            raise _no_time(budget_min, len(folds), after)
        cfg = F.fold_config(src.cfg, fold, minutes, len(src.ds.split("train")))
        log(f"fold {fold.index}/{len(folds)}: training on {len(src.ds.split('train')) - len(fold.held_out)} images, "
            f"scoring the {len(fold.held_out)} held out" + (f" (--time {minutes:.2f} min)" if minutes else "")
            + (f"; batches of {cfg.bs}, not the recipe's {src.cfg.bs}: too few images for it" if cfg.bs != src.cfg.bs
               else ""))
        t0 = time.time()
        try:
            F.train_fold(cfg, fold, src.weights, console, progress)
        except UsageError as e:
            raise _no_room(e, budget_min, len(folds), n) from None
        finally:
            F.drop_fold_cache(src.ds, cfg)
        records.append(F.fold_record(fold, src.ds, time.time() - t0))
        valid_rate = _valid_rate(fold.run, src.cfg.size) or valid_rate
    return records


MIN_FOLD_MINUTES = 0.1  # a fold's share below this: not even worth measuring the machine


def _no_time(budget_min: float, k: int, after_s: float) -> UsageError:
    """The budget spent before the folds could start (what follows them set aside)."""
    need = (process_seconds() + after_s) / 60 + k
    return UsageError(f"no room for {k} folds in --time {budget_min:g}: what follows the folds needs about "
                      f"{after_s / 60:.1f} min and {process_seconds() / 60:.1f} min are spent; pass --time "
                      f"{int(np.ceil(need))} or more, or fewer --folds")


def _valid_rate(run: Path, size: int) -> float | None:
    from ..core.files import read_json

    speeds = read_json(run / "config.json").get("plan", {}).get("speeds", {}).get("valid", {})
    return speeds.get(str(size)) or speeds.get(size)


def _no_room(e: UsageError, budget_min: float, k: int, done: int) -> UsageError:
    """A fold's budget too short for a minimal run: said for the audit, with the --time that would hold them."""
    need = getattr(e, "need_minutes", None)
    if need is None:
        return e
    total = (process_seconds() / 60) + (k - done) * need * 1.1 + AFTER_FOLDS_FIXED_S / 60
    return UsageError(f"no room for {k} folds in --time {budget_min:g}: each fold needs about {need:.1f} min for a "
                      f"minimal run of the recipe on this machine; pass --time {int(np.ceil(total))} or more, or "
                      "fewer --folds")


def oos_probs(src: Source, folds: list) -> tuple[np.ndarray, np.ndarray]:
    """(every training image's probabilities from the fold that held it out, in the dataset's order;
    which images have them: a file that went bad after the scan has none)."""
    n_train, n_cls = len(src.ds.split("train")), len(src.ds.names)
    out = np.full((n_train, n_cls), np.nan, np.float32)
    for fold in folds:
        rows, probs = F.held_out_probs(fold, src.ds)
        out[rows] = probs
    known = ~np.isnan(out[:, 0])
    out[~known] = 1.0 / n_cls
    return out, known

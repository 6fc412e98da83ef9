"""How far the model's confidence can be trusted: expected calibration error (torchmetrics, 15
equal-width bins of top-1 confidence), the bins of a reliability diagram, and temperature scaling
fitted on the validation logits (model/bundle.py) and judged on images it was not fitted on: each
half of the validation set is scaled by the temperature fitted on the other half. The temperature
stored for `predict --calibrated` is fitted on all of them. Needs the audit extra (torchmetrics)."""

from __future__ import annotations

import numpy as np

N_BINS = 15


def available() -> bool:
    try:
        import torchmetrics  # noqa: F401
    except ImportError:
        return False
    return True


def ece(probs, targets, n_bins: int = N_BINS) -> float:
    """torchmetrics' multiclass expected calibration error (L1, top-1 confidence)."""
    import torch
    from torchmetrics.functional.classification import multiclass_calibration_error

    p = torch.as_tensor(np.asarray(probs, np.float32))
    return float(multiclass_calibration_error(p, torch.as_tensor(np.asarray(targets, np.int64)),
                                              num_classes=p.shape[1], n_bins=n_bins, norm="l1"))


def reliability_bins(probs, targets, n_bins: int = N_BINS) -> list[list[float]]:
    """[[bin low, bin high, mean confidence, accuracy, images], ...] for every bin (empty ones: 0)."""
    probs, targets = np.asarray(probs), np.asarray(targets)
    conf, right = probs.max(1), (probs.argmax(1) == targets).astype(np.float64)
    edges = np.linspace(0, 1, n_bins + 1)
    b = np.clip(np.digitize(conf, edges[1:-1]), 0, n_bins - 1)  # [lo, hi), as torchmetrics bins
    n = np.bincount(b, minlength=n_bins)
    mean_conf = np.bincount(b, conf, n_bins) / np.maximum(n, 1)
    acc = np.bincount(b, right, n_bins) / np.maximum(n, 1)
    return [[float(edges[i]), float(edges[i + 1]), float(mean_conf[i]), float(acc[i]), int(n[i])] for i in range(n_bins)]


def held_out_calibrated(logits, targets, seed: int = 0) -> tuple[np.ndarray, list[float]]:
    """(probabilities after temperature scaling, the two temperatures): the images split in two
    halves at random, each scaled by the temperature fitted on the other half."""
    from ..model.bundle import calibrated, fit_temperature

    logits, targets = np.asarray(logits, np.float64), np.asarray(targets)
    order = np.random.default_rng(seed).permutation(len(targets))
    halves = (order[: len(order) // 2], order[len(order) // 2 :])
    out, temps = np.empty(logits.shape, np.float32), []
    for fit_on, apply_to in (halves, halves[::-1]):
        t = fit_temperature(logits[fit_on], targets[fit_on])
        out[apply_to] = calibrated(logits[apply_to], t)
        temps.append(t)
    return out, temps


def log_probs(probs) -> np.ndarray:
    """Probabilities back to logits, up to one constant per image (softmax ignores it)."""
    return np.log(np.clip(np.asarray(probs, np.float64), 1e-30, 1.0))


def calibration_entry(probs, targets, logits=None, seed: int = 0) -> dict:
    """metrics.json's `calibration`: ECE and bins before, the temperature (fitted on every image),
    and ECE and bins after scaling, each half scaled by the temperature of the other."""
    from ..model.bundle import fit_temperature

    z = log_probs(probs) if logits is None else np.asarray(logits, np.float64)
    out = {"n_bins": N_BINS, "ece": ece(probs, targets), "bins": reliability_bins(probs, targets),
           "temperature": fit_temperature(z, targets), "n": int(len(targets))}
    if len(targets) >= 4:
        after, temps = held_out_calibrated(z, targets, seed)
        out.update(ece_after=ece(after, targets), bins_after=reliability_bins(after, targets),
                   temperatures_of_halves=temps)
    return out

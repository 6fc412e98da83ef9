"""Multi-label evaluation (several labels per image): one threshold per label chosen on the
validation set, scikit-learn's per-label precision, recall, F1 and average precision, micro and
macro F1, mAP, Hamming loss and the per-label confusion counts, and the top losses as the labels
an image missed and the ones it got wrong. Pure functions of (probabilities, targets)."""

from __future__ import annotations

import numpy as np

THRESHOLD_FLOOR, THRESHOLD_CEILING = 0.05, 0.95  # a chosen threshold stays inside these
DEFAULT_THRESHOLD = 0.5  # a label with no positive validation image keeps fastai's default


def choose_thresholds(probs, targs) -> list[float]:
    """Per label, the threshold that maximises its F1 on these images (scikit-learn's
    precision_recall_curve), kept within [THRESHOLD_FLOOR, THRESHOLD_CEILING]; fastai's 0.5 for a
    label with no positive image here."""
    from sklearn.metrics import precision_recall_curve

    probs, targs = np.asarray(probs, dtype=np.float64), np.asarray(targs) > 0.5
    out = []
    for k in range(probs.shape[1]):
        if not targs[:, k].any():
            out.append(DEFAULT_THRESHOLD)
            continue
        p, r, t = precision_recall_curve(targs[:, k], probs[:, k])
        f1 = 2 * p[:-1] * r[:-1] / np.maximum(p[:-1] + r[:-1], 1e-12)
        best = float(t[int(np.argmax(f1))]) if len(t) else DEFAULT_THRESHOLD
        out.append(float(np.clip(best, THRESHOLD_FLOOR, THRESHOLD_CEILING)))
    return out


def predicted(probs, thresholds) -> np.ndarray:
    """Every label at or above its own threshold (the label set `predict` returns)."""
    return np.asarray(probs) >= np.asarray(thresholds)[None, :]


def metrics_multi(probs, targs, vocab, thresholds) -> dict:
    """metrics.json of a multi-label evaluation. `accuracy` is the exact match of the whole label set
    (scikit-learn's subset accuracy), the strictest reading; the macro scores are over the labels with
    a positive image here."""
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        f1_score,
        hamming_loss,
        multilabel_confusion_matrix,
        precision_recall_fscore_support,
    )

    y, probs = np.asarray(targs) > 0.5, np.asarray(probs, dtype=np.float64)
    pred = predicted(probs, thresholds)
    present = [k for k in range(y.shape[1]) if y[:, k].any()]
    P, R, F, S = precision_recall_fscore_support(y, pred, zero_division=0)
    ap = {k: float(average_precision_score(y[:, k], probs[:, k])) for k in present}
    cm = multilabel_confusion_matrix(y, pred)
    per = {}
    for k, name in enumerate(vocab):
        per[name] = {"precision": float(P[k]) if k in present else None, "recall": float(R[k]) if k in present else None,
                     "f1": float(F[k]) if k in present else None, "support": int(S[k]), "ap": ap.get(k),
                     "threshold": round(float(thresholds[k]), 4), "confusion": cm[k].tolist()}
    sub = (lambda a: float(np.mean([a[k] for k in present]))) if present else (lambda a: 0.0)
    at_half = predicted(probs, [DEFAULT_THRESHOLD] * len(vocab))
    return {
        "task": "multi-label", "accuracy": float(accuracy_score(y, pred)), "accuracy_kind": "exact label set",
        "precision_macro": sub(P), "recall_macro": sub(R), "f1_macro": sub(F),
        "f1_micro": float(f1_score(y, pred, average="micro", zero_division=0)),
        "map": float(np.mean(list(ap.values()))) if ap else 0.0,
        "hamming_loss": float(hamming_loss(y, pred)),
        "f1_macro_at_0.5": float(np.mean([f1_score(y[:, k], at_half[:, k], zero_division=0) for k in present]))
        if present else 0.0,
        "n": int(len(y)), "macro_over": len(present), "thresholds": [round(float(t), 4) for t in thresholds],
        "classes_without_images": [vocab[k] for k in range(len(vocab)) if k not in present],
        "per_class": per, "classes": list(vocab),
    }


def losses_multi(probs, targs) -> np.ndarray:
    """Each image's binary cross-entropy summed over its labels (what it costs the model)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-7, 1 - 1e-7)
    y = np.asarray(targs) > 0.5
    return -(np.where(y, np.log(p), np.log(1 - p))).sum(1)


def top_loss_rows(paths, probs, targs, vocab, thresholds) -> list[list]:
    """top_losses.csv for a multi-label set, worst first: the given and the predicted label sets,
    the labels missed (given, not predicted) and those wrong (predicted, not given)."""
    from .top_losses import format_top3

    probs, y = np.asarray(probs), np.asarray(targs) > 0.5
    pred, loss = predicted(probs, thresholds), losses_multi(probs, targs)
    rows = []
    for i in np.argsort(-loss, kind="stable"):
        names = lambda mask: ";".join(vocab[k] for k in np.flatnonzero(mask))  # noqa: E731
        top = np.argsort(-probs[i])[: min(3, len(vocab))]
        rows.append([paths[i], names(y[i]), names(pred[i]), f"{float(probs[i].max()):.4f}", f"{loss[i]:.4f}",
                     format_top3((vocab[k], probs[i, k]) for k in top), names(y[i] & ~pred[i]),
                     names(pred[i] & ~y[i])])
    return rows

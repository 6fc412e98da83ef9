"""The numbers of an evaluation, as pure functions of predictions: scikit-learn's metrics over the
classes present in the split, the confusion matrix as metrics.json stores it, and the file names
of each split's results."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def metrics_from(probs, targs, vocab) -> dict:
    """scikit-learn's accuracy and macro precision, recall and F1 over the classes that have images
    in this split (a class with none has no recall: counting it as zero would lower every macro
    score); per class, those without images get None."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    y, p = np.asarray(targs), np.asarray(probs).argmax(1)
    present = sorted(set(y.tolist()))
    P, R, F, S = precision_recall_fscore_support(y, p, labels=present, zero_division=0)
    mp, mr, mf, _ = precision_recall_fscore_support(y, p, labels=present, average="macro", zero_division=0)
    per = {name: {"precision": None, "recall": None, "f1": None, "support": 0} for name in vocab}
    for k, i in enumerate(present):
        per[vocab[i]] = {"precision": float(P[k]), "recall": float(R[k]), "f1": float(F[k]), "support": int(S[k])}
    return {
        "accuracy": float(accuracy_score(y, p)),
        "precision_macro": float(mp),
        "recall_macro": float(mr),
        "f1_macro": float(mf),
        "n": int(len(y)),
        "macro_over": len(present),
        "classes_without_images": [vocab[i] for i in range(len(vocab)) if i not in set(present)],
        "per_class": per,
    }


DENSE_CONFUSION_MAX = 100  # classes; above, metrics.json keeps the confusion's non-zero cells only


def confusion_entry(cm: np.ndarray) -> dict:
    """The confusion matrix as metrics.json stores it: dense for a few classes, else sparse
    ([actual, predicted, count] for every non-zero cell), so 1,000 classes stay a small file."""
    if len(cm) <= DENSE_CONFUSION_MAX:
        return {"confusion": cm.tolist()}
    i, j = np.nonzero(cm)
    return {"confusion_sparse": np.stack([i, j, cm[i, j]], 1).tolist(), "confusion_size": len(cm)}


def confusion_of(m: dict) -> np.ndarray:
    """The dense confusion matrix of a metrics.json, whichever way it was stored."""
    if "confusion" in m:
        return np.array(m["confusion"])
    cm = np.zeros((m["confusion_size"],) * 2, dtype=np.int64)
    for a, b, c in m["confusion_sparse"]:
        cm[a, b] = c
    return cm


SPLIT_FILES = {"val": "", "test": "_test"}  # metrics.json / metrics_test.json, top_losses.csv / ...


def split_file(run: Path, stem: str, ext: str, split: str = "val") -> Path:
    return Path(run) / f"{stem}{SPLIT_FILES[split]}.{ext}"

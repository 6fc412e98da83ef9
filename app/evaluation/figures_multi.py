"""The figures of a multi-label evaluation (several labels per image), drawn from metrics.json and
top_losses.csv: the per-label confusion counts (scikit-learn's multilabel_confusion_matrix, one
2 x 2 grid per label), a precision-recall curve per label with its chosen threshold marked, and
the top losses with the labels each image missed and got wrong. Bounded like the single-label
figures: at most LABELS_SHOWN labels (the most frequent), the title says how many."""

from __future__ import annotations

import csv
import textwrap
from pathlib import Path

import numpy as np

from .plotting import _save, plt

LABELS_SHOWN = 16  # labels drawn in the per-label grids; with more, the most frequent, said in the title


def shown_labels(m: dict) -> list[str]:
    """The labels the grids show: all, or the LABELS_SHOWN with the most positive images."""
    names = [n for n in m["classes"] if m["per_class"][n]["support"]]
    return sorted(names, key=lambda n: -m["per_class"][n]["support"])[:LABELS_SHOWN]


def _grid(n: int, side: float = 2.6, tall: float = 0.95):
    cols = min(4, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(side * cols, side * rows * tall), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat)


def _title(m: dict, what: str) -> str:
    n, shown = len([c for c in m["classes"] if m["per_class"][c]["support"]]), len(shown_labels(m))
    more = f" (the {shown} most frequent of {n})" if shown < n else ""
    return f"{what}{more}, {'test split' if m.get('split') == 'test' else 'validation set'}"


def label_confusion(m: dict, path: Path) -> Path | None:
    names = shown_labels(m)
    if not names:
        return None
    fig, axes = _grid(len(names))
    for ax, name in zip(axes, names):
        cm = np.array(m["per_class"][name]["confusion"])  # [[tn, fp], [fn, tp]]
        ax.imshow(cm, cmap="Blues")
        ax.grid(False)
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(int(v)), ha="center", va="center", fontsize=10, color="white" if v > cm.max() / 2 else "black")
        ax.set_xticks([0, 1], ["not predicted", "predicted"], fontsize=7)
        ax.set_yticks([0, 1], ["absent", "present"], fontsize=7)
        ax.set_title(f"{name}\nF1 {m['per_class'][name]['f1'] * 100:.0f}% at {m['per_class'][name]['threshold']:.2f}",
                     fontsize=8)
    fig.suptitle(_title(m, "Per-label confusion (rows: given, columns: predicted)"), fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def pr_curves(m: dict, probs, targs, path: Path) -> Path | None:
    """Precision against recall per label (scikit-learn), each label's chosen threshold as a dot."""
    from sklearn.metrics import precision_recall_curve

    names = shown_labels(m)
    if not names or probs is None:
        return None
    probs, y = np.asarray(probs), np.asarray(targs) > 0.5
    fig, axes = _grid(len(names))
    for ax, name in zip(axes, names):
        k, pc = m["classes"].index(name), m["per_class"][name]
        p, r, t = precision_recall_curve(y[:, k], probs[:, k])
        ax.plot(r, p, color="C0")
        at = min(np.searchsorted(t, pc["threshold"]), len(t) - 1) if len(t) else 0
        ax.plot(r[at], p[at], "o", color="C3")
        ax.set(xlim=(0, 1.02), ylim=(0, 1.05), xlabel="recall", ylabel="precision")
        ax.set_title(f"{name}: AP {pc['ap'] * 100:.0f}%", fontsize=8)
    fig.suptitle(_title(m, "Precision-recall per label (dot: the chosen threshold)"), fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def top_losses_multi(csv_path: Path, path: Path, k: int = 12) -> Path | None:
    """The images that cost the model most, each with its given and predicted label sets."""
    from ..data.images import BadImage, open_rgb

    if not csv_path.is_file():
        return None
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:k]
    if not rows:
        return None
    fig, axes = _grid(len(rows), side=3.6, tall=1.2)
    for ax, r in zip(axes, rows):
        ax.axis("off")
        try:
            im = open_rgb(r["path"], min_size=128)
            im.thumbnail((192, 192))
            ax.imshow(im)
        except BadImage:
            pass
        lines = [f"given: {r['actual'] or '(none)'}", f"predicted: {r['predicted'] or '(none)'}",
                 f"missed: {r['missed'] or '-'}", f"wrong: {r['wrong'] or '-'}"]
        text = "\n".join(textwrap.fill(ln.replace(";", "; "), 44) for ln in lines)
        ax.set_title(f"{text}\nloss {float(r['loss']):.2f}", fontsize=7, loc="left")
    fig.suptitle("Top losses: the images whose label sets the model gets most wrong", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)

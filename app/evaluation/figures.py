"""Every figure a practitioner looks at, as files in RUN/figures/, and FIGURES: the one table of
them (key, file name, report caption, width in the report, draw function) that evaluation, the
report, lr-find and the CLI read. Adding a figure is one entry there.

Same class order everywhere (the vocab), titles and axis labels with units, nothing clipped
(bbox_inches='tight'). Data comes from the run's own files (history.csv, batches.csv,
metrics.json, lr_find.json) and from the real model, so figures can be redrawn at any time.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..core.files import read_json  # noqa: E402

# text.parse_math off: class names and paths come from the data, and `$...$` in one is a name, not
# mathtext (an unknown macro there would stop the figures). No figure here uses mathtext.
plt.rcParams.update({"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3, "axes.titleweight": "bold",
                     "text.parse_math": False})


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    photo = path.suffix == ".jpg"  # photo grids as JPEG: a tenth of the PNG's bytes in the report
    fig.savefig(path, bbox_inches="tight", facecolor="white", **({"pil_kwargs": {"quality": 85}} if photo else {}))
    plt.close(fig)
    return path


def _read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _col(rows, name, cast=float):
    out = []
    for r in rows:
        try:
            out.append(cast(r[name]))
        except (KeyError, TypeError, ValueError):
            out.append(np.nan)
    return np.array(out)


def sample_grid(ds, path: Path, per_class: int = 5, seed: int = 0) -> Path:
    """A few training images per class, titled with the human class name."""
    from ..data.images import BadImage, open_rgb

    rng = random.Random(seed)
    names = ds.names
    n = len(names)
    fig, axes = plt.subplots(n, per_class, figsize=(1.6 * per_class, 1.7 * n), squeeze=False, dpi=90)
    by_class = {i: [it for it in ds.items if it.label == i and it.split == "train"] for i in range(n)}
    for i in range(n):
        pool = by_class[i] or [it for it in ds.items if it.label == i]
        picks = rng.sample(pool, min(per_class, len(pool)))
        for j in range(per_class):
            ax = axes[i][j]
            ax.axis("off")
            if j < len(picks):
                try:
                    im = open_rgb(picks[j].path, min_size=128)
                    im.thumbnail((128, 128))
                    ax.imshow(im)
                except BadImage:
                    pass
            if j == 0:
                ax.set_title(names[i], loc="left", fontsize=10, fontweight="bold")
    fig.suptitle(f"Dataset samples: {per_class} training images per class", fontsize=13, y=1.0)
    fig.tight_layout()
    return _save(fig, path)


def _validated(x, y):
    """Only the epochs that were validated (a run with --valid-every N skips some), joined by lines."""
    keep = ~np.isnan(y)
    return x[keep], y[keep]


def _epochs(rows):
    return _col(rows, "epoch", int) + 1


def _size_marks(ax, rows):
    sizes = [r.get("size", "") for r in rows]
    for i in range(1, len(sizes)):
        if sizes[i] and sizes[i] != sizes[i - 1]:
            ax.axvline(i + 0.5, color="gray", ls=":", lw=1)
            ax.text(i + 0.6, 0.97, f"{sizes[i]}px", va="top", fontsize=8, color="dimgray",
                    transform=ax.get_xaxis_transform())


def loss_per_epoch(history: Path, path: Path) -> Path | None:
    rows = _read_csv(history)
    if not rows:
        return None
    e = _epochs(rows)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(e, _col(rows, "train_loss"), "o-", label="training loss (smoothed, end of epoch)")
    ax.plot(*_validated(e, _col(rows, "valid_loss")), "s-", label="validation loss")
    ax.set(xlabel="epoch", ylabel="loss (the training loss function)", title="Training and validation loss per epoch")
    ax.set_xticks(e)
    _size_marks(ax, rows)
    ax.legend()
    return _save(fig, path)


def accuracy_per_epoch(history: Path, path: Path) -> Path | None:
    rows = _read_csv(history)
    if not rows:
        return None
    e = _epochs(rows)
    acc = _col(rows, "accuracy") * 100
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(*_validated(e, acc), "o-", label="accuracy")
    if "f1_score" in rows[0]:
        ax.plot(*_validated(e, _col(rows, "f1_score") * 100), "s--", alpha=0.7, label="macro F1")
    best = int(np.nanargmax(acc))
    ax.annotate(f"{acc[best]:.1f}%", (e[best], acc[best]), textcoords="offset points", xytext=(0, 8),
                ha="center", fontsize=9)
    ax.set(xlabel="epoch", ylabel="validation score (%)", title="Validation accuracy per epoch")
    ax.set_xticks(e)
    _size_marks(ax, rows)
    ax.legend(loc="lower right")
    return _save(fig, path)


def learning_curve(batches: Path, history: Path, path: Path) -> Path | None:
    b, h = _read_csv(batches), _read_csv(history)
    if not b:
        return None
    seen = _col(b, "samples") / 1000
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(seen, _col(b, "loss"), color="C0", alpha=0.15, lw=0.8, label="training loss (per batch)")
    ax.plot(seen, _col(b, "smooth_loss"), color="C0", lw=2, label="training loss (smoothed)")
    if h:
        ep = _col(b, "epoch", int)
        ends = [seen[np.flatnonzero(ep == e)[-1]] for e in _col(h, "epoch", int) if (ep == e).any()]
        ax.plot(*_validated(np.array(ends), _col(h, "valid_loss")[: len(ends)]), "s-", color="C1", label="validation loss (epoch end)")
    ax.set(xlabel="training samples seen (thousands)", ylabel="loss",
           title="Learning curve with learning-rate schedule")
    ax2 = ax.twinx()
    ax2.plot(seen, _col(b, "lr"), color="C2", lw=1.2, ls="--", label="learning rate")
    ax2.set_ylabel("learning rate", color="C2")
    ax2.tick_params(axis="y", colors="C2")
    ax2.grid(False)
    ax2.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    lines = ax.get_legend_handles_labels()
    l2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + l2[0], lines[1] + l2[1], loc="upper right", fontsize=8)
    return _save(fig, path)


def overall_metrics(m: dict, path: Path) -> Path:
    keys = [("accuracy", "accuracy"), ("precision_macro", "precision\n(macro)"),
            ("recall_macro", "recall\n(macro)"), ("f1_macro", "F1\n(macro)")]
    vals = [m[k] * 100 for k, _ in keys]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    bars = ax.bar([lbl for _, lbl in keys], vals, color=["C0", "C1", "C2", "C3"])
    for bar, v in zip(bars, vals):  # inside the bar, so a TTA marker above never covers it
        ax.text(bar.get_x() + bar.get_width() / 2, max(v - 7, 1), f"{v:.2f}%", ha="center", fontsize=10,
                color="white", fontweight="bold")
    if "tta" in m:
        tta = [m["tta"][k] * 100 for k, _ in keys]
        ax.scatter([lbl for _, lbl in keys], tta, marker="D", color="k", zorder=3, label="with test-time augmentation")
        for bar, t in zip(bars, tta):
            ax.text(bar.get_x() + bar.get_width() / 2, t + 2.5, f"TTA {t:.2f}%", ha="center", fontsize=9)
        ax.legend(loc="lower right")
    ax.set(ylim=(0, 108), ylabel="score on the validation set (%)",
           title=f"Overall metrics (n = {m['n']} validation images)")
    return _save(fig, path)


def confusion(m: dict, path: Path) -> Path:
    cm = np.array(m["confusion"])
    names = m["classes"]
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    n = len(names)
    side = max(5.5, 0.55 * n + 2.5)
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 1, side))
    for ax, mat, title, fmt in ((axes[0], cm, "counts", "d"), (axes[1], norm * 100, "row-normalised (% of actual)", ".0f")):
        ax.imshow(mat, cmap="Blues")
        ax.grid(False)
        ax.set_xticks(range(n), names, rotation=45, ha="right")
        ax.set_yticks(range(n), names)
        ax.set(xlabel="predicted class", ylabel="actual class", title=f"Confusion matrix, {title}")
        hi = mat.max() / 2
        for i in range(n):
            for j in range(n):
                v = mat[i, j]
                if n <= 20:
                    ax.text(j, i, format(int(v) if fmt == "d" else v, fmt), ha="center", va="center",
                            fontsize=8, color="white" if v > hi else "black")
    fig.tight_layout()
    return _save(fig, path)


def per_class(m: dict, path: Path) -> Path:
    names = m["classes"]
    pc = m["per_class"]
    x = np.arange(len(names))
    w = 0.27
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(names) + 2), 4.8))
    for k, (key, lbl) in enumerate((("precision", "precision"), ("recall", "recall"), ("f1", "F1"))):
        ax.bar(x + (k - 1) * w, [pc[n][key] * 100 for n in names], w, label=lbl)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set(ylim=(0, 118), ylabel="score (%)", title="Per-class precision, recall and F1 (validation set)")
    ax.set_yticks(range(0, 101, 20))
    ax.axhline(m["accuracy"] * 100, color="k", ls=":", lw=1, label=f"overall accuracy {m['accuracy'] * 100:.1f}%")
    ax.legend(loc="upper center", fontsize=8, ncol=4)
    return _save(fig, path)


def layer_table(model, size: int) -> list[dict]:
    """Each leaf layer of the real model: output shape from a real forward pass, parameters, trainable."""
    import torch

    rows, hooks = [], []
    leaves = [(n, mod) for n, mod in model.named_modules() if not list(mod.children())]
    for name, mod in leaves:
        def hook(mod, inp, out, name=name):
            n_params = sum(p.numel() for p in mod.parameters(recurse=False))
            trainable = sum(p.numel() for p in mod.parameters(recurse=False) if p.requires_grad)
            rows.append({"name": name, "type": type(mod).__name__, "shape": tuple(out.shape[1:]),
                         "params": n_params, "trainable": trainable})
        hooks.append(mod.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters())
        with torch.no_grad(), torch.compiler.set_stance("force_eager"):  # hooks fire (a compiled graph skips them)
            model(torch.zeros(1, 3, size, size, device=p.device, dtype=p.dtype))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return rows


def _friendly(name: str) -> str:
    """fastai's Sequential indices to words: '0.0.3' -> 'body.3', '1.4' -> 'head.4'."""
    if name.startswith("0.0."):
        return "body." + name[4:]
    if name.startswith("0."):
        return "body." + name[2:]
    if name.startswith("1."):
        return "head." + name[2:]
    return name


def architecture(model, size: int, path: Path) -> Path:
    rows = layer_table(model, size)
    n = len(rows)
    fig, ax = plt.subplots(figsize=(9.5, 0.27 * n + 0.9))
    ax.axis("off")
    cells, colours = [], []
    for i, r in enumerate(rows):
        state = "trainable" if r["trainable"] else ("frozen" if r["params"] else "-")
        name = _friendly(r["name"])
        cells.append([str(i), name, r["type"], " x ".join(map(str, r["shape"])), f"{r['params']:,}", state])
        c = "#dff0d8" if state == "trainable" else ("#f2dede" if state == "frozen" else "white")
        colours.append([c] * 6)
    t = ax.table(cellText=cells, cellColours=colours, bbox=[0, 0, 1, 1], cellLoc="left",
                 colLabels=["#", "layer", "type", f"output shape (input 3 x {size} x {size})", "parameters", "state"])
    t.auto_set_font_size(False)
    t.set_fontsize(8)
    t.auto_set_column_width(range(6))
    total = sum(r["params"] for r in rows)
    train = sum(r["trainable"] for r in rows)
    ax.set_title(f"Model architecture: AlexNet body + fastai head, {total:,} parameters "
                 f"({train:,} trainable, {total - train:,} frozen)", fontsize=11)
    return _save(fig, path)


def top_losses(interp, path: Path, k: int = 12) -> Path:
    """fastai's plot_top_losses (image; predicted / actual / loss / probability)."""
    k = min(k, len(interp.losses))
    interp.plot_top_losses(k, nrows=int(np.ceil(k / 4)), figsize=(12, 3.6 * np.ceil(k / 4)))
    fig = plt.gcf()
    for ax in fig.axes:  # fastai's one-line "pred/actual / loss / prob" collides with long class names
        parts = ax.get_title().rsplit(" / ", 2)
        if len(parts) == 3 and "/" in parts[0]:
            pred, actual = parts[0].split("/", 1)
            ax.set_title(f"predicted: {pred}\nactual: {actual}\nloss {parts[1]}, p {parts[2]}", fontsize=9)
    fig.suptitle("Top losses: the validation images the model is most wrong about", fontsize=12)
    fig.tight_layout()
    return _save(fig, path)


def plot_lr_find(lr_json: Path, path: Path) -> Path:
    d = read_json(lr_json)
    lrs, losses = np.array(d["lrs"]), np.array(d["losses"])
    fig, ax = plt.subplots(figsize=(7, 4.3))
    ax.plot(lrs, losses, color="C0", label="smoothed training loss")
    ax.set_xscale("log")
    marks = {"valley": "o", "slide": "s", "minimum": "^", "steep": "v"}
    for i, (name, lr) in enumerate(d["suggestions"].items()):
        y = np.interp(np.log(lr), np.log(lrs), losses)
        what = {"minimum": "minimum (lr at lowest loss / 10)", "steep": "steep (steepest descent)"}.get(name, name)
        ax.plot([lr], [y], marks.get(name, "o"), ms=9, color=f"C{i + 1}", label=f"{what}: {lr:.1e}")
    rec = d.get("recommended")
    if rec:
        ax.axvline(rec, color="k", ls="--", lw=1, label=f"recommended: {rec:.1e}")
    top = np.nanmin(losses) + 1.6 * (losses[: max(3, len(losses) // 10)].mean() - np.nanmin(losses))
    ax.set_ylim(np.nanmin(losses) * 0.95, max(top, np.nanmin(losses) * 1.2))
    ax.set(xlabel="learning rate (log scale)", ylabel="loss", title="Learning-rate finder with suggestions")
    ax.legend(fontsize=8)
    return _save(fig, path)


@dataclass
class FigureInputs:
    """What a figure may be drawn from; a figure whose input is missing is not drawn."""

    run: Path
    metrics: dict | None = None
    learn: object = None
    interp: object = None
    ds: object = None


@dataclass(frozen=True)
class Figure:
    key: str
    file: str  # RUN/figures/<file>; .jpg for photo grids (a tenth of a PNG's bytes in the report)
    caption: str
    wide: bool  # the report's full width (else its two-column grid)
    draw: Callable[[FigureInputs, Path], Path | None]


def _lr_find(i: FigureInputs, p: Path) -> Path | None:
    f = i.run / "lr_find.json"
    return plot_lr_find(f, p) if f.is_file() else None


FIGURES: tuple[Figure, ...] = (
    Figure("samples", "01_dataset_samples.jpg", "Dataset samples (training images, human class names)", True,
           lambda i, p: sample_grid(i.ds, p) if i.ds is not None else None),
    Figure("loss", "02_loss_per_epoch.png", "Training and validation loss per epoch", False,
           lambda i, p: loss_per_epoch(i.run / "history.csv", p)),
    Figure("accuracy", "03_accuracy_per_epoch.png", "Validation accuracy per epoch", False,
           lambda i, p: accuracy_per_epoch(i.run / "history.csv", p)),
    Figure("curve", "04_learning_curve.png",
           "Learning curve: per-batch training loss, validation loss at epoch ends, learning rate", True,
           lambda i, p: learning_curve(i.run / "batches.csv", i.run / "history.csv", p)),
    Figure("overall", "05_overall_metrics.png", "Overall metrics", False,
           lambda i, p: overall_metrics(i.metrics, p) if i.metrics else None),
    Figure("confusion", "06_confusion_matrix.png", "Confusion matrix (counts and row-normalised)", True,
           lambda i, p: confusion(i.metrics, p) if i.metrics else None),
    Figure("per_class", "07_per_class_metrics.png", "Per-class precision, recall and F1", False,
           lambda i, p: per_class(i.metrics, p) if i.metrics else None),
    Figure("architecture", "08_model_architecture.png", "Model architecture (from the real model)", True,
           lambda i, p: architecture(i.learn.model, (i.metrics or {}).get("size", 128), p) if i.learn else None),
    Figure("top_losses", "09_top_losses.jpg", "Top losses (fastai plot_top_losses)", True,
           lambda i, p: top_losses(i.interp, p) if i.interp is not None else None),
    Figure("lr_find", "10_lr_find.png", "Learning-rate finder", False, _lr_find),
)
BY_KEY = {f.key: f for f in FIGURES}


def figure_path(run: Path, key: str) -> Path:
    return Path(run) / "figures" / BY_KEY[key].file


def draw(key: str, inputs: FigureInputs) -> Path | None:
    """One figure of the table into its file; None when this run has nothing to draw it from."""
    return BY_KEY[key].draw(inputs, figure_path(inputs.run, key))


def draw_all(inputs: FigureInputs, log=print) -> list[Path]:
    """Every figure that can be drawn for the run; returns the files written."""
    out = [p for f in FIGURES if (p := draw(f.key, inputs))]
    log(f"figures: {len(out)} files in {Path(inputs.run) / 'figures'}")
    return out

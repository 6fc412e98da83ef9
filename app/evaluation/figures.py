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

import numpy as np

from ..core.files import read_json
from . import figures_multi as fm
from .plotting import _save, plt


def _read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _col(rows, name, cast=float):
    out = []
    for r in rows:
        try:
            out.append(cast(r[name]))
        except (KeyError, TypeError, ValueError):
            out.append(np.nan)
    return np.array(out)


SAMPLE_CLASSES = 12  # the sample grid shows at most this many classes (chosen at random beyond)
CONFUSION_LABELLED = 25  # above this many classes: the whole matrix unlabelled + the most confused, labelled
PER_CLASS_SHOWN = 40  # above this many classes: the per-class chart shows the 20 worst and 20 best


def sample_grid(ds, path: Path, per_class: int = 5, seed: int = 0) -> Path:
    """A few training images per class, titled with the human class name; with many classes, a
    random few of them (the title says how many)."""
    from ..data.images import BadImage, open_rgb

    rng = random.Random(seed)
    names = ds.names
    shown = sorted(rng.sample(range(len(names)), min(SAMPLE_CLASSES, len(names))))
    fig, axes = plt.subplots(len(shown), per_class, figsize=(1.6 * per_class, 1.7 * len(shown)), squeeze=False, dpi=90)
    for row, i in enumerate(shown):
        pool = [it for it in ds.items if it.label == i and it.split == "train"] or [it for it in ds.items if it.label == i]
        picks = rng.sample(pool, min(per_class, len(pool)))
        for j in range(per_class):
            ax = axes[row][j]
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
    which = "class" if len(shown) == len(names) else f"class, {len(shown)} of the {len(names)} classes (at random)"
    fig.suptitle(f"Dataset samples: up to {per_class} training images per {which}", fontsize=13, y=1.0)
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
    key = "accuracy" if "accuracy" in rows[0] else "accuracy_multi"  # multi-label: fastai's per-label accuracy
    acc = _col(rows, key) * 100
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(*_validated(e, acc), "o-", label="accuracy" if key == "accuracy" else "accuracy per label (at 0.5)")
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
           title=f"Overall metrics (n = {m['n']} {'test' if m.get('split') == 'test' else 'validation'} images)")
    return _save(fig, path)


def confusion(m: dict, path: Path) -> Path:
    from .metrics import confusion_of

    cm, names = confusion_of(m), m["classes"]
    if len(names) > CONFUSION_LABELLED:
        return _confusion_many(cm, names, path)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    n = len(names)
    side = max(5.5, 0.55 * n + 2.5)
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 1, side))
    for ax, mat, title, fmt in ((axes[0], cm, "counts", "d"), (axes[1], norm * 100, "row-normalised (% of actual)", ".0f")):
        _matrix(ax, mat, names, f"Confusion matrix, {title}", fmt if n <= 20 else None)
    fig.tight_layout()
    return _save(fig, path)


def _matrix(ax, mat, names, title: str, fmt: str | None) -> None:
    n = len(names)
    ax.imshow(mat, cmap="Blues")
    ax.grid(False)
    ax.set_xticks(range(n), names, rotation=45, ha="right")
    ax.set_yticks(range(n), names)
    ax.set(xlabel="predicted class", ylabel="actual class", title=title)
    hi = mat.max() / 2
    for i in range(n if fmt else 0):
        for j in range(n):
            v = mat[i, j]
            ax.text(j, i, format(int(v) if fmt == "d" else v, fmt), ha="center", va="center",
                    fontsize=8, color="white" if v > hi else "black")


def most_confused_classes(cm: np.ndarray, k: int) -> list[int]:
    """The k classes most involved in mistakes (their row's and column's off-diagonal counts)."""
    off = cm - np.diag(np.diag(cm))
    return sorted(np.argsort(-(off.sum(0) + off.sum(1)), kind="stable")[:k].tolist())


def _confusion_many(cm: np.ndarray, names: list[str], path: Path) -> Path:
    """Many classes: the whole row-normalised matrix as a picture (no labels: they would not fit),
    and the CONFUSION_LABELLED most confused classes' counts, labelled."""
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    keep = most_confused_classes(cm, CONFUSION_LABELLED)
    fig, axes = plt.subplots(1, 2, figsize=(21, 10), gridspec_kw={"width_ratios": [1, 1.15]})
    axes[0].imshow(norm * 100, cmap="Blues", interpolation="nearest", vmax=max(1e-9, float(np.percentile(norm * 100, 99.9))))
    axes[0].grid(False)
    axes[0].set(xlabel="predicted class (index in class order)", ylabel="actual class (index)",
                title=f"All {len(names)} classes, row-normalised (% of actual)")
    sub = cm[np.ix_(keep, keep)]
    _matrix(axes[1], sub, [names[i] for i in keep],
            f"Counts among the {len(keep)} most confused classes", "d" if len(keep) <= 25 else None)
    fig.tight_layout()
    return _save(fig, path)


def per_class(m: dict, path: Path) -> Path:
    """Precision, recall and F1 per class; with many classes the 20 lowest and 20 highest F1, as
    horizontal bars (classes without images in the split are left out, and the title says so)."""
    pc = m["per_class"]
    names = [n for n in m["classes"] if pc[n]["f1"] is not None]
    left_out = len(m["classes"]) - len(names)
    if len(names) > PER_CLASS_SHOWN:
        by_f1 = sorted(names, key=lambda n: pc[n]["f1"])
        names = by_f1[: PER_CLASS_SHOWN // 2] + by_f1[-(PER_CLASS_SHOWN // 2):]
        return _per_class_bars(m, names, path, f"the {PER_CLASS_SHOWN // 2} lowest and highest F1 of "
                                                f"{len(by_f1)} classes", left_out)
    x, w = np.arange(len(names)), 0.27
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(names) + 2), 4.8))
    for k, (key, lbl) in enumerate((("precision", "precision"), ("recall", "recall"), ("f1", "F1"))):
        ax.bar(x + (k - 1) * w, [pc[n][key] * 100 for n in names], w, label=lbl)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set(ylim=(0, 118), ylabel="score (%)", title="Per-class precision, recall and F1 " + _split_words(m, left_out))
    ax.set_yticks(range(0, 101, 20))
    ax.axhline(m["accuracy"] * 100, color="k", ls=":", lw=1, label=f"overall accuracy {m['accuracy'] * 100:.1f}%")
    ax.legend(loc="upper center", fontsize=8, ncol=4)
    return _save(fig, path)


def _split_words(m: dict, left_out: int) -> str:
    where = "(test split)" if m.get("split") == "test" else "(validation set)"
    return where + (f"; {left_out} class(es) without images left out" if left_out else "")


def _per_class_bars(m: dict, names: list[str], path: Path, what: str, left_out: int) -> Path:
    pc, y, h = m["per_class"], np.arange(len(names)), 0.27
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(names) + 1.5))
    for k, key in enumerate(("precision", "recall", "f1")):
        ax.barh(y + (k - 1) * h, [pc[n][key] * 100 for n in names], h, label=key if key != "f1" else "F1")
    ax.set_yticks(y, names, fontsize=8)
    for yi, n in zip(y, names):  # the F1 itself: a zero is a number, not an empty row
        ax.text(pc[n]["f1"] * 100 + 0.8, yi + h, f"F1 {pc[n]['f1'] * 100:.0f}", va="center", fontsize=7)
    ax.axhline(len(names) / 2 - 0.5, color="gray", lw=1, ls="--")
    ax.axvline(m["accuracy"] * 100, color="k", ls=":", lw=1, label=f"overall accuracy {m['accuracy'] * 100:.1f}%")
    ax.set(xlim=(0, 100), xlabel="score (%)", title=f"Per-class scores: {what} {_split_words(m, left_out)}")
    ax.legend(loc="lower right", fontsize=8)
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


def reliability(m: dict, path: Path) -> Path | None:
    """Reliability diagram: accuracy per bin of top-1 confidence before temperature scaling (bars, with
    their image counts), after it (each half scaled by the temperature of the other), the diagonal."""
    c = m.get("calibration")
    if not c:
        return None
    bins = np.array(c["bins"], dtype=float)
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(6.8, 6.4), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    width = bins[0, 1] - bins[0, 0]
    shown = bins[:, 4] > 0
    ax.bar(bins[shown, 0], bins[shown, 3] * 100, width, align="edge", color="C0", alpha=0.75, edgecolor="white",
           label=f"as trained (ECE {c['ece'] * 100:.2f} %)")
    if c.get("bins_after"):
        after = np.array(c["bins_after"], dtype=float)
        keep = after[:, 4] > 0
        ax.plot(after[keep, 2], after[keep, 3] * 100, "o-", color="C3",
                label=f"temperature-scaled, held out (ECE {c['ece_after'] * 100:.2f} %)")
    ax.plot([0, 1], [0, 100], "k--", lw=1, label="perfect calibration")
    ax.set(ylim=(0, 100), ylabel="accuracy in the bin (%)",
           title=f"Reliability ({c['n_bins']} bins, n = {c['n']}; temperature {c['temperature']:.2f})")
    ax.legend(loc="upper left", fontsize=8)
    hist.bar(bins[:, 0], bins[:, 4], width, align="edge", color="gray", edgecolor="white")
    hist.set(xlim=(0, 1), xlabel="top-1 confidence (probability of the predicted class)", ylabel="images")
    fig.tight_layout()
    return _save(fig, path)


CAM_SHOWN = 12  # images in each Grad-CAM grid


def _tiles(images: list, titles: list[str], path: Path, title: str, cols: int = 4) -> Path | None:
    """A grid of pictures (arrays or PIL images) with a title each."""
    if not images:
        return None
    rows = int(np.ceil(len(images) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.1 * cols, 3.7 * rows), squeeze=False, dpi=90)
    for ax in axes.flat:
        ax.axis("off")
    for ax, im, t in zip(axes.flat, images, titles):
        ax.imshow(im)
        ax.set_title(t, fontsize=8.5)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    return _save(fig, path)


def cam_top_losses(interp, learn, size: int, resize: str, path: Path, k: int = CAM_SHOWN) -> Path | None:
    """Grad-CAM over the top losses: where the model looked when it predicted what it did."""
    from ..data.images import BadImage
    from ..data.loaders import item_paths
    from ..model.cam import CamModel

    if interp is None or learn is None or not _has("pytorch_grad_cam"):
        return None
    cam = CamModel.from_learner(learn, size, resize)
    files, vocab = item_paths(interp.dl, len(interp.probs)), list(interp.vocab)
    picked, arrays = [], []
    for i in interp.top_losses()[1].tolist():
        try:
            arrays.append(cam.load(files[i]))
            picked.append(i)
        except BadImage:
            continue
        if len(picked) == k:
            break
    shown = cam.overlays(arrays)
    titles = [f"predicted: {vocab[c]} ({p:.2f})\nactual: {vocab[int(interp.targs[i])]}" for i, (_, c, p) in
              zip(picked, shown)]
    return _tiles([o for o, _, _ in shown], titles, path, "Grad-CAM (LayerCAM) on the top losses: where the model looked for "
                  "the class it predicted")


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _open_shown(path: str, side: int = 192):
    from ..data.images import BadImage, open_rgb

    try:
        im = open_rgb(path, min_size=side)
    except BadImage:
        return None
    im.thumbnail((side, side))
    return im


def label_issue_grid(run: Path, path: Path, k: int = CAM_SHOWN) -> Path | None:
    """The worst label issues, each as its Grad-CAM overlay for the suggested class (audit.csv)."""
    from .findings import read_findings

    images, titles = [], []
    for f in read_findings(run)["label_issue"]:
        im = _open_shown(str(run / f.cam)) if f.cam else _open_shown(f.path)
        if im is None:
            continue
        images.append(im)
        titles.append(f"{f.split}: {Path(f.path).name[:28]}\ngiven: {f.given}\nsuggested: {f.suggested} "
                      f"(quality {f.score:.3f})")
        if len(images) == k:
            break
    return _tiles(images, titles, path, "Label issues, worst first (cleanlab, out-of-sample): Grad-CAM for the "
                  "suggested class")


def leakage_pairs(run: Path, path: Path, k: int = 8) -> Path | None:
    """Validation images and their near copies in training, side by side (audit.csv)."""
    from .findings import read_findings

    images, titles = [], []
    for f in read_findings(run)["leakage"]:
        a, b = _open_shown(f.path), _open_shown(f.other)
        if a is None or b is None:
            continue
        images += [a, b]
        titles += [f"validation: {Path(f.path).name[:30]}\n{f.given}", f"training: {Path(f.other).name[:30]}\n"
                   f"cosine {f.score:.4f}"]
        if len(images) == 2 * k:
            break
    return _tiles(images, titles, path, "Train/validation leakage: each validation image beside its near copy in "
                  "training", cols=4)


def low_quality_grid(run: Path, path: Path, k: int = CAM_SHOWN) -> Path | None:
    """Images cleanvision flags (blurry, dark, near-blank, odd aspect ratio), listed, not removed."""
    from .findings import read_findings

    images, titles = [], []
    for f in read_findings(run)["low_quality"]:
        im = _open_shown(f.path)
        if im is not None:
            images.append(im)
            titles.append(f"{f.detail.replace('_', ' ')}\n{f.split}: {Path(f.path).name[:30]}")
        if len(images) == k:
            break
    return _tiles(images, titles, path, "Low-quality images (cleanvision), listed, not removed")


@dataclass
class FigureInputs:
    """What a figure may be drawn from; a figure whose input is missing is not drawn."""

    run: Path
    metrics: dict | None = None
    learn: object = None
    interp: object = None
    ds: object = None
    split: str = "val"  # "test": the figures of a test split's evaluation, in files of their own
    preds: tuple | None = None  # (probabilities, targets) of a multi-label evaluation
    resize: str = "crop"  # how the run makes images square (Grad-CAM loads them the same way)


@dataclass(frozen=True)
class Figure:
    key: str
    file: str  # RUN/figures/<file>; .jpg for photo grids (a tenth of a PNG's bytes in the report)
    caption: str
    wide: bool  # the report's full width (else its two-column grid)
    per_split: bool  # drawn again, into <file>_test, for `evaluate --split test`
    draw: Callable[[FigureInputs, Path], Path | None]
    audit: bool = False  # drawn from audit.csv: an audit folder's figure, shown in the report's audit section
    task: str = "any"  # "single": one label per image only; "multi": multi-label runs only


def _lr_find(i: FigureInputs, p: Path) -> Path | None:
    f = i.run / "lr_find.json"
    return plot_lr_find(f, p) if f.is_file() else None


FIGURES: tuple[Figure, ...] = (
    Figure("samples", "01_dataset_samples.jpg", "Dataset samples (training images, human class names)", True, False,
           lambda i, p: sample_grid(i.ds, p) if i.ds is not None else None),
    Figure("loss", "02_loss_per_epoch.png", "Training and validation loss per epoch", False, False,
           lambda i, p: loss_per_epoch(i.run / "history.csv", p)),
    Figure("accuracy", "03_accuracy_per_epoch.png", "Validation accuracy per epoch", False, False,
           lambda i, p: accuracy_per_epoch(i.run / "history.csv", p)),
    Figure("curve", "04_learning_curve.png",
           "Learning curve: per-batch training loss, validation loss at epoch ends, learning rate", True, False,
           lambda i, p: learning_curve(i.run / "batches.csv", i.run / "history.csv", p)),
    Figure("overall", "05_overall_metrics.png", "Overall metrics", False, True,
           lambda i, p: overall_metrics(i.metrics, p) if i.metrics else None),
    Figure("confusion", "06_confusion_matrix.png", "Confusion matrix (counts and row-normalised)", True, True,
           lambda i, p: confusion(i.metrics, p) if i.metrics else None, task="single"),
    Figure("per_class", "07_per_class_metrics.png", "Per-class precision, recall and F1", False, True,
           lambda i, p: per_class(i.metrics, p) if i.metrics else None),
    Figure("architecture", "08_model_architecture.png", "Model architecture (from the real model)", True, False,
           lambda i, p: architecture(i.learn.model, (i.metrics or {}).get("size", 128), p) if i.learn else None),
    Figure("top_losses", "09_top_losses.jpg", "Top losses (fastai plot_top_losses)", True, True,
           lambda i, p: top_losses(i.interp, p) if i.interp is not None else None),
    Figure("lr_find", "10_lr_find.png", "Learning-rate finder", False, False, _lr_find),
    Figure("reliability", "11_reliability.png", "Reliability diagram: accuracy against confidence, before and after "
           "temperature scaling", False, True,
           lambda i, p: reliability(i.metrics, p) if i.metrics else None, task="single"),
    Figure("cam_top_losses", "12_gradcam_top_losses.jpg", "Grad-CAM on the top losses (AlexNet's last convolution)",
           True, True, lambda i, p: cam_top_losses(i.interp, i.learn, (i.metrics or {}).get("size", 128),
                                                   i.resize, p), task="single"),
    Figure("label_issues", "13_label_issues.jpg", "Label issues with Grad-CAM for the suggested class", True, False,
           lambda i, p: label_issue_grid(i.run, p), audit=True),
    Figure("leakage", "14_leakage_pairs.jpg", "Validation images with a near copy in training", True, False,
           lambda i, p: leakage_pairs(i.run, p), audit=True),
    Figure("low_quality", "15_low_quality.jpg", "Low-quality images (cleanvision)", True, False,
           lambda i, p: low_quality_grid(i.run, p), audit=True),
    Figure("label_confusion", "16_label_confusion.png", "Per-label confusion (multi-label)", True, True,
           lambda i, p: fm.label_confusion(i.metrics, p), task="multi"),
    Figure("pr_curves", "17_pr_curves.png", "Precision-recall per label, chosen thresholds (multi-label)", True, True,
           lambda i, p: fm.pr_curves(i.metrics, *i.preds, p) if i.preds else None, task="multi"),
    Figure("top_losses_multi", "18_top_losses_multi.jpg", "Top losses: labels missed and wrong (multi-label)", True,
           True, lambda i, p: fm.top_losses_multi(_split_csv(i, "top_losses"), p), task="multi"),
)
BY_KEY = {f.key: f for f in FIGURES}
AUDIT_KEYS = tuple(f.key for f in FIGURES if f.audit)



def _multi(i: FigureInputs) -> bool:
    return bool(i.metrics) and i.metrics.get("task") == "multi-label"


def _split_csv(i: FigureInputs, stem: str) -> Path:
    from .metrics import split_file

    return split_file(i.run, stem, "csv", i.split)


def figure_path(run: Path, key: str, split: str = "val") -> Path:
    f = Path(BY_KEY[key].file)
    name = f.name if split == "val" else f"{f.stem}_{split}{f.suffix}"
    return Path(run) / "figures" / name


def draw(key: str, inputs: FigureInputs) -> Path | None:
    """One figure of the table into its file; None when this run has nothing to draw it from."""
    return BY_KEY[key].draw(inputs, figure_path(inputs.run, key, inputs.split))


def draw_all(inputs: FigureInputs, log=print) -> list[Path]:
    """Every figure that can be drawn for the run (for a test split: those of its evaluation)."""
    task = "multi" if _multi(inputs) else "single"
    keys = [f.key for f in FIGURES if (f.per_split or inputs.split == "val") and f.task in ("any", task)]
    out = [p for k in keys if (p := draw(k, inputs))]
    log(f"figures: {len(out)} files in {Path(inputs.run) / 'figures'}")
    return out

"""Evaluation: one pass of predictions over the validation set, then scikit-learn metrics,
fastai's ClassificationInterpretation (confusion, most confused, top losses), optional TTA,
learn.summary(), and every figure, written into the run directory."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from fastai.interpret import ClassificationInterpretation

from ..core.files import read_json, write_json, write_text
from ..core.ranks import is_rank0
from ..data.loaders import item_paths
from .metrics import confusion_entry, metrics_from, split_file
from .top_losses import format_top3


class Interp(ClassificationInterpretation):
    """fastai's ClassificationInterpretation over predictions computed once (fastai recomputes
    them for the confusion matrix; on a CPU that is a second full pass). Its losses are the plain
    -log p(actual class): the training loss may be class-weighted (--balance weights) or smoothed,
    which would rank a rare class's images first for their weight, not for how wrong they are."""

    def __init__(self, learn, dl, probs, targs, losses=None, logits=None):
        super().__init__(learn, dl, plain_losses(probs, targs))
        self.probs, self.targs, self.logits = probs, targs, logits  # logits: when the pass kept them

    @classmethod
    def compute(cls, learn, dl=None):
        """One prediction pass, or none when training just kept its last validation pass."""
        kept = getattr(learn, "last_valid_preds", None) if dl is None else None
        dl = dl or learn.dls.valid.new(shuffle=False, drop_last=False)
        if kept is not None and len(kept[1]) == len(dl.items):
            return cls(learn, dl, *kept)
        # in order already (unshuffled); fastai's reorder fails when the loader skipped a file that went bad
        probs, targs, losses = learn.get_preds(dl=dl, with_loss=True, reorder=False)
        return cls(learn, dl, probs, targs, losses)

    def confusion_matrix(self):
        n = len(self.vocab)
        d, t = self.probs.argmax(1), self.targs
        return torch.bincount(t * n + d, minlength=n * n).reshape(n, n).numpy()


def plain_losses(probs, targs):
    """-log p(actual) per image (fastai's CrossEntropyLossFlat without weights or smoothing)."""
    return torch.nn.functional.nll_loss(torch.log(probs.float().clamp_min(1e-12)), targs.long(), reduction="none")


def evaluate_learner(learn, run: Path, cfg, tta: bool = False, log=print, figures: bool = True,
                     ds=None, which: str = "last", split: str = "val", keep_probs: bool = False,
                     interp: Interp | None = None) -> dict:
    """Metrics, interpretation and figures for `learn` (the run's `which` model) on its validation
    set, or on the layout's test split (files of their own, beside the validation ones), into `run`;
    `keep_probs`: every image's probabilities too (probs.npz); `interp`: predictions already made."""
    from . import figures as fig

    run = Path(run)
    if getattr(learn.dls, "multi", False):
        return evaluate_multi(learn, run, tta, log, figures, ds, which, split, size=seen_size(learn, cfg)[1])
    if interp is None:
        interp = Interp.compute(learn, None if split == "val" else _split_loader(learn, ds, split))
    m = scores(learn, interp, cfg, tta)
    m.update(model=which, split=split)
    if not is_rank0():
        return m
    _keep_earlier_tta(split_file(run, "metrics", "json", split), m)
    write_json(split_file(run, "metrics", "json", split), m)
    write_top_losses(interp, split_file(run, "top_losses", "csv", split), ds)
    if keep_probs:
        write_probs(interp, split_file(run, "probs", "npz", split))
    log(format_metrics(m))
    if figures and "calibration" not in m:
        log("calibration and Grad-CAM figures need the audit extra: pip install .[audit] (skipped)")
    if figures:
        fig.draw_all(fig.FigureInputs(run, m, learn, interp, ds, split, cfg.resize), log=log)
        if split == "val":
            write_text(run / "summary.txt", model_summary(learn))
    return m


def evaluate_multi(learn, run: Path, tta: bool, log, figures: bool, ds, which: str, split: str,
                   size: int = 128) -> dict:
    """A multi-label evaluation: the probabilities (the last epoch's, kept, or one pass), one
    threshold per label chosen on the validation set (a test split is scored with the validation's:
    it never chooses anything), the metrics, top_losses.csv and the figures."""
    from . import figures as fig
    from .multilabel import choose_thresholds, metrics_multi, top_loss_rows

    dl = learn.dls.valid.new(shuffle=False, drop_last=False) if split == "val" else _split_loader(learn, ds, split)
    kept = getattr(learn, "last_valid_preds", None) if split == "val" else None
    probs, targs = kept[:2] if kept is not None and len(kept[1]) == len(dl.items) else \
        learn.get_preds(dl=dl, reorder=False)[:2]
    vocab = list(learn.dls.vocab)
    thresholds = choose_thresholds(probs, targs) if split == "val" else _validation_thresholds(run)
    m = metrics_multi(probs, targs, vocab, thresholds)
    m.update(model=which, split=split, size=size)  # what validation saw
    if tta:
        tp, tt = learn.tta(dl=dl)
        t = metrics_multi(tp, tt, vocab, thresholds)
        m["tta"] = {k: t[k] for k in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "map")}
    if not is_rank0():
        return m
    write_json(split_file(run, "metrics", "json", split), m)
    rows = top_loss_rows(item_paths(dl, len(probs)), probs, targs, vocab, thresholds)
    with open(split_file(run, "top_losses", "csv", split), "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "actual", "predicted", "probability", "loss", "top3", "missed", "wrong"])
        w.writerows(rows)
    log(format_metrics(m))
    if figures:
        fig.draw_all(fig.FigureInputs(run, m, learn, None, ds, split, preds=(probs, targs)), log=log)
    return m


def _validation_thresholds(run: Path) -> list[float]:
    from ..core.errors import RunError

    m = read_json(run / "metrics.json") if (run / "metrics.json").is_file() else {}
    if "thresholds" not in m:
        raise RunError(f"{run} has no validation thresholds yet: evaluate the validation split first "
                       f"(python -m app evaluate {run})")
    return m["thresholds"]


def _split_loader(learn, ds, split: str):
    from ..core.errors import DataError
    from ..data.loaders import split_dl

    if ds is None or not ds.split(split):
        raise DataError(f"this dataset has no {split} split ({ds.layout.summary() if ds else 'no dataset'}); "
                        "a test split is a test/ folder beside train/")
    return split_dl(learn.dls, ds, split)


def seen_size(learn, cfg) -> tuple[int, int]:
    """(the size the model last trained at, the test size validation saw for it)."""
    trained = getattr(learn, "cur_size", cfg.size)
    return trained, cfg.test_size(trained)


def scores(learn, interp, cfg, tta: bool) -> dict:
    """metrics.json's content: scikit-learn metrics, confusion, most confused, and TTA's metrics
    (computed from TTA's own predictions) when asked."""
    vocab = list(learn.dls.vocab)
    m = metrics_from(interp.probs, interp.targs, vocab)
    m.update(confusion_entry(interp.confusion_matrix()))
    m["most_confused"] = [[str(a), str(p), int(n)] for a, p, n in interp.most_confused(min_val=1)[:20]]
    m["classes"] = vocab
    trained, m["size"] = seen_size(learn, cfg)
    if m["size"] != trained:
        m["train_size"] = trained
    from . import calibration

    if calibration.available():  # the audit extra; without it, no calibration (said once, evaluate_learner)
        logits = interp.logits.numpy() if interp.logits is not None else None
        m["calibration"] = calibration.calibration_entry(interp.probs.numpy(), interp.targs.numpy(), logits)
    if tta:
        tp, tt = learn.tta(dl=interp.dl)
        t = metrics_from(tp, tt, vocab)
        m["tta"] = {k: t[k] for k in ("accuracy", "precision_macro", "recall_macro", "f1_macro")}
    return m


def _keep_earlier_tta(old: Path, m: dict) -> None:
    """An evaluation without --tta keeps the TTA scores an earlier one computed for the same model
    (same `which`, same predictions), never another model's."""
    if "tta" in m or not old.is_file():
        return
    prev = read_json(old)
    same = prev.get("model", "last") == m["model"] and prev.get("n") == m["n"] and prev.get("accuracy") == m["accuracy"]
    if "tta" in prev and same:
        m["tta"] = prev["tta"]


def model_summary(learn) -> str:
    """fastai's learn.summary() as text (it needs one batch from the validation loader)."""
    try:
        return str(learn.summary())
    except Exception as e:  # summary is a convenience; never let it fail an evaluation
        return f"learn.summary() failed: {e}"


def write_top_losses(interp, path: Path, ds=None) -> None:
    """Every validation image, worst first: what `review` steps through."""
    losses, idx = interp.top_losses()
    vocab = list(interp.vocab)
    files = item_paths(interp.dl, len(interp.probs))
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "actual", "predicted", "probability", "loss", "top3"])
        for loss, i in zip(losses.tolist(), idx.tolist()):
            pr = interp.probs[i]
            top = pr.topk(min(3, len(vocab)))
            top3 = format_top3((vocab[j], p) for p, j in zip(top.values.tolist(), top.indices.tolist()))
            w.writerow([files[i], vocab[int(interp.targs[i])], vocab[int(pr.argmax())],
                        f"{float(pr.max()):.4f}", f"{loss:.4f}", top3])


def write_probs(interp, path: Path) -> None:
    """probs.npz: each image's file, label index and probabilities (float32), in loader order."""
    import numpy as np

    from ..core.files import atomic

    files = item_paths(interp.dl, len(interp.probs))
    with atomic(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, paths=np.array(files), targets=interp.targs.numpy(), probs=interp.probs.float().numpy())


def format_metrics(m: dict) -> str:
    if m.get("task") == "multi-label":
        return (f"{'test split: ' if m.get('split') == 'test' else ''}multi-label: macro F1 {m['f1_macro']:.4f} "
                f"(at 0.5: {m['f1_macro_at_0.5']:.4f})  micro F1 {m['f1_micro']:.4f}  mAP {m['map']:.4f}  Hamming "
                f"loss {m['hamming_loss']:.4f}  exact label sets {m['accuracy']:.4f}  (n={m['n']}; one threshold per "
                "label, chosen on the validation set)")
    over = m.get("macro_over", len(m["per_class"]))
    lines = [f"{'test split: ' if m.get('split') == 'test' else ''}accuracy {m['accuracy']:.4f}  precision "
             f"{m['precision_macro']:.4f}  recall {m['recall_macro']:.4f}  F1 {m['f1_macro']:.4f}  (n={m['n']})"]
    if over < len(m["per_class"]):
        lines.append(f"macro averages over the {over} of {len(m['per_class'])} classes that have images here "
                     f"(none: {', '.join(m['classes_without_images'][:5])})")
    if "tta" in m:
        lines.append(f"with TTA: accuracy {m['tta']['accuracy']:.4f}  F1 {m['tta']['f1_macro']:.4f}")
    c = m.get("calibration")
    if c:
        after = f", {100 * c['ece_after']:.2f} % after it (held-out halves)" if "ece_after" in c else ""
        lines.append(f"calibration: ECE {100 * c['ece']:.2f} % ({c['n_bins']} bins); temperature {c['temperature']:.3f}"
                     f"{after}")
    return "\n".join(lines)


def evaluate_run(run: str | Path, tta: bool = False, which: str = "last", data: str | None = None,
                 console=None, split: str = "val", progress=None, labels: str | None = None) -> dict:
    """`python -m app evaluate RUN`: rebuild the run's learner and evaluate it (bars on `progress`;
    `data`, `labels`: the dataset where it is now)."""
    from ..model.learner import load_run
    from .report import write_report

    log = console.print if console else print
    learn, cfg, ds = load_run(run, which=which, data=data, log=log, progress=progress, labels=labels)
    m = evaluate_learner(learn, Path(run), cfg, tta=tta, log=log, ds=ds, which=which, split=split)
    write_report(run)  # the report shows what was just measured, not an earlier evaluation's numbers
    return m

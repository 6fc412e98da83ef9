"""Evaluation: one pass of predictions over the validation set, then scikit-learn metrics,
fastai's ClassificationInterpretation (confusion, most confused, top losses), optional TTA,
learn.summary(), and every figure, written into the run directory."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from fastai.interpret import ClassificationInterpretation

from ..core.files import read_json, write_json, write_text
from ..core.ranks import is_rank0
from ..data.loaders import item_paths


class Interp(ClassificationInterpretation):
    """fastai's ClassificationInterpretation over predictions computed once (fastai recomputes
    them for the confusion matrix; on a CPU that is a second full pass)."""

    def __init__(self, learn, dl, probs, targs, losses):
        super().__init__(learn, dl, losses)
        self.probs, self.targs = probs, targs

    @classmethod
    def compute(cls, learn, dl=None):
        """One prediction pass, or none when training just kept its last validation pass."""
        kept = getattr(learn, "last_valid_preds", None) if dl is None else None
        dl = dl or learn.dls.valid.new(shuffle=False, drop_last=False)
        if kept is not None and len(kept[1]) == len(dl.items):
            return cls(learn, dl, *kept)
        probs, targs, losses = learn.get_preds(dl=dl, with_loss=True)
        return cls(learn, dl, probs, targs, losses)

    def confusion_matrix(self):
        n = len(self.vocab)
        d, t = self.probs.argmax(1), self.targs
        return torch.bincount(t * n + d, minlength=n * n).reshape(n, n).numpy()


def metrics_from(probs, targs, vocab) -> dict:
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    y, p = np.asarray(targs), np.asarray(probs).argmax(1)
    labels = list(range(len(vocab)))
    P, R, F, S = precision_recall_fscore_support(y, p, labels=labels, zero_division=0)
    mp, mr, mf, _ = precision_recall_fscore_support(y, p, labels=labels, average="macro", zero_division=0)
    return {
        "accuracy": float(accuracy_score(y, p)),
        "precision_macro": float(mp),
        "recall_macro": float(mr),
        "f1_macro": float(mf),
        "n": int(len(y)),
        "per_class": {
            name: {"precision": float(P[i]), "recall": float(R[i]), "f1": float(F[i]), "support": int(S[i])}
            for i, name in enumerate(vocab)
        },
    }


def evaluate_learner(learn, run: Path, cfg, tta: bool = False, log=print, figures: bool = True,
                     ds=None, which: str = "last") -> dict:
    """Metrics, interpretation and figures for `learn` (the run's `which` model) on its validation
    set, into `run`."""
    from . import figures as fig

    run = Path(run)
    interp = Interp.compute(learn)
    m = scores(learn, interp, cfg, tta)
    m["model"] = which
    if not is_rank0():
        return m
    _keep_earlier_tta(run / "metrics.json", m)
    write_json(run / "metrics.json", m)
    write_top_losses(interp, run / "top_losses.csv", ds)
    log(format_metrics(m))
    if figures:
        fig.draw_all(fig.FigureInputs(run, m, learn, interp, ds), log=log)
        write_text(run / "summary.txt", model_summary(learn))
    return m


def scores(learn, interp, cfg, tta: bool) -> dict:
    """metrics.json's content: scikit-learn metrics, confusion, most confused, and TTA's metrics
    (computed from TTA's own predictions) when asked."""
    vocab = list(learn.dls.vocab)
    m = metrics_from(interp.probs, interp.targs, vocab)
    m["confusion"] = interp.confusion_matrix().tolist()
    m["most_confused"] = [[str(a), str(p), int(n)] for a, p, n in interp.most_confused(min_val=1)[:20]]
    m["classes"] = vocab
    m["size"] = getattr(learn, "cur_size", cfg.size)
    if tta:
        tp, tt = learn.tta(dl=learn.dls.valid)
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
    files = item_paths(interp.dl)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "actual", "predicted", "probability", "loss", "top3"])
        for loss, i in zip(losses.tolist(), idx.tolist()):
            pr = interp.probs[i]
            top = pr.topk(min(3, len(vocab)))
            top3 = ";".join(f"{vocab[j]}:{p:.3f}" for p, j in zip(top.values.tolist(), top.indices.tolist()))
            w.writerow([files[i], vocab[int(interp.targs[i])], vocab[int(pr.argmax())],
                        f"{float(pr.max()):.4f}", f"{loss:.4f}", top3])


def format_metrics(m: dict) -> str:
    lines = [f"accuracy {m['accuracy']:.4f}  precision {m['precision_macro']:.4f}  "
             f"recall {m['recall_macro']:.4f}  F1 {m['f1_macro']:.4f}  (n={m['n']})"]
    if "tta" in m:
        lines.append(f"with TTA: accuracy {m['tta']['accuracy']:.4f}  F1 {m['tta']['f1_macro']:.4f}")
    return "\n".join(lines)


def evaluate_run(run: str | Path, tta: bool = False, which: str = "last", data: str | None = None,
                 console=None, progress=None) -> dict:
    """`python -m app evaluate RUN`: rebuild the run's learner and evaluate it (bars on `progress`)."""
    from ..model.learner import load_run

    log = console.print if console else print
    learn, cfg, ds = load_run(run, which=which, data=data, log=log, progress=progress)
    return evaluate_learner(learn, Path(run), cfg, tta=tta, log=log, ds=ds, which=which)

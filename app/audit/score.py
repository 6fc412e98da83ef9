"""One pass of a model over the training and validation images without augmentation: each image's
logits and the model body's pooled features (the head's AdaptiveConcatPool2d + Flatten, 512
numbers), through fastai's get_preds with a small callback holding a forward hook."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from fastai.callback.core import Callback
from fastcore.basics import noop


class KeepFeatures(Callback):
    """The output of `module` for every batch of a get_preds pass."""

    def __init__(self, module):
        self.module, self.out, self.hook = module, [], None

    def before_validate(self):
        self.out = []
        self.hook = self.module.register_forward_hook(lambda m, i, o: self.out.append(o.detach().float().cpu()))

    def after_validate(self):
        if self.hook is not None:
            self.hook.remove()
            self.hook = None


@dataclass
class Scored:
    """One split as a model saw it: files, label indices, logits and pooled features, in loader order."""

    paths: list[str]
    targets: np.ndarray
    logits: np.ndarray
    features: np.ndarray | None = None

    @property
    def probs(self) -> np.ndarray:
        from ..model.bundle import softmax

        return softmax(self.logits.astype(np.float64)).astype(np.float32)


def split_loader(learn, ds, split: str):
    from ..data.loaders import split_dl

    return learn.dls.valid.new(shuffle=False, drop_last=False) if split == "val" else split_dl(learn.dls, ds, split)


def score(learn, dl, features: bool = True) -> Scored:
    """Logits (and pooled features) of every image `dl` yields."""
    from ..data.loaders import item_paths

    keep = KeepFeatures(learn.model[1][1]) if features else None
    logits, targets = learn.get_preds(dl=dl, act=noop, reorder=False, cbs=[keep] if keep else None)
    feats = np.concatenate([f.numpy() for f in keep.out]) if keep else None
    return Scored(item_paths(dl, len(logits)), targets.numpy(), logits.float().numpy(), feats)


def ensemble(learn, dl, states: list[dict]) -> Scored:
    """Several models' mean probabilities on one loader (their logits: the mean's logarithm), each
    state loaded in turn into `learn`'s model."""
    probs = []
    for st in states:
        learn.model.load_state_dict(st)
        s = score(learn, dl, features=False)
        probs.append(s.probs)
    mean = np.mean(probs, axis=0)
    return Scored(s.paths, s.targets, np.log(np.clip(mean, 1e-30, 1.0)).astype(np.float32))

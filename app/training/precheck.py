"""Mistakes in paths, found before the seconds it takes to import torch and fastai."""

from __future__ import annotations

from pathlib import Path

from ..core.files import refuse_existing
from ..core.rundir import load_config
from ..data.layout import detect
from ..model.weights import check_weights


def precheck(out=None, resume=None, weights: str | None = None, data=None, labels=None, valid_pct: float = 0.2,
             split_seed: int = 42) -> None:
    """--resume names a run; --out does not exist; --weights and --data exist and look right."""
    if resume:
        load_config(resume)
        return
    refuse_existing(out)
    check_weights(weights)
    if data:
        detect(Path(data), labels, valid_pct, split_seed)

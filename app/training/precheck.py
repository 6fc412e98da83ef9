"""Mistakes in paths, found before the seconds it takes to import torch and fastai."""

from __future__ import annotations

from pathlib import Path

from ..core.files import refuse_existing
from ..core.rundir import load_config
from ..data.layout import check_layout
from ..model.weights import check_weights


def precheck(out=None, resume=None, weights: str | None = None, data=None) -> None:
    """--resume names a run; --out does not exist; --weights and --data exist and look right."""
    if resume:
        load_config(resume)
        return
    refuse_existing(out)
    check_weights(weights)
    if data:
        check_layout(Path(data))

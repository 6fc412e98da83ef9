"""Mistakes in paths, found before the seconds it takes to import torch and fastai (and, on
--resume, before any training: a checkpoint that would be refused, exports that already exist)."""

from __future__ import annotations

from pathlib import Path

from ..core.files import check_writable, refuse_existing
from ..core.paths import runs_root
from ..core.rundir import load_config
from ..data.layout import detect, follow_moved, reading_of
from ..model.weights import check_weights


def precheck(out=None, resume=None, weights: str | None = None, data=None, export: bool = False, labels=None,
             valid_pct: float = 0.2, split_seed: int = 42, layout: str = "auto", label_delim=None,
             track=None) -> None:
    """--resume names a run whose settings and checkpoint load; --out does not exist and can be made;
    --weights and --data exist and look right (in any accepted layout); the exports a finished run
    would write are free; --track names trackers."""
    from .track import resolve_track

    resolve_track(track)
    if resume:
        cfg, meta = load_config(resume)  # its settings are checked as they are read
        if data or labels:  # the run's dataset, moved: read as the run reads it
            moved = follow_moved(cfg, data, labels)
            detect(Path(moved.data), **reading_of(moved))
        _checkpoint_loads(Path(resume))
        if export or meta.get("finish", {}).get("export"):  # asked now, or when the run began (train)
            from ..shipping.export import export_targets

            export_targets(Path(resume))
        return
    refuse_existing(out)
    check_writable(Path(out) if out else runs_root() / "run", "create the run directory")
    check_weights(weights)
    if data:
        detect(Path(data), labels, valid_pct, split_seed, layout, label_delim=label_delim)


def _checkpoint_loads(run: Path) -> None:
    """The last checkpoint reads as tensors and numbers only (its tensors memory-mapped, not read)."""
    last = run / "models" / "last.pth"
    if last.is_file():
        from ..model.weights import torch_load

        torch_load(last, mmap=True)

"""`python -m app lr-find`: fastai's lr_find with its four suggestions, the app's recommended lr
(LR_RULE), the curve and its plot; `--lr-from RUN` takes the recommendation into training."""

from __future__ import annotations

from pathlib import Path

from ..core import ranks as dist
from ..core.config import TrainConfig
from ..core.errors import RunError
from ..core.files import read_json, write_json
from ..core.rundir import update_config
from ..model.learner import build
from .context import open_run
from .distributed import distributed

LR_RULE = "max(valley, minimum / 4): fastai's valley, raised to a quarter of its 'minimum' suggestion"


def recommend_lr(sug: dict) -> float:
    """fastai's valley, but never below minimum/4 (= lr at the loss minimum / 40).

    On this data from random init (CPU, bs 64, 96 px) valley was 1.0e-3 and trained well, while
    2.5e-3 and more (slide, minimum) left AlexNet stuck at chance; on a GPU run valley came out at
    1.9e-4, too low to train from scratch. See benchmarks/accuracy.md.
    """
    return float(max(sug["valley"], sug["minimum"] / 4))


def lr_from_run(run: str | Path) -> float:
    """The learning rate a run's lr-find recommends (see `recommended` in lr_find.json)."""
    f = Path(run) / "lr_find.json"
    if not f.is_file():
        raise RunError(f"{run} has no lr_find.json (run `python -m app lr-find` first)")
    return float(read_json(f)["recommended"])


def find_lr(learn, unfrozen: bool = True) -> tuple[dict, float]:
    """(fastai's four suggestions, the recommended lr) for `learn` as it will train."""
    from fastai.callback.schedule import minimum, slide, steep, valley

    if unfrozen:
        learn.unfreeze()
    res = learn.lr_find(suggest_funcs=(valley, slide, minimum, steep), show_plot=False)
    sug = {k: float(v) for k, v in res._asdict().items()}
    return sug, recommend_lr(sug)


def run_lr_find(preset: str = "auto", weights: str | None = None, out=None, console=None, progress=None,
                track=None, **flags) -> Path:
    """`python -m app lr-find` as typed: settings and weights resolved, then lr_find."""
    from ..core.device import trains_on_cuda
    from ..model.weights import resolve_weights
    from .presets import resolve

    w = resolve_weights(weights, progress=progress)
    cfg = resolve("lr-find", preset, w.spec, trains_on_cuda(flags.get("device")), **flags)
    return lr_find(cfg, out=str(out) if out else None, console=console, progress=progress, track=track)


def lr_find(cfg: TrainConfig, out: str | None = None, console=None, progress=None, track=None) -> Path:
    """fastai lr_find; saves its four suggestions, the recommended lr, the curve and its plot (and
    logs them to the --track trackers: the curve by iteration, the suggestions as results)."""
    from .track import track_names, tracked

    names = track_names(track) if dist.is_rank0() else []
    s = open_run(cfg.replace(command="lr-find", progressive=""), out, console=console, progress=progress)
    learn = build(s.cfg, s.dls, s.run, s.device, s.log, progress=progress)
    learn.phase_label = "lr-find"
    with distributed(learn, s.device):
        sug, rec = find_lr(learn, unfrozen=False)  # as fastai does: a pretrained body stays frozen
    if dist.is_rank0():
        rows = {"lrs": [float(x) for x in learn.recorder.lrs], "losses": [float(x) for x in learn.recorder.losses]}
        write_json(s.run / "lr_find.json", {"suggestions": sug, "recommended": rec, "rule": LR_RULE, **rows})
        from ..evaluation.figures import FigureInputs, draw

        draw("lr_find", FigureInputs(s.run))
        update_config(s.run, status="finished")
        s.log("lr_find suggestions: " + ", ".join(f"{k} {v:.2e}" for k, v in sug.items()))
        s.log(f"recommended lr: {rec:.2e} ({LR_RULE}); use it with --lr-from {s.run}")
        with tracked(names, s.run, s.log) as t:
            t.params(s.cfg)
            t.curve([{"lr_find/lr": lr, "lr_find/loss": loss} for lr, loss in zip(rows["lrs"], rows["losses"])])
            t.final({**{f"lr_find/{k}": v for k, v in sug.items()}, "lr_find/recommended": rec})
    dist.barrier()
    return s.run

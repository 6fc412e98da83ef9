"""Run directories: numbered, never overwritten, self-describing (config.json), and the one
helper that turns a run back into a Learner for evaluate, export, review and bench."""

from __future__ import annotations

import json
import os
import platform
import re
import time
from pathlib import Path

from .errors import DataError, RunError
from .settings import TrainConfig, runs_root

CONFIG = "config.json"


def is_rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def check_out(out) -> None:
    if out and Path(out).exists():
        raise RunError(f"output directory already exists: {out} (choose another --out; nothing was changed)")


def new_run_dir(command: str, out: str | None = None) -> Path:
    """`out` must not exist; without it, runs/<command>-<n> with the next free n."""
    if out:
        check_out(out)
        d = Path(out)
        d.mkdir(parents=True)
        return d
    base = runs_root()
    base.mkdir(parents=True, exist_ok=True)
    taken = [int(m.group(1)) for p in base.iterdir() if (m := re.fullmatch(rf"{re.escape(command)}-(\d+)", p.name))]
    n = max(taken, default=0) + 1
    while True:
        d = base / f"{command}-{n}"
        try:
            d.mkdir()  # atomic: two runs started together get different numbers
            return d
        except FileExistsError:
            n += 1


def versions() -> dict:
    import fastai
    import torch
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "fastai": fastai.__version__,
        "platform": platform.platform(),
    }


def device_info(device) -> str:
    import torch

    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"


def write_json(path: Path, obj) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise RunError(f"{path} not found") from None
    except (OSError, ValueError) as e:
        raise RunError(f"cannot read {path}: {e}") from None


def save_config(run: Path, cfg: TrainConfig, **info) -> None:
    meta = {"config": cfg.to_dict(), **info}
    meta.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S"))
    write_json(run / CONFIG, meta)


def load_config(run: str | Path) -> tuple[TrainConfig, dict]:
    run = Path(run)
    if not run.is_dir():
        raise RunError(f"run directory not found: {run}")
    if not (run / CONFIG).is_file():
        raise RunError(f"{run} is not a run directory (no {CONFIG})")
    meta = read_json(run / CONFIG)
    return TrainConfig.from_dict(meta.get("config", {})), meta


def update_config(run: Path, **info) -> None:
    meta = read_json(run / CONFIG)
    meta.update(info)
    write_json(run / CONFIG, meta)


def checkpoint_path(run: Path, which: str = "last") -> Path:
    p = Path(run) / "models" / f"{which}.pth"
    if not p.is_file():
        raise RunError(f"{run} has no trained model ({p.relative_to(run)} missing; did training finish an epoch?)")
    return p


def load_run(run: str | Path, which: str = "last", loader: str | None = None, size: int | None = None,
             device=None, data: str | None = None, log=print):
    """(learn, cfg, ds) for a finished run: same data, classes, loader and size; weights loaded."""
    import torch

    from .model import build_learner, quiet
    from .train import make_dls, pick_device

    run = Path(run)
    cfg, meta = load_config(run)
    ckpt = checkpoint_path(run, which)
    data = data or cfg.data
    if not Path(data).is_dir():
        raise DataError(f"the run's data folder is gone: {data} (moved? pass --data NEW_PATH)")
    cfg = cfg.replace(data=data, loader=loader or cfg.loader, size=size or cfg.size)
    device = pick_device(device or cfg.device)
    ds, dls = make_dls(cfg, cfg.size, device, log=log)
    if list(dls.vocab) != meta.get("classes", list(dls.vocab)):
        raise DataError(f"classes in {data} differ from the run's: {meta.get('classes')}")
    learn = build_learner(dls, "none", cfg.label_smoothing, path=run, log=lambda *_: None, ps=cfg.ps)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    learn.model.load_state_dict(state["model"])
    return quiet(learn), cfg, ds

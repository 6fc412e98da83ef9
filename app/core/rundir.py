"""Run directories: numbered, never overwritten, self-describing (config.json); what a run
directory holds (file and figure names); and atomic writes, so a kill never leaves half a file.
Depends only on settings and errors: every module can use it."""

from __future__ import annotations

import os
import platform
import re
import time
from pathlib import Path

from .config import TrainConfig
from .errors import RunError
from .files import read_json, refuse_existing, write_json, writing
from .paths import runs_root

CONFIG = "config.json"


def new_run_dir(command: str, out: str | None = None) -> Path:
    """`out` must not exist; without it, runs/<command>-<n> with the next free n."""
    if out:
        refuse_existing(out)
        d = Path(out)
        with writing(d, "create the run directory"):
            d.mkdir(parents=True)
        return d
    base = runs_root()
    with writing(base, "create the run directory in"):
        base.mkdir(parents=True, exist_ok=True)
        return _numbered(base, command)


def _numbered(base: Path, command: str) -> Path:
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
    try:
        if not isinstance(meta, dict) or not isinstance(meta.get("config", {}), dict):
            raise ValueError("not a run description (expected an object with a 'config' object)")
        return TrainConfig.from_dict(meta.get("config", {})), meta
    except (ValueError, TypeError) as e:
        raise RunError(f"{run / CONFIG}: {e}; fix it or start a new run") from None


def update_config(run: Path, **info) -> None:
    meta = read_json(run / CONFIG)
    meta.update(info)
    write_json(run / CONFIG, meta)


def checkpoint_path(run: Path, which: str = "last") -> Path:
    p = Path(run) / "models" / f"{which}.pth"
    if not p.is_file():
        raise RunError(f"{run} has no trained model ({p.relative_to(run)} missing; did training finish an epoch?)")
    return p

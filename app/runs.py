"""Run directories: numbered, never overwritten, self-describing (config.json); what a run
directory holds (file and figure names); and atomic writes, so a kill never leaves half a file.
Depends only on settings and errors: every module can use it."""

from __future__ import annotations

import json
import os
import platform
import re
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import RunError
from .settings import TrainConfig, runs_root

CONFIG = "config.json"
FIGURES = {  # RUN/figures/<name>; drawn by figures.py, shown by report.py
    "samples": "01_dataset_samples.jpg",
    "loss": "02_loss_per_epoch.png",
    "accuracy": "03_accuracy_per_epoch.png",
    "curve": "04_learning_curve.png",
    "overall": "05_overall_metrics.png",
    "confusion": "06_confusion_matrix.png",
    "per_class": "07_per_class_metrics.png",
    "architecture": "08_model_architecture.png",
    "top_losses": "09_top_losses.jpg",
    "lr_find": "10_lr_find.png",
}


@contextmanager
def atomic(path: Path):
    """Yields a temporary path beside `path`; renamed onto it only when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: Path, text: str) -> None:
    with atomic(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def refuse_existing(out) -> None:
    """Nothing a user made is overwritten: an --out that exists stops the command."""
    if out and Path(out).exists():
        raise RunError(f"output directory already exists: {out} (choose another --out; nothing was changed)")


def new_run_dir(command: str, out: str | None = None) -> Path:
    """`out` must not exist; without it, runs/<command>-<n> with the next free n."""
    if out:
        refuse_existing(out)
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
    write_text(path, json.dumps(obj, indent=2, default=str))


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

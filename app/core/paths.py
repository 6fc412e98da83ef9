"""Where things live and what the environment asks for. Every environment variable the app reads
is read here or in core/ranks.py (the launcher's WORLD_SIZE, RANK, ...)."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the checkout: app/core/paths.py -> .
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data" / "imagenette2-224"
SHARED_SOURCE_DATA = PROJECT_ROOT.parent / "shared" / "data" / "tiny-imagenet-200-64"  # bench --transfer's source


def cache_root() -> Path:
    """Decoded-image caches and scan verdicts, outside the dataset (which may be read-only)."""
    env = os.environ.get("APP_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "alexnet-cli"


def dataset_cache_dir(root: str | Path) -> Path:
    """One folder per dataset (by its resolved path) under cache_root(): its caches and verdicts."""
    root = Path(root).resolve()
    key = hashlib.sha1(str(root).encode()).hexdigest()[:12]
    return cache_root() / f"{root.name}-{key}"


def runs_root() -> Path:
    return Path(os.environ.get("APP_RUNS_DIR", "runs"))


def show_progress(stream=None) -> bool:
    """Progress bars: APP_PROGRESS=1 shows them, =0 hides them; unset, only on a terminal."""
    env = os.environ.get("APP_PROGRESS")
    if env in ("0", "1"):
        return env == "1"
    return (stream or sys.stdout).isatty()


def console_width(stream) -> int | None:
    """Piped output (logs, CI, files) gets wide tables, not rich's 80-column default; COLUMNS wins."""
    return None if stream.isatty() or os.environ.get("COLUMNS") else 160


def debug() -> bool:
    """APP_DEBUG=1: tracebacks instead of one-line errors."""
    return bool(os.environ.get("APP_DEBUG"))


def track_env() -> str:
    """APP_TRACK: the trackers every training command logs to when --track is not typed (as
    Ultralytics reads its settings), e.g. `tensorboard,mlflow`."""
    return os.environ.get("APP_TRACK", "")


def mlflow_uri() -> str:
    """MLflow's own MLFLOW_TRACKING_URI, else a local sqlite store beside the runs (MLflow 3 refuses
    a plain ./mlruns file store unless MLFLOW_ALLOW_FILE_STORE is set)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(runs_root() / 'mlflow.db').resolve()}"


def mlflow_experiment() -> str:
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or "alexnet-cli"


def wandb_settings() -> tuple[str, str]:
    """(mode, project): W&B offline unless WANDB_MODE says otherwise; WANDB_PROJECT or alexnet-cli."""
    return os.environ.get("WANDB_MODE") or "offline", os.environ.get("WANDB_PROJECT") or "alexnet-cli"

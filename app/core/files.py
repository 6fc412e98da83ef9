"""Files written atomically (a kill never leaves half a file), JSON read with a one-line error, and
the rule that nothing a user made is overwritten."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

from .errors import RunError


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


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, default=str))


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise RunError(f"{path} not found") from None
    except (OSError, ValueError) as e:
        raise RunError(f"cannot read {path}: {e}") from None

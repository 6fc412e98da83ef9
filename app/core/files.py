"""Files written atomically (a kill never leaves half a file), JSON read with a one-line error, and
the rule that nothing a user made is overwritten."""

from __future__ import annotations

import errno
import json
import os
import tempfile
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
    """Nothing a user made is overwritten: an --out that exists (a dangling symlink included) stops
    the command."""
    if out and os.path.lexists(out):
        if not Path(out).exists():
            raise RunError(f"--out {out} is a symlink to a missing path (choose another --out; nothing was changed)")
        raise RunError(f"output directory already exists: {out} (choose another --out; nothing was changed)")


def os_reason(e: OSError) -> str:
    """An OSError as a person reads it: no space left, read-only, permission denied, ..."""
    return {errno.ENOSPC: "no space left on device", errno.EROFS: "read-only file system",
            errno.EACCES: "permission denied", errno.EPERM: "permission denied",
            errno.EDQUOT: "disk quota exceeded"}.get(e.errno, e.strerror or type(e).__name__)


@contextmanager
def writing(path, what: str = "write"):
    """An OSError while writing `path` becomes one line (RunError, exit 5) saying why."""
    try:
        yield
    except OSError as e:
        raise RunError(f"cannot {what} {path}: {os_reason(e)}") from None


def check_writable(path, what: str = "write") -> None:
    """Fail now, not after the work, when `path` (a file or folder to be made) cannot be written:
    a probe file in its nearest existing folder (os.access says nothing true about read-only
    mounts for root, or about quotas)."""
    folder = Path(os.path.abspath(path)).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    with writing(path, what):
        with tempfile.TemporaryFile(dir=folder):
            pass


def publish(tmp: Path, path: Path) -> None:
    """Give the finished file `tmp` the name `path` only if nobody has it (a hard link fails on an
    existing name), then drop `tmp`; RunError when `path` exists. Without hard links (FAT), a rename
    after a check."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise RunError(f"{path} already exists; nothing was overwritten (choose another path)") from None
    except OSError:
        if os.path.lexists(path):
            raise RunError(f"{path} already exists; nothing was overwritten (choose another path)") from None
        os.rename(tmp, path)
        return
    os.unlink(tmp)


def write_new(path: Path, write) -> None:
    """A new file, whole or not at all: `write(f)` fills a temporary file beside `path` (flushed and
    fsynced), which then takes the name unless it exists. A kill, a full disk or a read-only folder
    leaves nothing under `path`; the OSError becomes one line."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with writing(path):
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            publish(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, default=str))


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path} not found") from None
    except (OSError, ValueError) as e:
        raise RunError(f"cannot read {path}: {e}") from None

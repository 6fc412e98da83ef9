"""Real read-only and full file systems for a CLI process: the command runs in a private mount
namespace (`unshare -m`; user namespaces when not root) where a folder is bind-mounted read-only
or a small tmpfs is mounted and filled. Nothing outside that one process sees the mounts."""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
import sys

import pytest

from .conftest import ROOT


@functools.cache
def unshare() -> list[str] | None:
    """The unshare command line that gives this user a private mount namespace, or None."""
    exe = shutil.which("unshare")
    if not exe:
        return None
    cmd = [exe, "-m"] if os.geteuid() == 0 else [exe, "-Urm"]
    probe = subprocess.run([*cmd, "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True)
    return cmd if probe.returncode == 0 else None


def need_mounts():
    if unshare() is None:
        pytest.skip("needs a private mount namespace (unshare -m as root, or user namespaces) for a real "
                    "read-only or full file system")


def read_only(path) -> str:
    q = shlex.quote(str(path))
    return f"mount --bind {q} {q} && mount -o remount,bind,ro {q} {q}"


def full_disk(path, size: str = "4m") -> str:
    """A `size` tmpfs at `path`, then filled to the last byte."""
    q = shlex.quote(str(path))
    return f"mkdir -p {q} && mount -t tmpfs -o size={size} tmpfs {q} && (cat /dev/zero > {q}/.fill 2>/dev/null || true)"


def tmpfs(path, size: str) -> str:
    q = shlex.quote(str(path))
    return f"mkdir -p {q} && mount -t tmpfs -o size={size} tmpfs {q}"


def run_mounted(setup: str, *args, after: str = "", python: list[str] | None = None, env=None, timeout=600):
    """`python -m app ARGS` (or `python PYTHON...`) after `setup` ran in a private mount namespace;
    `after` runs there once the command ended (to copy out or list what the mounts held)."""
    need_mounts()
    argv = python if python is not None else ["-m", "app", *map(str, args)]
    script = (f"set -e\n{setup}\nset +e\n{shlex.quote(sys.executable)} \"$@\"\nrc=$?\n{after}\nexit $rc")
    return subprocess.run([*unshare(), "sh", "-c", script, "sh", *argv], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def listing(folder, out) -> str:
    """Shell that writes the names in `folder` (hidden ones too) to the file `out`."""
    return f"ls -A {shlex.quote(str(folder))} > {shlex.quote(str(out))}"

"""A command's clock (core/host.py): it starts when this interpreter does, not when the process
was created, which is the shell's when a shell execs its last command in place."""

import json
import shutil
import subprocess
import sys
import time

import pytest

from ..conftest import ROOT


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash (its exec of a last command is the case)")
def test_a_command_a_shell_execs_after_other_work_does_not_count_that_work(tiny_data, tmp_path):
    """`bash -c "pip install ... && python -m app train"`: bash runs the last command in its own
    process, so the process's creation time was the shell's; README command 1's train counted the
    venv's pip install (199 s before its scan). Here 4 s of sleep before a short run: the wall time
    and the phases it records are within the seconds it itself ran."""
    run = tmp_path / "run"
    cmd = (f"sleep 4 && exec {sys.executable} -m app fit-one-cycle --data {tiny_data} --epochs 1 --size 64 "
           f"--bs 8 --no-figures --out {run}")
    t = time.time()
    p = subprocess.run(["bash", "-c", cmd], cwd=ROOT, capture_output=True, text=True, timeout=300)
    took = time.time() - t
    assert p.returncode == 0, p.stderr
    meta = json.loads((run / "config.json").read_text())
    assert meta["wall_seconds"] <= took - 4 + 0.5 and meta["phases"]["first_batch"] < took - 4, (meta, took)

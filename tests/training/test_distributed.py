"""Two processes on this CPU (torchrun, gloo): a real 2-epoch fit through fastai's DDP pieces;
disjoint shards covering the training set; progressive resizing really changing the batches on
both ranks; one run directory and one export; the accuracy it reports equals a single-process
evaluate of the saved model."""

import json
import os
import shutil
import subprocess
import sys
from collections import Counter

import pytest

from ..conftest import ROOT, run_cli


@pytest.mark.slow
def test_torchrun_two_processes(small_data, tmp_path):
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    runs, probe = tmp_path / "runs", tmp_path / "probe"
    env = {**os.environ, "APP_RUNS_DIR": str(runs), "APP_DDP_PROBE": str(probe),
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [torchrun, "--nproc_per_node", "2", "--master_port", "29531", str(ROOT / "tests" / "ddp_probe.py"),
           "fit-one-cycle", "--data", str(small_data), "--epochs", "2", "--size", "96", "--progressive", "64:0.5",
           "--bs", "16", "--lr", "1e-3", "--valid-every", "1", "--export"]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]

    made = list(runs.iterdir())
    assert len(made) == 1, made  # one run directory, written by rank 0 only
    run = made[0]
    assert json.loads((run / "config.json").read_text())["world_size"] == 2
    export = run / "export"  # one export, written by rank 0, inside the run
    assert len(list(export.glob("*.pkl"))) == 1 and len([d for d in export.iterdir() if d.is_dir()]) == 1

    shards = [(probe.parent / f"probe.shards.rank{r}").read_text().split("\n")[0] for r in (0, 1)]
    a, b = (set(map(int, s.split(","))) for s in shards)
    assert not a & b and len(a) == len(b) == 80  # 160 training images, disjoint halves
    assert a | b == set(range(len(a | b)))

    for r in (0, 1):  # 5 batches of 16 per rank and epoch: the first epoch at 64 px, the second at 96
        shapes = (probe.parent / f"probe.shapes.rank{r}").read_text().split()
        assert Counter(shapes) == {"16x3x64x64": 5, "16x3x96x96": 5}, (r, shapes)
        assert shapes == sorted(shapes, key=lambda s: int(s.split("x")[-1]))
    with open(run / "history.csv") as f:
        rows = f.read().strip().splitlines()
    assert len(rows) == 3 and rows[1].endswith(",64") and rows[2].endswith(",96")  # written once, true sizes

    reported = json.loads((run / "metrics.json").read_text())["accuracy"]
    run_cli("evaluate", run, check=True)
    assert json.loads((run / "metrics.json").read_text())["accuracy"] == reported

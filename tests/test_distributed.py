"""Two processes on this CPU (torchrun, gloo): a real 1-epoch fit through fastai's DDP pieces;
disjoint shards covering the training set; one run directory and one export; the accuracy it
reports equals a single-process evaluate of the saved model."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from .conftest import ROOT, run_cli


@pytest.mark.slow
def test_torchrun_two_processes(small_data, tmp_path):
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    runs, models = tmp_path / "runs", tmp_path / "models"
    env = {**os.environ, "APP_RUNS_DIR": str(runs), "APP_MODELS_DIR": str(models), "APP_SHARD_LOG": str(tmp_path / "shards"),
           "OMP_NUM_THREADS": "1"}
    cmd = [torchrun, "--nproc_per_node", "2", "--master_port", "29531", "-m", "app", "fit-one-cycle",
           "--data", str(small_data), "--epochs", "1", "--size", "64", "--bs", "16", "--lr", "1e-3", "--export"]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]

    made = list(runs.iterdir())
    assert len(made) == 1, made  # one run directory, written by rank 0 only
    run = made[0]
    assert json.loads((run / "config.json").read_text())["world_size"] == 2
    assert len(list(models.glob("*.pkl"))) == 1 and len([d for d in models.iterdir() if d.is_dir()]) == 1

    shards = [open(tmp_path / f"shards.rank{r}").read().split("\n")[0] for r in (0, 1)]
    a, b = (set(map(int, s.split(","))) for s in shards)
    assert not a & b and len(a) == len(b) == 80  # 160 training images, disjoint halves
    assert a | b == set(range(len(a | b)))

    reported = json.loads((run / "metrics.json").read_text())["accuracy"]
    with open(run / "history.csv") as f:
        assert len(f.read().strip().splitlines()) == 2  # header + one epoch, written once
    run_cli("evaluate", run, check=True)
    assert json.loads((run / "metrics.json").read_text())["accuracy"] == reported

"""The bad-input corpus through a real training step, on both loaders: the job completes and
every file left out is in RUN/skipped.csv with its reason."""

import csv
import shutil

import pytest

from .conftest import EASY, run_cli
from .corpus import as_root, make_corpus


@pytest.mark.parametrize("loader", ["cached", "datablock"])
def test_training_step_skips_bad_files_and_lists_them(tiny_data, tmp_path, loader):
    data = shutil.copytree(tiny_data, tmp_path / "data")
    corpus = make_corpus(data / "train" / EASY[0], next((data / "train" / EASY[1]).iterdir()))
    run = tmp_path / "run"
    p = run_cli("fit-one-cycle", "--data", data, "--epochs", 1, "--size", 64, "--bs", 8, "--loader", loader,
                "--out", run, "--no-evaluate", check=True)
    with open(run / "skipped.csv") as f:
        skipped = {r["path"].rsplit("/", 1)[-1]: r["reason"] for r in csv.DictReader(f)}
    for name, (_, expected) in corpus.items():
        if expected == "ok" or (name == "unreadable.jpg" and as_root()):
            assert name not in skipped, (name, skipped.get(name))
        else:
            assert expected in skipped[name], (name, skipped.get(name))
    assert "skipped" in p.stdout and "epoch 0:" in p.stdout

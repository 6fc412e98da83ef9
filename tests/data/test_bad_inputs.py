"""The bad-input corpus through a real training step, on both loaders: the job completes and
every file left out is in RUN/skipped.csv with its reason."""

import csv
import shutil

import pytest

from ..conftest import EASY, run_cli
from ..corpus import as_root, make_corpus


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


def test_a_file_that_goes_bad_after_the_scan_reaches_the_skip_list(tiny_data, tmp_path, monkeypatch, capsys):
    """The DataBlock loader reads files during training: one truncated after the scan is skipped
    there, then listed in skipped.csv and at the end of the run, never dropped without a word."""
    import csv
    import shutil

    from app.model.weights import Weights
    from app.training import train as train_mod
    from app.training.presets import resolve

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    victim = sorted((data / "train").rglob("*.JPEG"))[0]
    real_build = train_mod.build

    def build_then_break(*a, **k):  # after the scan and the loaders, before the first batch
        victim.write_bytes(victim.read_bytes()[:300])
        return real_build(*a, **k)

    monkeypatch.setattr(train_mod, "build", build_then_break)
    cfg = resolve("fit-one-cycle", "none", "none", data=data, loader="datablock", size=64, bs=8, epochs=1, workers=0)
    run = train_mod.train(cfg, out=str(tmp_path / "run"), weights=Weights("none"),
                          finish=train_mod.Finish(figures=False))
    with open(run / "skipped.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["path"], r["reason"]) for r in rows] == [(str(victim), "truncated file")]
    out = capsys.readouterr().out
    assert "could not be read during training" in out and f"{victim}: truncated file" in out

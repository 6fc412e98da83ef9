"""The training callbacks: a checkpoint that cannot be written (a real full disk, a small tmpfs)
ends the run with one line saying so, and config.json no longer says `running`; HistoryCSV's
columns: a new history gets elapsed_s, and a history written before that column existed keeps its
own columns when its run is resumed (every row as wide as the header, which the report and the
figures read by name)."""

import csv
import json
import shlex
import time
from types import SimpleNamespace

from app.training.callbacks import HistoryCSV

from ..conftest import assert_one_line_error
from ..mounts import run_mounted, tmpfs


def test_a_checkpoint_on_a_full_disk_is_one_line_and_the_run_says_it_failed(tiny_data, tmp_path):
    disk, kept = tmp_path / "disk", tmp_path / "config.json"
    run = disk / "run"
    p = run_mounted(tmpfs(disk, "8m"), "fit-one-cycle", "--data", tiny_data, "--epochs", 2, "--size", 64, "--bs", 8,
                    "--out", run, "--no-evaluate",
                    after=f"cp {shlex.quote(str(run / 'config.json'))} {shlex.quote(str(kept))}")
    assert_one_line_error(p, 5, "no space left", "checkpoint")
    assert "unexpected pos" not in p.stderr
    status = json.loads(kept.read_text())["status"]
    assert status.startswith("failed") and "no space left" in status, status

NAMES = ["epoch", "train_loss", "valid_loss", "accuracy", "f1_score", "time"]


def _one_epoch(path, epoch: int, started: float) -> list[list[str]]:
    cb = HistoryCSV(path, started=started)
    cb.learn = SimpleNamespace(recorder=SimpleNamespace(metric_names=NAMES), logger=lambda *a: None, cur_size=64,
                               epoch=epoch)
    cb.before_fit()
    cb._write_line([epoch, 0.9, 0.8, 0.7, 0.6, "00:01"])
    cb.after_fit()
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_a_new_history_has_the_seconds_since_the_fit_began(tmp_path):
    rows = _one_epoch(tmp_path / "history.csv", 0, time.time() - 12.5)
    assert rows[0] == NAMES + ["elapsed_s", "phase", "size"]
    row = dict(zip(rows[0], rows[1]))
    assert 12.5 <= float(row["elapsed_s"]) < 14 and row["time"] == "00:01" and row["size"] == "64"


def test_an_old_history_keeps_its_columns_when_resumed(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text(",".join(NAMES + ["phase", "size"]) + "\n0,1.0,1.0,0.5,0.5,00:01,one-cycle,64\n")
    rows = _one_epoch(path, 1, time.time() - 3)
    assert rows[0] == NAMES + ["phase", "size"] and len(rows) == 3
    assert all(len(r) == len(rows[0]) for r in rows) and rows[2][0] == "1" and rows[2][-2:] == ["one-cycle", "64"]

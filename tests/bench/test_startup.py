"""bench --scan's first-batch arm: README command 1's `train` in a new process, stopped at its first
batch, on a cold cache and then warm, with what config.json says of each phase."""

import json

import pytest

from app.bench import startup
from app.training.budget import SPOT_TOLERANCE

from ..conftest import need_shared


def test_the_first_batch_arm_stops_train_there_and_the_warm_run_recalls_the_speeds(small_data_72, tmp_path, monkeypatch):
    need_shared()
    monkeypatch.setattr(startup, "FIRST_BATCH_RUNS", ("cold", "warm"))
    lines = []
    got = startup.first_batch(small_data_72, tmp_path, lines.append, minutes=1.0)
    cold, warm = got["runs"]
    assert [r["cache"] for r in got["runs"]] == ["cold", "warm"] and len(lines) == 2
    assert cold["speeds_source"]["source"] == "measured"
    spot = warm["speeds_source"]  # the warm run's spot check decides, on what it saw (a parallel test loads the host)
    assert spot["tolerance"] == SPOT_TOLERANCE
    agrees = abs(spot["ratio"] - 1) <= SPOT_TOLERANCE
    assert spot["source"] == ("remembered" if agrees else "measured: the spot check disagreed with the remembered rates")
    assert spot["spot_img_s"] > 0 and spot["remembered_img_s"] == pytest.approx(cold_rate(tmp_path), abs=0.1)
    for r in (cold, warm):
        assert list(r["phases_s"])[-2:] == ["planned", "first_batch"] and r["first_batch_s"] == r["phases_s"]["first_batch"]
        assert r["exit"] != 0  # stopped by Ctrl-C at its first batch, not run to its end
    cfg = json.loads((tmp_path / "run1" / "config.json").read_text(encoding="utf-8"))
    assert cfg["speeds_source"] == spot
    assert len((tmp_path / "run1" / "history.csv").read_text().strip().splitlines()) <= 2  # at most one epoch


def cold_rate(tmp_path) -> float:
    """The training rate at the final size that the cold run measured, from its own config.json."""
    cfg = json.loads((tmp_path / "run0" / "config.json").read_text(encoding="utf-8"))
    return cfg["plan"]["speeds"]["train"][str(cfg["config"]["size"])]

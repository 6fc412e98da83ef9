"""bench --scan's first-batch arm: README command 1's `train` in a new process, stopped at its first
batch, on a cold cache and then warm, with what config.json says of each phase."""

import json

from app.bench import startup

from ..conftest import need_shared


def test_the_first_batch_arm_stops_train_there_and_the_warm_run_recalls_the_speeds(small_data_72, tmp_path, monkeypatch):
    need_shared()
    monkeypatch.setattr(startup, "FIRST_BATCH_RUNS", ("cold", "warm"))
    lines = []
    got = startup.first_batch(small_data_72, tmp_path, lines.append, minutes=1.0)
    cold, warm = got["runs"]
    assert [r["cache"] for r in got["runs"]] == ["cold", "warm"] and len(lines) == 2
    assert cold["speeds_source"]["source"] == "measured" and warm["speeds_source"]["source"] == "remembered"
    for r in (cold, warm):
        assert list(r["phases_s"])[-2:] == ["planned", "first_batch"] and r["first_batch_s"] == r["phases_s"]["first_batch"]
        assert r["exit"] != 0  # stopped by Ctrl-C at its first batch, not run to its end
    cfg = json.loads((tmp_path / "run1" / "config.json").read_text(encoding="utf-8"))
    assert cfg["speeds_source"]["source"] == "remembered" and cfg["speeds_source"]["spot_img_s"] > 0
    assert len((tmp_path / "run1" / "history.csv").read_text().strip().splitlines()) <= 2  # at most one epoch

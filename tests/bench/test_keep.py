"""The keep-time bench's one arm as it runs for real: `train --time` in a new process while the
bench's own busy loop takes a core, and the numbers it reports from outside and from config.json."""

import psutil
import pytest

from app.bench import keep

from ..conftest import need_shared


def test_a_loaded_arm_runs_train_as_a_user_does_and_reports_its_budget(small_data_72, tmp_path, monkeypatch):
    need_shared()
    data = small_data_72
    monkeypatch.setattr(keep, "LOAD_AT", 0.05)  # the load from 3 s on, for 10 s
    monkeypatch.setattr(keep, "LOAD_S", 10.0)
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    a = keep._arm(data, 1.0, tmp_path / "arm", "cpu", load=True)
    assert a["budget_s"] == 60 and a["wall_s"] > 0 and a["fraction"] == pytest.approx(a["wall_s"] / 60, abs=1e-3)
    assert a["over_s"] == round(max(0.0, a["wall_s"] - 60), 1) and a["recorded_wall_s"] <= a["wall_s"]
    start, end = a["load_window_s"]
    assert 2.5 <= start <= 10 and end == round(start + 10, 1)
    assert a["load_cpu_s"] is not None and 0 < a["load_cpu_s"] <= 10.5  # what the busy loop took (a core, when idle)
    assert a["epochs"] == len(a["epochs_planned_vs_actual"]) >= 2 and a["first_plan_epochs"] >= 2
    assert a["time_line"].startswith("time: took") and 0 <= a["accuracy"] <= 1
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= before  # nothing left running

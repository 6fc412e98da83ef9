"""What runs after a fit: the export goes with its run, so two runs whose folders share a name (or a
`train` after `rm -rf runs`, which numbers runs anew) both export, and a resumed run whose exports
exist is refused before it trains, not after."""

import json
import re
from pathlib import Path

from ..conftest import assert_one_line_error, run_cli

ARGS = ["--epochs", 1, "--size", 64, "--bs", 8, "--no-evaluate", "--export"]


def test_two_runs_with_one_folder_name_both_export_inside_their_run(tiny_data, tmp_path):
    runs, pkls = [tmp_path / "a" / "run", tmp_path / "b" / "run"], []
    for run in runs:
        p = run_cli("fit-one-cycle", "--data", tiny_data, *ARGS, "--out", run)
        assert p.returncode == 0, p.stderr  # the second run too, after all its training
        pkls.append(Path(re.search(r"learner pickle: (\S+)", p.stdout)[1]))
    assert pkls == [run / "export" / "run.pkl" for run in runs]
    assert all(p.is_file() and (p.with_suffix("") / "model.onnx").is_file() for p in pkls)
    history = (runs[0] / "history.csv").read_text()
    p = run_cli("fit-one-cycle", "--resume", runs[0], "--export")
    assert_one_line_error(p, 5, "already exists", str(runs[0] / "export"))
    assert (runs[0] / "history.csv").read_text() == history  # refused before any training
    assert json.loads((runs[0] / "config.json").read_text())["status"] == "finished"

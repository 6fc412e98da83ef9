"""Files read with torch.load(weights_only=True) that hold a pickle which would run code: refused in
one line, exit 4, and no code runs (wherever a checkpoint or weights file is read)."""

import json
import os
import shutil

import pytest
import torch

from ..conftest import assert_one_line_error, run_cli


class RunsCode:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture()
def evil_run(fitted, tmp_path):
    run = shutil.copytree(fitted[0], tmp_path / "run", ignore=shutil.ignore_patterns("*.pth"))
    marker = tmp_path / "code-ran"
    ckpt = {"model": {}, "epoch": 0, "payload": RunsCode(marker)}
    torch.save(ckpt, run / "models" / "last.pth")
    cfg = json.loads((run / "config.json").read_text())
    cfg["status"] = "interrupted"
    (run / "config.json").write_text(json.dumps(cfg))
    return run, marker


def test_a_checkpoint_that_would_run_code_is_refused(evil_run):
    run, marker = evil_run
    for args in (["fit-one-cycle", "--resume", run], ["evaluate", run], ["export", run]):
        p = run_cli(*args)
        assert_one_line_error(p, 4, "last.pth", "refused")
        assert "weights_only=False" not in p.stderr
    assert not marker.exists()


def test_weights_that_would_run_code_are_refused(evil_run, tiny_data):
    run, marker = evil_run
    p = run_cli("fine-tune", "--data", tiny_data, "--weights", run / "models" / "last.pth", "--epochs", 1)
    assert_one_line_error(p, 4, "refused")
    assert not marker.exists()

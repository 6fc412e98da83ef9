"""The training callbacks' failure paths: a checkpoint that cannot be written (a real full disk, a
small tmpfs) ends the run with one line saying so, and config.json no longer says `running`."""

import json
import shlex

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

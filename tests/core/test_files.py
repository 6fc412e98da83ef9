"""Output locations a command cannot write: a read-only runs/ or --out, an --out that is a
dangling symlink. One line and exit 5 each, before any training, never exit 1."""

from ..conftest import assert_one_line_error, run_cli
from ..mounts import read_only, run_mounted


def test_a_read_only_runs_folder_is_one_line(tiny_data, tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    p = run_mounted(read_only(runs), "fit-one-cycle", "--data", tiny_data, "--epochs", 1, "--size", 64,
                    env={"APP_RUNS_DIR": str(runs)})
    assert_one_line_error(p, 5, "read-only", str(runs))


def test_an_out_in_a_read_only_folder_is_one_line(tiny_data, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    p = run_mounted(read_only(ro), "lr-find", "--data", tiny_data, "--out", ro / "run")
    assert_one_line_error(p, 5, "read-only", str(ro / "run"))


def test_an_out_that_is_a_dangling_symlink_is_one_line(tiny_data, tmp_path):
    link = tmp_path / "run"
    link.symlink_to(tmp_path / "nowhere")
    p = run_cli("fit-one-cycle", "--data", tiny_data, "--epochs", 1, "--out", link)
    assert_one_line_error(p, 5, "symlink", str(link))
    assert not (tmp_path / "nowhere").exists()

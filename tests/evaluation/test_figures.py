"""Figures drawn from a dataset whose class names are matplotlib mathtext (`$...$` with an unknown
macro): training ends with every figure and the report, names drawn as typed."""

import shutil

from ..conftest import EASY, assert_png, run_cli


def test_a_class_named_like_mathtext_ends_training_with_every_figure(tiny_data, tmp_path):
    data = shutil.copytree(tiny_data, tmp_path / "data")
    odd = r"price $\nosuchmacro$"
    for split in ("train", "val"):
        (data / split / EASY[0]).rename(data / split / odd)
    run = tmp_path / "run"
    p = run_cli("fit-one-cycle", "--data", data, "--epochs", 1, "--size", 64, "--bs", 8, "--out", run)
    assert p.returncode == 0, p.stderr[-2000:]
    figures = sorted(f.name for f in (run / "figures").iterdir())
    assert len(figures) == 11, figures  # with the reliability diagram and the top losses' Grad-CAM
    for f in (run / "figures").iterdir():
        assert_png(f, min_side=100)
    assert (run / "report.html").is_file() and odd in (run / "report.html").read_text()

"""`data DIR`: class folders and paths shown as typed, whatever rich markup they look like."""

import shutil

from ..conftest import EASY, run_cli


def test_markup_in_class_folders_and_the_root_is_shown_as_typed(tiny_data, tmp_path):
    root = tmp_path / "[" / "x]" / "data"  # "[/x]" in the root's path
    shutil.copytree(tiny_data, root)
    names = ["[reverse]loud", "[link=mailto:a@b.c]tench"]
    for split in ("train", "val"):
        for old, new in zip(EASY, names):
            (root / split / old).rename(root / split / new)
    (root / "train" / names[0] / "[bold]not an image.jpg").write_text("text")
    p = run_cli("data", root)
    assert p.returncode == 0, p.stderr
    for typed in (*names, str(root), "[bold]not an image.jpg"):
        assert typed in p.stdout, (typed, p.stdout)

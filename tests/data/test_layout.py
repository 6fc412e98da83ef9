"""Layouts, detected in one place: split folders (val, valid, validation, an optional test), a flat
folder of class folders with a drawn stratified split, stray folders, ambiguous readings, and
every layout problem as one line with exit 3."""

import shutil
from collections import Counter
from pathlib import Path

import pytest

from app.core.errors import DataError
from app.data.layout import detect
from app.data.scan import scan

from ..conftest import EASY, assert_one_line_error, run_cli


def flat_copy(split_root: Path, dst: Path) -> Path:
    """ROOT/<class>/ from a train/ + val/ dataset: what most people have."""
    for split in ("train", "val"):
        for c in (split_root / split).iterdir():
            (dst / c.name).mkdir(parents=True, exist_ok=True)
            for f in c.iterdir():
                shutil.copy(f, dst / c.name / f"{split}_{f.name}")
    return dst


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("val_name", ["val", "valid", "validation"])
def test_split_folders_under_any_of_the_usual_names(tiny_data, tmp_path, val_name):
    root = tmp_path / "d"
    shutil.copytree(tiny_data, root)
    (root / "val").rename(root / val_name)
    ds = scan(root)
    assert ds.counts()["val"] == [4] * 4 and ds.counts()["train"] == [8] * 4
    assert ds.layout.summary() == f"layout: split folders train/ + {val_name}/ (4 classes)"
    assert f"layout: split folders train/ + {val_name}/ (4 classes)" in run_cli("data", root, check=True).stdout


def test_a_test_folder_is_its_own_split_and_train_plus_test_draws_the_validation(tiny_data, tmp_path):
    root = tmp_path / "d"
    shutil.copytree(tiny_data, root)
    shutil.copytree(root / "val", root / "test")
    ds = scan(root)
    assert ds.counts()["test"] == [4] * 4 and ds.counts()["val"] == [4] * 4
    shutil.rmtree(root / "val")
    ds = scan(root)
    assert ds.counts()["train"] == [6] * 4 and ds.counts()["val"] == [2] * 4  # round(0.2 x 8) drawn per class
    assert "no val/, valid/ or validation/ folder: the validation split is drawn from train/" in ds.layout.summary()


def test_class_folders_get_a_stratified_recorded_split_and_nothing_is_copied(tiny_data, tmp_path):
    root = flat_copy(tiny_data, tmp_path / "flat")  # 12 images per class
    before = listing(root)
    ds = scan(root, valid_pct=0.25, split_seed=3)
    assert ds.layout.kind == "class-folders" and ds.classes == sorted(EASY)
    assert ds.counts()["val"] == [3] * 4 and ds.counts()["train"] == [9] * 4  # 25 % of each class
    val = {it.path for it in ds.split("val")}
    assert {it.path for it in scan(root, valid_pct=0.25, split_seed=3).split("val")} == val  # the same files
    assert {it.path for it in scan(root, valid_pct=0.25, split_seed=4).split("val")} != val  # the seed draws
    assert listing(root) == before  # nothing copied or moved
    assert ds.layout.spec() == {"kind": "class-folders", "split_dirs": {}, "labels": "", "valid_pct": 0.25,
                                "split_seed": 3}
    extra = root / EASY[0] / "added.jpg"
    shutil.copy(next(iter(val)), extra)  # one more file: the others keep their split
    again = {it.path for it in scan(root, valid_pct=0.25, split_seed=3).split("val")} - {extra}
    assert len(val - again) <= 1
    line = run_cli("data", root, "--valid-pct", 0.25, "--split-seed", 3, check=True).stdout.splitlines()[0]
    assert line.startswith("layout: class folders (4 classes)") and "25% (--valid-pct), seed 3" in line


def test_stray_folders_are_never_classes_and_never_read(tiny_data, tmp_path):
    root = flat_copy(tiny_data, tmp_path / "flat")
    for stray in (".ipynb_checkpoints", "__MACOSX", "@eaDir", ".git"):
        (root / stray).mkdir()
        shutil.copy(next((root / EASY[0]).iterdir()), root / stray / "x.jpg")
    inner = root / EASY[1] / ".ipynb_checkpoints"
    inner.mkdir()
    shutil.copy(next((root / EASY[0]).iterdir()), inner / "copy.jpg")
    ds = scan(root)
    assert ds.classes == sorted(EASY)
    assert sum(ds.counts()["train"]) + sum(ds.counts()["val"]) == 48  # the copies inside stray folders: not read
    assert {Path(p).name for p, _ in ds.ignored} == {".ipynb_checkpoints", "__MACOSX", "@eaDir", ".git"}
    assert str(inner) in dict(ds.ignored)
    out = run_cli("data", root, check=True).stdout
    assert "ignored 5 folder(s)" in out and "__MACOSX: macOS archive metadata" in out


def test_two_readings_say_which_was_taken(tiny_data, tmp_path):
    root = tmp_path / "d"
    shutil.copytree(tiny_data, root)
    shutil.copytree(root / "train" / EASY[0], root / "dogs")  # a loose class folder beside train/
    shutil.copytree(root / "val", root / "valid")
    lay = detect(root)
    assert lay.kind == "split-folders" and lay.split_dirs == {"train": "train", "val": "val"}
    assert "valid/ not used: val/ is the val split" in lay.summary()
    assert "folder(s) beside the split folders not read: dogs" in lay.summary()


@pytest.mark.parametrize("breakage, words", [
    ("missing", ["not found"]),
    ("single_class", ["at least 2", "accepted layouts"]),
    ("val_only_class", ["val but not in train/", "n09999999"]),
    ("val_without_train", ["no train/ folder", "accepted layouts"]),
])
def test_layout_problems_are_one_clear_line(tiny_data, tmp_path, breakage, words):
    root = tmp_path / "d"
    shutil.copytree(tiny_data, root)
    if breakage == "missing":
        root = tmp_path / "nowhere"
    elif breakage == "single_class":
        for c in EASY[1:]:
            shutil.rmtree(root / "train" / c)
            shutil.rmtree(root / "val" / c)
    elif breakage == "val_only_class":
        (root / "val" / "n09999999").mkdir()
        shutil.copy(next((root / "val" / EASY[0]).iterdir()), root / "val" / "n09999999" / "x.jpg")
    elif breakage == "val_without_train":
        shutil.rmtree(root / "train")
    before = listing(root) if root.exists() else []
    with pytest.raises(DataError) as e:
        scan(root)
    assert all(w in str(e.value) for w in words) and "\n" not in str(e.value)
    assert_one_line_error(run_cli("data", root), 3, *words)
    assert (listing(root) if root.exists() else []) == before  # nothing on disk touched


def test_a_split_that_draws_no_validation_image_is_one_line(tmp_path, tiny_data):
    root = tmp_path / "one_each"
    for c in EASY:
        (root / c).mkdir(parents=True)
        shutil.copy(next((tiny_data / "train" / c).iterdir()), root / c / "only.jpg")
    assert_one_line_error(run_cli("data", root), 3, "no validation images")


def test_every_file_of_a_class_folder_is_counted_once():
    """The per-class draw keeps each file in exactly one split."""
    import tempfile

    from PIL import Image

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        for c, n in (("a", 7), ("b", 3), ("c", 10)):
            (root / c).mkdir()
            for i in range(n):
                Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(root / c / f"{i}.png")
        ds = scan(root, valid_pct=0.3)
        got = Counter((it.label, it.split) for it in ds.items)
        assert got == {(0, "train"): 5, (0, "val"): 2, (1, "train"): 2, (1, "val"): 1, (2, "train"): 7, (2, "val"): 3}

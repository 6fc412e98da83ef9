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

from ..conftest import EASY, assert_one_line_error, cli


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


@pytest.mark.parametrize("names, line", [
    (("train", "val"), "split folders train/ + val/ (4 classes)"),
    (("train", "valid"), "split folders train/ + valid/ as val (4 classes)"),
    (("train", "validation"), "split folders train/ + validation/ as val (4 classes)"),
    (("Train", "Val"), "split folders Train/ as train + Val/ as val (4 classes)"),
    (("TRAINING", "dev"), "split folders TRAINING/ as train + dev/ as val (4 classes)"),
])
def test_split_folders_under_any_of_the_usual_names_in_any_case(tiny_data, tmp_path, names, line):
    root = tmp_path / "d"
    shutil.copytree(tiny_data, root)
    (root / "train").rename(root / f"{names[0]}.tmp")  # two steps: a case-insensitive disk
    (root / f"{names[0]}.tmp").rename(root / names[0])
    (root / "val").rename(root / names[1])
    ds = scan(root)
    assert ds.counts()["val"] == [4] * 4 and ds.counts()["train"] == [8] * 4
    assert ds.layout.summary() == f"layout: {line}"
    assert cli("data", root, "--no-verify").stdout.startswith(f"layout: {line}")


def test_kaggles_training_and_testing_folders_are_the_train_and_test_splits(tiny_data, tmp_path):
    root = tmp_path / "d"
    shutil.copytree(tiny_data / "train", root / "training")
    shutil.copytree(tiny_data / "val", root / "testing")
    ds = scan(root)
    assert ds.classes == sorted(EASY) and sum(ds.counts()["test"]) == 16
    assert sum(ds.counts()["train"]) + sum(ds.counts()["val"]) == 32  # the validation split drawn from training/
    assert ds.layout.summary().startswith("layout: split folders training/ as train + testing/ as test (4 classes)")


def test_a_test_folder_beside_class_folders_is_the_test_split_or_left_unread_never_a_class(tiny_data, tmp_path):
    root = flat_copy(tiny_data, tmp_path / "flat")
    shutil.copytree(tiny_data / "val", root / "Test")  # labelled: class folders inside
    ds = scan(root)
    assert ds.classes == sorted(EASY) and ds.counts()["test"] == [4] * 4
    assert "test split: Test/ as test" in ds.layout.summary()
    shutil.rmtree(root / "Test")
    (root / "test").mkdir()  # Kaggle's unlabelled test images
    for f in list((tiny_data / "val" / EASY[0]).iterdir())[:3]:
        shutil.copy(f, root / "test" / f.name)
    ds = scan(root)
    assert ds.classes == sorted(EASY) and not any(ds.counts()["test"])
    assert "unlabelled images are not read" in dict(ds.ignored)[str(root / "test")]
    assert "--layout class-folders reads it as a class" in cli("data", root, "--no-verify").stdout


def test_layout_class_folders_reads_split_names_as_classes_and_split_folders_insists(tiny_data, tmp_path):
    root = tmp_path / "d"
    shutil.copytree(tiny_data, root)
    (root / "train").rename(root / "Train")
    (root / "val").rename(root / "Val")
    ds = scan(root, layout="class-folders")
    assert ds.classes == ["Train", "Val"] and ds.layout.kind == "class-folders"
    assert cli("data", root, "--no-verify", "--layout", "class-folders").stdout.startswith(
        "layout: class folders (2 classes)")
    flat = flat_copy(tiny_data, tmp_path / "flat")
    assert_one_line_error(cli("data", flat, "--layout", "split-folders"), 3, "--layout split-folders",
                          "no train/ or val/ folder")
    assert_one_line_error(cli("data", flat, "--layout", "sideways"), 3, "--layout 'sideways'", "class-folders")


def test_nfc_and_nfd_spellings_of_one_folder_name_are_one_class(tiny_data, tmp_path):
    import unicodedata

    root = tmp_path / "d"
    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    for name, c in ((nfc, EASY[0]), (nfd, EASY[0]), ("tea", EASY[1])):
        shutil.copytree(tiny_data / "train" / c, root / name, dirs_exist_ok=True)
    for f in (root / nfd).iterdir():
        f.rename(f.with_name("nfd_" + f.name))
    ds = scan(root)
    assert ds.classes == [nfc, "tea"] and sum(ds.counts()["train"]) + sum(ds.counts()["val"]) == 24
    assert "are one class" in ds.layout.summary()


def test_a_test_folder_is_its_own_split_and_train_plus_test_draws_the_validation(tiny_data, tmp_path):
    root = tmp_path / "d"
    shutil.copytree(tiny_data, root)
    shutil.copytree(root / "val", root / "test")
    ds = scan(root)
    assert ds.counts()["test"] == [4] * 4 and ds.counts()["val"] == [4] * 4
    shutil.rmtree(root / "val")
    ds = scan(root)
    assert sum(ds.counts()["train"]) + sum(ds.counts()["val"]) == 32 and sum(ds.counts()["val"]) > 0
    assert all(ds.counts()["train"])
    assert "no val/, valid/ or validation/ folder: the validation split is drawn from train/" in ds.layout.summary()


def test_class_folders_get_a_recorded_split_and_nothing_is_copied(tiny_data, tmp_path):
    root = flat_copy(tiny_data, tmp_path / "flat")  # 12 images per class
    before = listing(root)
    ds = scan(root, valid_pct=0.25, split_seed=3)
    assert ds.layout.kind == "class-folders" and ds.classes == sorted(EASY)
    assert sum(ds.counts()["val"]) + sum(ds.counts()["train"]) == 48 and all(ds.counts()["train"])
    val = {it.path for it in ds.split("val")}
    assert {it.path for it in scan(root, valid_pct=0.25, split_seed=3).split("val")} == val  # the same files
    assert {it.path for it in scan(root, valid_pct=0.25, split_seed=4).split("val")} != val  # the seed draws
    assert listing(root) == before  # nothing copied or moved
    assert ds.layout.spec() == {"kind": "class-folders", "split_dirs": {}, "labels": "", "reading": "auto",
                                "valid_pct": 0.25, "split_seed": 3, "split_rule": 2}
    line = cli("data", root, "--valid-pct", 0.25, "--split-seed", 3, "--no-verify").stdout.splitlines()[0]
    assert line.startswith("layout: class folders (4 classes)") and "25% (--valid-pct), seed 3" in line


def _names(root: Path, n: int, cls: str, stem: str = "f") -> None:
    (root / cls).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / cls / f"{stem}{i}.jpg").write_bytes(b"not decoded here")


def _splits(root: Path, **kw) -> dict[str, str]:
    """file name within its class -> split: the draw as every command reads it (no decoding)."""
    from app.data.layout import assign_splits, files
    from app.data.scan import walk_images

    lay = detect(root, **kw)
    return {p.name: s for p, s, _ in assign_splits(lay, files(lay, walk_images, []))}


def test_adding_removing_or_relabelling_files_never_moves_another_between_train_and_val(tmp_path):
    root = tmp_path / "d"
    _names(root, 30, "a")
    _names(root, 30, "b", stem="g")
    before = _splits(root)
    for i in range(100):  # 100 files added one at a time: no earlier file changes split
        (root / "a" / f"new{i}.jpg").write_bytes(b"x")
        now = _splits(root)
        assert {k: now[k] for k in before} == before, f"adding new{i}.jpg moved a file"
        before = now
    for i in range(20):  # 20 removed
        (root / "a" / f"f{i}.jpg").unlink()
        now = _splits(root)
        assert now == {k: v for k, v in before.items() if k != f"f{i}.jpg"}
        before = now
    for i in range(10):  # 10 relabelled (moved to the other class folder): they and the others stay put
        (root / "b" / f"g{i}.jpg").rename(root / "a" / f"g{i}.jpg")
        assert _splits(root) == before
    # the rule is each file's own: the share drawn is valid_pct within sampling error (independent of order)
    big = tmp_path / "big"
    _names(big, 2000, "a")
    _names(big, 10, "b")
    share = sum(s == "val" for k, s in _splits(big).items() if k.startswith("f")) / 2010
    assert abs(share - 0.2) < 3 * (0.2 * 0.8 / 2010) ** 0.5


@pytest.mark.parametrize("pct, n", [(0.75, 2), (0.9, 3), (0.9, 4), (0.85, 2)])
def test_a_high_valid_pct_never_takes_a_small_class_wholly_into_validation(tmp_path, pct, n):
    root = tmp_path / "d"
    _names(root, n, "small")
    _names(root, 40, "big")
    splits = _splits(root, valid_pct=pct)
    assert sum(splits[f"f{i}.jpg"] == "train" for i in range(n)) >= 1


def test_a_small_class_drawn_at_a_high_pct_keeps_a_training_image_and_no_false_warning(tiny_data, tmp_path):
    root = flat_copy(tiny_data, tmp_path / "flat")
    for f in sorted((root / EASY[0]).iterdir())[2:]:
        f.unlink()  # two images left
    ds = scan(root, valid_pct=0.9)
    assert ds.counts()["train"][0] >= 1 and ds.classes == sorted(EASY)
    assert not any("no readable training image" in w for w in ds.warnings)


def test_runs_made_before_the_per_file_rule_keep_their_split(tiny_data, tmp_path):
    """split_rule 1 (a run's config.json without split_rule): round(pct x n) per class by hash order."""
    from app.core.config import TrainConfig

    root = flat_copy(tiny_data, tmp_path / "flat")
    assert TrainConfig.from_dict({"data": str(root)}).split_rule == 1 and TrainConfig().split_rule == 2
    ds = scan(root, valid_pct=0.25, split_seed=3, split_rule=1)
    assert ds.counts()["val"] == [3] * 4 and ds.counts()["train"] == [9] * 4


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
    out = cli("data", root, check=True).stdout
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
    assert_one_line_error(cli("data", root), 3, *words)
    assert (listing(root) if root.exists() else []) == before  # nothing on disk touched


def test_a_split_that_draws_no_validation_image_is_one_line(tmp_path, tiny_data):
    root = tmp_path / "one_each"
    for c in EASY:
        (root / c).mkdir(parents=True)
        shutil.copy(next((tiny_data / "train" / c).iterdir()), root / c / "only.jpg")
    assert_one_line_error(cli("data", root), 3, "no validation images")


def test_every_file_of_a_class_folder_is_counted_once():
    """The draw keeps each file in exactly one split."""
    import tempfile

    from PIL import Image

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        for c, n in (("a", 7), ("b", 3), ("c", 10)):
            (root / c).mkdir()
            for i in range(n):
                Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(root / c / f"{i}.png")
        ds = scan(root, valid_pct=0.3)
        assert len(ds.items) == 20 and len({it.path for it in ds.items}) == 20
        got = Counter(it.label for it in ds.items)
        assert got == {0: 7, 1: 3, 2: 10} and all(ds.counts()["train"])

"""The dataset: layout checks (one line, exit 3), scanning with skip lists, human names, subsets."""

import shutil

import pytest

from app.core.errors import DataError
from app.data.classes import IMAGENETTE, human_name
from app.data.layout import check_layout
from app.data.scan import scan
from app.data.subset import make_subset

from ..conftest import EASY, ROOT, SHARED, assert_one_line_error, need_shared, run_cli
from ..corpus import as_root, make_corpus


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_human_names_for_imagenette_and_folder_names_otherwise():
    assert human_name("n01440764") == "tench" and human_name("n03888257") == "parachute"
    assert human_name("my_cats") == "my_cats"
    assert len(IMAGENETTE) == 10


def test_scan_counts_and_class_order(small_data):
    ds = scan(small_data)
    assert ds.classes == sorted(EASY)
    assert ds.names == ["tench", "church", "golf ball", "parachute"]
    assert ds.counts() == {"train": [40] * 4, "val": [15] * 4}
    assert not ds.skipped


@pytest.mark.parametrize("breakage, words", [
    ("missing", ["not found"]),
    ("no_val", ["no 'val/' folder"]),
    ("single_class", ["at least 2"]),
    ("empty_class", ["empty class folder"]),
    ("val_only_class", ["in", "val but not in train", "n09999999"]),
])
def test_layout_problems_are_one_clear_line(tiny_data, tmp_path, breakage, words):
    root = _copy(tiny_data, tmp_path / "d")
    if breakage == "missing":
        root = tmp_path / "nowhere"
    elif breakage == "no_val":
        shutil.rmtree(root / "val")
    elif breakage == "single_class":
        for c in EASY[1:]:
            shutil.rmtree(root / "train" / c)
            shutil.rmtree(root / "val" / c, ignore_errors=True)
    elif breakage == "empty_class":
        for f in (root / "train" / EASY[0]).iterdir():
            f.unlink()
    elif breakage == "val_only_class":
        (root / "val" / "n09999999").mkdir()
        shutil.copy(next((root / "val" / EASY[0]).iterdir()), root / "val" / "n09999999" / "x.jpg")
    with pytest.raises(DataError) as e:
        scan(root)
    for w in words:
        assert w in str(e.value)
    assert "\n" not in str(e.value)
    p = run_cli("data", root)
    assert_one_line_error(p, 3, *words)


def test_bad_files_are_listed_and_skipped_never_fatal(tiny_data, tmp_path):
    root = _copy(tiny_data, tmp_path / "d")
    corpus = make_corpus(root / "train" / EASY[0], next((root / "train" / EASY[1]).iterdir()))
    (root / "train" / EASY[0] / "notes.txt").write_text("hello")
    (root / "train" / EASY[2] / "again").symlink_to("..")  # a directory loop
    ds = scan(root)
    skipped = dict(ds.skipped)
    for name, (path, expected) in corpus.items():
        if expected == "ok":
            assert str(path) not in skipped, f"{name} skipped: {skipped.get(str(path))}"
        elif name != "unreadable.jpg":  # as root it is readable
            assert expected in skipped[str(path)], (name, skipped.get(str(path)))
    assert "not an image file name" in skipped[str(root / "train" / EASY[0] / "notes.txt")]
    assert any("symlink loop" in why for p, why in ds.skipped if p.endswith("again"))
    ok = sum(1 for _, e in corpus.values() if e == "ok") + as_root()  # root can read 'unreadable.jpg'
    assert ds.counts()["train"][0] == 8 + ok
    p = run_cli("data", root)
    assert p.returncode == 0, p.stderr
    assert "truncated file" in p.stdout and "too large: 12000x12000" in p.stdout and "Traceback" not in p.stderr


def test_verdicts_are_remembered_and_renewed_when_a_file_changes(tiny_data, tmp_path):
    root = _copy(tiny_data, tmp_path / "d")
    assert not scan(root).skipped
    victim = next((root / "val" / EASY[3]).iterdir())
    victim.write_bytes(victim.read_bytes()[:200])  # now truncated: size and mtime change
    ds = scan(root)
    assert [p for p, _ in ds.skipped] == [str(victim)]


def test_data_command_prints_classes_and_counts(small_data):
    p = run_cli("data", small_data, check=True)
    assert "tench" in p.stdout and "golf ball" in p.stdout and "n03445777" in p.stdout
    import re

    rows = {m[1]: (int(m[2]), int(m[3])) for m in re.finditer(r"│\s*(tench|church|golf ball|parachute|total)\s*│\s*(\d+)\s*│\s*(\d+)", p.stdout)}
    assert rows == {"tench": (40, 15), "church": (40, 15), "golf ball": (40, 15), "parachute": (40, 15),
                    "total": (160, 60)}, p.stdout
    assert "problems found: none" in p.stdout


def test_make_subset_is_balanced_and_never_overwrites(tmp_path):
    need_shared()
    d = make_subset(SHARED, tmp_path / "s", 3, 2, classes=EASY[:2])
    assert check_layout(d) == {"train": sorted(EASY[:2]), "val": sorted(EASY[:2])}
    assert scan(d).counts() == {"train": [3, 3], "val": [2, 2]}
    with pytest.raises(DataError, match="already exists"):
        make_subset(SHARED, d, 1, 1)


def test_data_scripts_run_as_documented(tiny_data, tmp_path):
    """data_scripts/: verify (the `data` command), subset, build_cache, and get_imagenette where the
    archive is already there (no download), each as a user runs it; errors exit with the app's codes."""
    import subprocess
    import sys

    def script(name, *args):
        return subprocess.run([sys.executable, str(ROOT / "data_scripts" / name), *map(str, args)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)

    p = script("verify.py", tiny_data)
    assert p.returncode == 0 and "problems found: none" in p.stdout, p.stderr
    assert script("verify.py", tmp_path / "nope").returncode == 3
    p = script("subset.py", tiny_data, tmp_path / "sub", "--train", 2, "--val", 1, "--classes", EASY[0], EASY[1])
    assert p.returncode == 0 and scan(tmp_path / "sub").counts() == {"train": [2, 2], "val": [1, 1]}
    p = script("subset.py", tiny_data, tmp_path / "sub", "--train", 1)
    assert p.returncode == 3 and "already exists" in p.stderr and "Traceback" not in p.stderr
    p = script("build_cache.py", tmp_path / "sub", "--size", 64)
    assert p.returncode == 0 and "6 images at 80px, 0 skipped" in p.stdout, p.stderr
    have = tmp_path / "dl" / "imagenette2-320" / "train"
    have.mkdir(parents=True)
    p = script("get_imagenette.py", tmp_path / "dl")
    assert p.returncode == 0 and p.stdout.strip() == str(have.parent)

"""The scan: counts and class order, skip lists, classes left out or without validation images,
imbalance, remembered verdicts, subsets and the data scripts. Layouts: test_layout.py."""

import shutil

import pytest

from app.core.errors import DataError
from app.data.scan import scan
from app.data.subset import make_subset

from ..conftest import EASY, ROOT, SHARED, need_shared, run_cli
from ..corpus import as_root, make_corpus


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst




def test_scan_counts_and_class_order(small_data):
    ds = scan(small_data)
    assert ds.classes == sorted(EASY)
    assert ds.names == ["tench", "church", "golf ball", "parachute"]
    assert ds.counts() == {"train": [40] * 4, "val": [15] * 4, "test": [0] * 4}
    assert not ds.skipped


def test_a_class_without_training_images_is_left_out_with_a_warning_not_fatal(tiny_data, tmp_path):
    """Today's fatal 'empty class folder' is one warning: the class is left out, its validation
    images listed as skipped; a class with no validation image stays, with a warning."""
    root = _copy(tiny_data, tmp_path / "d")
    for f in (root / "train" / EASY[0]).iterdir():
        f.unlink()
    for f in (root / "val" / EASY[1]).iterdir():
        f.unlink()
    ds = scan(root)
    assert ds.classes == sorted(EASY[1:])
    assert any(f"class '{EASY[0]}' has no readable training image" in w for w in ds.warnings)
    assert any("no validation images for 1 class(es): " + EASY[1] in w for w in ds.warnings)
    assert sum("has no training image" in why for _, why in ds.skipped) == 4  # its 4 val images, listed
    p = run_cli("data", root, check=True)
    assert p.stdout.count("warning:") == 2 and "problems found: none" not in p.stdout


def test_imbalance_is_shown_and_warned_above_five(tiny_data, tmp_path):
    root = _copy(tiny_data, tmp_path / "d")
    for f in sorted((root / "train" / EASY[0]).iterdir())[1:]:
        f.unlink()  # 1 image against 8
    ds = scan(root)
    assert ds.imbalance() == 8.0
    p = run_cli("data", root, check=True)
    assert "largest training class has 8.0x the images of the smallest (8 vs 1) (over 5" in p.stdout
    assert "imbalanced" in p.stdout and "--balance" in p.stdout
    assert "1.0x" in run_cli("data", tiny_data, check=True).stdout


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


def test_verdicts_are_remembered_and_renewed_when_a_file_changes(tiny_data, tmp_path, monkeypatch):
    """A second scan decodes nothing (the verdicts are remembered by size and mtime); a changed file
    is decoded again, and only it."""
    from app.data import scan as scan_mod

    root = _copy(tiny_data, tmp_path / "d")
    decoded = []
    real = scan_mod._check_one
    monkeypatch.setattr(scan_mod, "_check_one", lambda p: decoded.append(p) or real(p))
    assert not scan(root).skipped and len(decoded) == 48
    decoded.clear()
    assert not scan(root).skipped and decoded == []  # remembered
    victim = next((root / "val" / EASY[3]).iterdir())
    victim.write_bytes(victim.read_bytes()[:200])  # now truncated: size and mtime change
    ds = scan(root)
    assert [p for p, _ in ds.skipped] == [str(victim)] and decoded == [str(victim)]


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
    assert sorted(p.name for p in (d / "train").iterdir()) == sorted(p.name for p in (d / "val").iterdir()) == sorted(EASY[:2])
    assert scan(d).counts() == {"train": [3, 3], "val": [2, 2], "test": [0, 0]}
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
    assert p.returncode == 0 and scan(tmp_path / "sub").counts() == {"train": [2, 2], "val": [1, 1], "test": [0, 0]}
    p = script("subset.py", tiny_data, tmp_path / "sub", "--train", 1)
    assert p.returncode == 3 and "already exists" in p.stderr and "Traceback" not in p.stderr
    p = script("build_cache.py", tmp_path / "sub", "--size", 64)
    assert p.returncode == 0 and "6 images at 80px, 0 skipped" in p.stdout, p.stderr
    have = tmp_path / "dl" / "imagenette2-320" / "train"
    have.mkdir(parents=True)
    p = script("get_imagenette.py", tmp_path / "dl")
    assert p.returncode == 0 and p.stdout.strip() == str(have.parent)


def test_make_subset_keeps_same_named_files_apart_and_never_writes_into_the_originals(tiny_data, tmp_path):
    """Claim 1 (issue 28): cat/2019/IMG_1.jpg and cat/2020/IMG_1.jpg went to one name, the second
    copied *through the hard link* into the first original (4 of 8 originals changed)."""
    import hashlib

    src = tmp_path / "src"
    for split in ("train", "val"):
        for c in EASY[:2]:
            for year, f in zip(("2019", "2020"), sorted((tiny_data / split / c).iterdir())):
                (src / split / c / year).mkdir(parents=True, exist_ok=True)
                shutil.copy(f, src / split / c / year / "IMG_1.jpg")
    digest = lambda root: {p.relative_to(root): hashlib.sha1(p.read_bytes()).hexdigest()  # noqa: E731
                           for p in root.rglob("*") if p.is_file()}
    before = digest(src)
    for link in (True, False):
        dst = make_subset(src, tmp_path / f"dst-{link}", 5, 5, link=link)
        assert digest(src) == before
        got = digest(dst)
        assert len(got) == 8 and sorted(got.values()) == sorted(before.values())

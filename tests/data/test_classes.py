"""Class names: words.txt (as Tiny ImageNet ships it), classes.csv, Imagenette's built-in names,
unique names, and the names shown by `data`."""

import shutil

from app.data.classes import IMAGENETTE, class_names, human_name
from app.data.scan import scan

from ..conftest import EASY, ROOT, run_cli

TINY = ROOT.parent / "shared" / "data" / "tiny-imagenet-200-64"


def test_human_names_for_imagenette_and_folder_names_otherwise():
    assert human_name("n01440764") == "tench" and human_name("n03888257") == "parachute"
    assert human_name("my_cats") == "my_cats"
    assert len(IMAGENETTE) == 10


def test_words_txt_gives_the_first_name_before_a_comma(tmp_path):
    (tmp_path / "words.txt").write_text("n01443537\tgoldfish, Carassius auratus\nn99\tcrane\nn98\tcrane, bird\n")
    names, source = class_names(tmp_path, ["n01443537", "n98", "n99", "other"])
    assert source == "words.txt"
    assert names == ["goldfish", "crane (n98)", "crane (n99)", "other"]  # unique: the vocab


def test_classes_csv_names_folders(tmp_path):
    (tmp_path / "classes.csv").write_text("folder,name\ncats,Cat\ndogs,Dog\n")
    assert class_names(tmp_path, ["cats", "dogs", "n01440764"]) == (["Cat", "Dog", "tench"], "classes.csv")


def test_the_real_tiny_imagenet_names_are_read_and_shown(tiny_data, tmp_path):
    words = (TINY / "words.txt").read_text().splitlines()
    first = {ln.split("\t")[0]: ln.split("\t")[1].split(",")[0] for ln in words}
    assert first["n01443537"] == "goldfish"
    root = tmp_path / "d"
    shutil.copytree(tiny_data, root)
    (root / "classes.csv").write_text("folder,name\n" + "".join(f"{c},kind {i}\n" for i, c in enumerate(EASY)))
    ds = scan(root)
    assert ds.names == [f"kind {EASY.index(c)}" for c in sorted(EASY)] and ds.names_from == "classes.csv"
    out = run_cli("data", root, "--no-verify", check=True).stdout
    assert "kind 0" in out and f"class names from {root / 'classes.csv'}" in out

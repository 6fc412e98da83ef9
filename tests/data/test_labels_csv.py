"""The CSV layout (--labels): fastai's fname,label[,is_valid]; without is_valid the recorded drawn
split; bad CSVs (missing files, unknown columns, duplicates, multi-label) named by row, exit 3."""

import csv
import shutil
from pathlib import Path

import pytest

from app.core.errors import DataError
from app.data.scan import scan

from ..conftest import EASY, assert_one_line_error, cli


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def rows_of(root: Path, valid: bool = True) -> list[list]:
    out = []
    for split in ("train", "val"):
        for c in EASY:
            for f in sorted((root / split / c).iterdir()):
                label = f"class {EASY.index(c)}"  # labels are not folder names
                out.append([f.relative_to(root).as_posix(), label] + ([split == "val"] if valid else []))
    return out


def test_a_csv_with_is_valid_gives_classes_and_splits(tiny_data, tmp_path):
    f = write_csv(tmp_path / "labels.csv", ["fname", "label", "is_valid"], rows_of(tiny_data))
    ds = scan(tiny_data, labels=f)
    assert ds.layout.kind == "csv" and ds.classes == [f"class {i}" for i in range(4)]
    assert ds.counts()["train"] == [8] * 4 and ds.counts()["val"] == [4] * 4
    line = cli("data", tiny_data, "--labels", f, check=True).stdout.splitlines()[0]
    assert line == f"layout: labels from {f.resolve()} (4 classes, 48 rows)"


def test_without_is_valid_the_split_is_drawn_and_recorded(tiny_data, tmp_path):
    f = write_csv(tmp_path / "labels.csv", ["fname", "label"], rows_of(tiny_data, valid=False))
    ds = scan(tiny_data, labels=f, valid_pct=0.25)
    assert 0 < sum(ds.counts()["val"]) < 24 and all(ds.counts()["train"])  # each file drawn on its own
    rows = rows_of(tiny_data, valid=False)
    rows[0][1], rows[20][1] = rows[20][1], rows[0][1]  # two relabels: no file changes split
    again = scan(tiny_data, labels=write_csv(tmp_path / "relabelled.csv", ["fname", "label"], rows), valid_pct=0.25)
    assert {i.path for i in again.split("val")} == {i.path for i in ds.split("val")}
    assert ds.layout.spec()["valid_pct"] == 0.25 and ds.layout.spec()["split_seed"] == 42
    assert {i.path for i in scan(tiny_data, labels=f, valid_pct=0.25).split("val")} == {i.path for i in ds.split("val")}


@pytest.mark.parametrize("case, words", [
    ("missing", ["a file that does not exist", "2 row(s): 2, 3"]),
    ("no_label_column", ["no label column", "other columns are ignored"]),
    ("duplicate", ["a file listed twice", "1 row(s): 4"]),
    ("bad_is_valid", ["row 2", "is_valid 'maybe'"]),
])
def test_bad_csvs_name_the_rows_and_how_many(tiny_data, tmp_path, case, words):
    rows = rows_of(tiny_data)
    header = ["fname", "label", "is_valid"]
    if case == "missing":
        rows[0][0], rows[1][0] = "train/nope1.jpg", "gone/nope2.jpg"
    elif case == "no_label_column":
        header = ["fname", "weight", "is_valid"]
    elif case == "duplicate":
        rows[2][0] = "./" + rows[0][0]
    elif case == "bad_is_valid":
        rows[0][2] = "maybe"
    f = write_csv(tmp_path / "labels.csv", header, rows)
    with pytest.raises(DataError) as e:
        scan(tiny_data, labels=f)
    assert all(w in str(e.value) for w in words), str(e.value)
    assert_one_line_error(cli("data", tiny_data, "--labels", f), 3, *words)


def test_labels_joined_by_spaces_are_one_class_with_a_note(tiny_data, tmp_path):
    """{sea, lion, sea lion}: "sea lion" is a class of its own (a space is part of a name)."""
    rows = rows_of(tiny_data)
    for r, lab in zip(rows, ["sea", "lion", "sea lion"] * 16):
        r[1] = lab
    ds = scan(tiny_data, labels=write_csv(tmp_path / "sea.csv", ["fname", "label", "is_valid"], rows))
    assert ds.classes == ["lion", "sea", "sea lion"]
    assert "'sea lion' are other labels joined by spaces; each is read as one class" in ds.layout.summary()


def test_what_spreadsheets_and_other_systems_write_is_read_as_meant(tiny_data, tmp_path):
    """Numeric labels in number order, extra columns ignored (as fastai's from_csv does), is_valid as
    pandas writes it, Windows backslashes, NFD names."""
    import unicodedata

    rows = rows_of(tiny_data)
    for i, r in enumerate(rows):
        r[1] = ["2", "10", "1", "3"][i % 4]
        r[2] = "1.0" if r[2] else "0.0"
        r.append(f"note {i}")
    rows[0][0] = rows[0][0].replace("/", "\\")
    f = write_csv(tmp_path / "labels.csv", ["fname", "label", "is_valid", "comment"], rows)
    ds = scan(tiny_data, labels=f)
    assert ds.classes == ["1", "2", "3", "10"]
    assert sum(ds.counts()["val"]) == 16 and sum(ds.counts()["train"]) == 32
    line = cli("data", tiny_data, "--labels", f, "--no-verify", check=True).stdout.splitlines()[0]
    assert "column(s) ignored: comment" in line and "1 fname(s) read with backslashes" in line
    nfd = tmp_path / unicodedata.normalize("NFD", "é")
    shutil.copytree(tiny_data, nfd)
    spelt = write_csv(tmp_path / "nfc.csv", ["fname", "label"],
                      [[unicodedata.normalize("NFC", "../é/") + r[0], r[1]] for r in rows_of(tiny_data, False)])
    with pytest.raises(DataError, match="outside ROOT"):  # .. stays refused
        scan(tiny_data, labels=spelt)
    inner = nfd / unicodedata.normalize("NFD", "ünder")
    (nfd / "train").rename(inner)
    nfc_rows = [[unicodedata.normalize("NFC", "ünder") + r[0][len("train"):], r[1]]
                for r in rows_of(tiny_data, False) if r[0].startswith("train")]
    ds = scan(nfd, labels=write_csv(tmp_path / "nfc2.csv", ["fname", "label"], nfc_rows))
    assert len(ds.items) == 32


def test_one_file_under_two_spellings_is_a_duplicate(tiny_data, tmp_path):
    """On macOS A.jpg and a.jpg are one file; here a hard link under the other case stands in for it."""
    import os

    root = tmp_path / "d"
    shutil.copytree(tiny_data, root)
    rows = rows_of(root)
    first = root / rows[0][0]
    os.link(first, first.with_name(first.name.upper()))
    rows.append([Path(rows[0][0]).with_name(first.name.upper()).as_posix(), "class 3", False])
    with pytest.raises(DataError, match="a file listed twice"):
        scan(root, labels=write_csv(tmp_path / "dup.csv", ["fname", "label", "is_valid"], rows))

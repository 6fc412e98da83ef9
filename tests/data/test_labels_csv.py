"""The CSV layout (--labels): fastai's fname,label[,is_valid]; without is_valid the recorded drawn
split; bad CSVs (missing files, unknown columns, duplicates, multi-label) named by row, exit 3."""

import csv
from pathlib import Path

import pytest

from app.core.errors import DataError
from app.data.scan import scan

from ..conftest import EASY, assert_one_line_error, run_cli


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
    line = run_cli("data", tiny_data, "--labels", f, check=True).stdout.splitlines()[0]
    assert line == f"layout: labels from {f.resolve()} (4 classes, 48 rows)"


def test_without_is_valid_the_split_is_drawn_and_recorded(tiny_data, tmp_path):
    f = write_csv(tmp_path / "labels.csv", ["fname", "label"], rows_of(tiny_data, valid=False))
    ds = scan(tiny_data, labels=f, valid_pct=0.25)
    assert ds.counts()["val"] == [3] * 4  # 25 % of 12 per class
    assert ds.layout.spec()["valid_pct"] == 0.25 and ds.layout.spec()["split_seed"] == 42
    assert {i.path for i in scan(tiny_data, labels=f, valid_pct=0.25).split("val")} == {i.path for i in ds.split("val")}


@pytest.mark.parametrize("case, words", [
    ("missing", ["a file that does not exist", "2 row(s): 2, 3"]),
    ("unknown_column", ["unknown: weight"]),
    ("duplicate", ["a file listed twice", "1 row(s): 4"]),
    ("multi_label", ["more than one label per image", "multi-label is not supported", "1 row(s): 2"]),
    ("bad_is_valid", ["row 2", "is_valid 'maybe'"]),
])
def test_bad_csvs_name_the_rows_and_how_many(tiny_data, tmp_path, case, words):
    rows = rows_of(tiny_data)
    header = ["fname", "label", "is_valid"]
    if case == "missing":
        rows[0][0], rows[1][0] = "train/nope1.jpg", "gone/nope2.jpg"
    elif case == "unknown_column":
        header = ["fname", "label", "weight"]
    elif case == "duplicate":
        rows[2][0] = "./" + rows[0][0]
    elif case == "multi_label":
        rows[0][1] = "class 0;class 1"
    elif case == "bad_is_valid":
        rows[0][2] = "maybe"
    f = write_csv(tmp_path / "labels.csv", header, rows)
    with pytest.raises(DataError) as e:
        scan(tiny_data, labels=f)
    assert all(w in str(e.value) for w in words), str(e.value)
    assert_one_line_error(run_cli("data", tiny_data, "--labels", f), 3, *words)


def test_space_separated_multi_labels_are_refused_but_spaces_in_names_are_fine(tiny_data, tmp_path):
    rows = rows_of(tiny_data)
    f = write_csv(tmp_path / "ok.csv", ["fname", "label", "is_valid"], rows)  # "class 0" has a space: one label
    assert len(scan(tiny_data, labels=f).classes) == 4
    rows[5][1] = "class 0 class 1"  # two labels that exist, space-joined
    with pytest.raises(DataError, match="multi-label"):
        scan(tiny_data, labels=write_csv(tmp_path / "bad.csv", ["fname", "label", "is_valid"], rows))

"""Multi-label CSVs (issue 33): `;` or `|` between labels found in the file and said in the layout
line, a space only when --label-delim says so, images with no label allowed, a label empty after
splitting named by row, every label keeping a training image, label counts and co-occurrence in
`data`, and --balance refused in one line."""

import csv
from pathlib import Path

import pytest

from app.core.errors import DataError
from app.data.scan import scan

from ..conftest import EASY, assert_one_line_error, cli


def multi_csv(root: Path, path: Path, delim: str = ";", none_every: int = 5, valid: bool = True) -> Path:
    """Every tiny_data image with its class and, for every third one, the class after it; every
    `none_every`-th with no label at all."""
    rows = []
    for split in ("train", "val"):
        for c in EASY:
            for i, f in enumerate(sorted((root / split / c).iterdir())):
                labels = [f"class {EASY.index(c)}"] + ([f"class {(EASY.index(c) + 1) % 4}"] if i % 3 == 0 else [])
                cell = "" if none_every and i % none_every == 4 else delim.join(labels)
                rows.append([f.relative_to(root).as_posix(), cell] + ([split == "val"] if valid else []))
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["fname", "labels"] + (["is_valid"] if valid else []))
        w.writerows(rows)
    return path


def test_a_semicolon_csv_is_multi_label_with_its_counts_and_images_without_a_label(tiny_data, tmp_path):
    ds = scan(tiny_data, labels=multi_csv(tiny_data, tmp_path / "m.csv"), verify=False)
    assert ds.multi and ds.classes == [f"class {i}" for i in range(4)]
    line = ds.layout.summary()
    assert "4 labels, multi-label: ';' between labels, 48 rows" in line and "with no label" in line
    # by hand: per class 8 train + 4 val files; its own label on all but the none ones, the next class's on i % 3 == 0
    none = sum(1 for it in ds.items if not it.labels)
    assert none == 4 * (1 + 0)  # i == 4 in each class's train files (8 of them); val has 4 files (i < 4)
    own = {k: sum(1 for it in ds.split("train") if k in it.labels) for k in range(4)}
    assert all(v == 7 + 3 for v in own.values())  # 7 own (one is none) + 3 from the class before (i = 0, 3, 6)
    out = cli("data", tiny_data, "--labels", tmp_path / "m.csv", "--no-verify", check=True).stdout
    assert "labels per image: 0: 4, 1: " in out and "seen together most (images):" in out


@pytest.mark.parametrize("delim, given", [("|", None), (" ", " ")])
def test_a_pipe_is_found_and_a_space_only_when_given(tiny_data, tmp_path, delim, given):
    f = multi_csv(tiny_data, tmp_path / "m.csv", delim=delim, none_every=0 if delim == " " else 5)
    if delim == " ":  # "class 0 class 1" on spaces: labels "class", "0", "1", ... only when asked
        assert not scan(tiny_data, labels=f, verify=False).multi
    ds = scan(tiny_data, labels=f, verify=False, label_delim=given)
    assert ds.multi and ds.layout.delim == delim


def test_bad_multi_label_input_is_one_line(tiny_data, tmp_path):
    f = multi_csv(tiny_data, tmp_path / "m.csv")
    text = f.read_text(encoding="utf-8").splitlines()
    text[3] = text[3].replace("class 0", "class 0;;class 2", 1)
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(text) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="empty after splitting"):
        scan(tiny_data, labels=bad, verify=False)
    assert_one_line_error(cli("data", tiny_data, "--labels", bad), 3, "a label that is empty after splitting",
                          "1 row(s): 4")
    mixed = tmp_path / "mixed.csv"
    mixed.write_text(f.read_text(encoding="utf-8").replace("class 0;class 1", "class 0|class 1", 1), encoding="utf-8")
    assert_one_line_error(cli("data", tiny_data, "--labels", mixed), 3, "both ';' and '|'")
    assert_one_line_error(cli("data", tiny_data, "--label-delim", ";"), 3, "--label-delim is for a multi-label")
    p = cli("fit-one-cycle", "--data", tiny_data, "--labels", f, "--balance", "weights", "--epochs", 1, "--size", 64)
    assert_one_line_error(p, 2, "--balance weights is not defined for multi-label")


def test_a_drawn_multi_label_split_keeps_every_label_in_training(tiny_data, tmp_path):
    f = multi_csv(tiny_data, tmp_path / "m.csv", valid=False, none_every=0)
    ds = scan(tiny_data, labels=f, verify=False, valid_pct=0.85)
    assert all(ds.counts()["train"]) and sum(ds.counts()["val"]) > 0
    again = scan(tiny_data, labels=f, verify=False, valid_pct=0.85)
    assert {i.path for i in again.split("val")} == {i.path for i in ds.split("val")}

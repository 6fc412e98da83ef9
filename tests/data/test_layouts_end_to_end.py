"""Each layout end to end as a user runs it, on a small real subset with same-named files in nested
folders (2019/IMG_1.jpg beside 2020/IMG_1.jpg) and split folders as people spell them: data ->
train (1 epoch) -> evaluate -> export -> predict -> review --apply / --undo -> bench --transfer's
draw, the validation files identical in every command (and after --resume), and every original
file's bytes unchanged but for the ones review moved, which --undo puts back byte for byte
(issue 28). The commands run in this process (tests/conftest.py `cli`)."""

import csv
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from ..conftest import EASY, cli
from .test_labels_csv import write_csv

FIT = ["--epochs", 1, "--seed", 3]


def val_files(run) -> set[str]:
    with open(run / "top_losses.csv", newline="", encoding="utf-8") as f:
        return {r["path"] for r in csv.DictReader(f)}


def digest(root: Path) -> dict[str, str]:
    """Every file under `root` (quarantine/ aside) and its bytes' hash."""
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and "quarantine" not in p.relative_to(root).parts}


def nested(files: list[Path], dst: Path, prefix: str = "") -> list[Path]:
    """The files as dst/2019/IMG_<i>.jpg and dst/2020/IMG_<i>.jpg: the same names in two folders."""
    out = []
    for i, f in enumerate(sorted(files)):
        p = dst / ("2019" if i % 2 else "2020") / f"{prefix}IMG_{i // 2}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, p)
        out.append(p)
    return out


def make(layout: str, tiny_data: Path, tmp_path: Path) -> tuple[Path, list]:
    """(data root, extra CLI args) of the tiny dataset in `layout`, every class's files nested."""
    root = tmp_path / layout
    if layout == "split-folders":  # Train/ and Validation/, as a user typed them
        for split, name in (("train", "Train"), ("val", "Validation")):
            for c in EASY:
                nested(list((tiny_data / split / c).iterdir()), root / name / c)
        return root, []
    if layout == "class-folders":
        for c in EASY:
            nested([*(tiny_data / "train" / c).iterdir(), *(tiny_data / "val" / c).iterdir()], root / c)
        return root, []
    rows = []
    for split in ("train", "val"):
        for c in EASY:
            for p in nested(list((tiny_data / split / c).iterdir()), root / "images" / c[-3:], prefix=split[0]):
                rows.append([p.relative_to(root).as_posix(), f"class {EASY.index(c)}", split == "val"])
    return root, ["--labels", write_csv(root / "labels.csv", ["fname", "label", "is_valid"], rows)]


@pytest.mark.slow
@pytest.mark.parametrize("layout, line", [
    ("split-folders", "layout: split folders Train/ as train + Validation/ as val (4 classes)"),
    ("class-folders", "layout: class folders (4 classes)"),
    ("csv", "layout: labels from"),
])
def test_every_command_on_every_layout_leaves_the_originals_as_they_were(tiny_data, tmp_path, layout, line):
    root, extra = make(layout, tiny_data, tmp_path)
    before = digest(root)
    assert cli("data", root, *extra, check=True).stdout.startswith(line)
    run = tmp_path / "run"
    assert line in cli("train", "--data", root, *extra, *FIT, "--out", run, check=True).stdout
    cfg = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert cfg["layout"]["kind"] == layout
    trained = val_files(run)
    assert len(trained) == (16 if layout != "class-folders" else len(trained)) and trained
    assert all(Path(p).is_file() for p in trained)
    cli("evaluate", run, check=True, cwd=tmp_path)  # another folder: every stored path is absolute
    assert val_files(run) == trained
    pkl = tmp_path / "m" / "model.pkl"
    cli("export", run, "--to", pkl, check=True)
    meta = json.loads((pkl.with_suffix("") / "model.json").read_text(encoding="utf-8"))
    assert meta["data_fingerprint"] == cfg["data_fingerprint"] and meta["input"]["resize_method"] == "crop"
    out = tmp_path / "p.csv"
    cli("predict", pkl.with_suffix(""), root, "--csv", out, check=True)  # the whole dataset folder
    assert out.read_text(encoding="utf-8").count("\n") == 49
    assert digest(root) == before
    if extra:
        _a_copied_csv_dataset_is_read_with_its_own_csv(run, root, tmp_path)
    _review_round_trip(run, root, sorted(trained), cfg, before)
    from app.bench.transfer import draw
    from app.data.subset import make_subset

    if extra:  # bench --transfer draws folder layouts; a CSV dataset is drawn by make_subset itself
        make_subset(root, tmp_path / "drawn", 2, -1, labels=extra[1], link=True)
    else:
        draw(root, tmp_path / "drawn", 2, seed=0)
    assert digest(root) == before
    if layout == "class-folders":  # a drawn split: --resume reads the same validation files
        again = tmp_path / "again"
        cli("fit-one-cycle", "--data", root, "--epochs", 1, "--size", 64, "--out", again, check=True)
        cli("fit-one-cycle", "--resume", again, check=True)
        assert val_files(again) == trained


def _review_round_trip(run: Path, root: Path, val: list[str], cfg: dict, before: dict) -> None:
    """One removal and one relabel applied: only those two files (and a CSV's rows) change; --undo
    puts every byte back."""
    names = cfg["classes"]
    victim, moved = Path(val[0]), Path(val[-1])
    actual = next(n for n in names if n != names[0])
    (run / "decisions.csv").write_text("path,decision,new_class,actual,predicted,loss,time\n"
                                       f"{victim},remove,,a,b,1.0,t\n{moved},relabel,{names[0]},{actual},b,1.0,t\n",
                                       encoding="utf-8")
    cli("review", run, "--apply", "--yes", check=True)
    after = digest(root)
    changed = {k for k in before if after.get(k) != before[k]} | (set(after) - set(before))
    csv_layout = cfg["config"]["labels"]
    assert victim.relative_to(root).as_posix() in changed and not victim.exists()
    allowed = {victim.relative_to(root).as_posix(), moved.relative_to(root).as_posix()} | {csv_layout}
    assert changed <= allowed | {p for p in after if p not in before}, changed
    assert all(p.endswith(".jpg") for p in set(after) - set(before))  # only the relabelled file, at its new place
    cli("review", run, "--undo", "--yes", check=True)
    assert digest(root) == before


def _a_copied_csv_dataset_is_read_with_its_own_csv(run: Path, root: Path, tmp_path: Path) -> None:
    """Claim 4: the run stored the CSV's absolute path, so `evaluate --data COPY` read the original's
    labels for the copy's files. Stored relative to the root, the copy's own CSV is read."""
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    with open(copy / "labels.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    first_val = next(r for r in rows[1:] if r[2] == "True")
    first_val[1] = "class 3" if first_val[1] != "class 3" else "class 2"
    write_csv(copy / "labels.csv", rows[0], rows[1:])
    cli("evaluate", run, "--data", copy, check=True)
    with open(run / "top_losses.csv", newline="", encoding="utf-8") as f:
        got = {r["path"]: r["actual"] for r in csv.DictReader(f)}
    assert all(p.startswith(str(copy)) for p in got)
    names = json.loads((run / "config.json").read_text(encoding="utf-8"))["classes"]
    assert got[str(copy / first_val[0])] == names[int(first_val[1][-1])]
    cli("evaluate", run, check=True)  # back to the run's own dataset for what follows

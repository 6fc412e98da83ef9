"""Each layout end to end as a user runs it, on a small real subset: data -> fit-one-cycle (1 epoch)
-> evaluate -> export -> predict, the validation files identical in every command (and after
--resume); review --apply / --undo on the class-folder layout."""

import csv
import json
import shutil

import pytest

from ..conftest import EASY, ROOT, run_cli
from .test_labels_csv import rows_of, write_csv
from .test_layout import flat_copy

FIT = ["--epochs", 1, "--size", 64, "--bs", 16, "--seed", 3]


def val_files(run) -> set[str]:
    with open(run / "top_losses.csv", newline="") as f:
        return {r["path"] for r in csv.DictReader(f)}


def make(layout: str, tiny_data, tmp_path):
    """(data root, extra CLI args) of the tiny dataset in `layout`."""
    if layout == "valid":
        root = tmp_path / "valid"
        shutil.copytree(tiny_data, root)
        (root / "val").rename(root / "valid")
        return root, []
    if layout == "flat":
        return flat_copy(tiny_data, tmp_path / "flat"), []
    f = write_csv(tmp_path / "labels.csv", ["fname", "label"], rows_of(tiny_data, valid=False))
    return tiny_data, ["--labels", f]


@pytest.mark.slow
@pytest.mark.parametrize("layout, line", [
    ("valid", "layout: split folders train/ + valid/ (4 classes)"),
    ("flat", "layout: class folders (4 classes)"),
    ("csv", "layout: labels from"),
])
def test_each_layout_trains_evaluates_exports_and_predicts_on_the_same_split(tiny_data, tmp_path, layout, line):
    root, extra = make(layout, tiny_data, tmp_path)
    assert run_cli("data", root, *extra, check=True).stdout.startswith(line)
    run = tmp_path / "run"
    p = run_cli("fit-one-cycle", "--data", root, *extra, *FIT, "--out", run, check=True)
    assert line in p.stdout
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["layout"]["kind"] == {"valid": "split-folders", "flat": "class-folders", "csv": "csv"}[layout]
    trained = val_files(run)
    assert len(trained) == (16 if layout == "valid" else 8)  # 4 x 4, or round(20 % of 12) = 2 per class
    run_cli("evaluate", run, check=True, cwd=tmp_path, env={"PYTHONPATH": str(ROOT)})  # another folder: the path is absolute
    assert val_files(run) == trained
    pkl = tmp_path / "m" / "model.pkl"
    run_cli("export", run, "--to", pkl, check=True)
    meta = json.loads((pkl.with_suffix("") / "model.json").read_text())
    assert meta["data_fingerprint"] == cfg["data_fingerprint"] and meta["input"]["resize_method"] == "crop"
    out = tmp_path / "p.csv"
    run_cli("predict", pkl.with_suffix(""), sorted(trained)[0], "--csv", out, check=True)
    assert out.read_text().count("\n") == 2
    if layout == "flat":
        run_cli("fit-one-cycle", "--resume", run, check=True)
        assert val_files(run) == trained


@pytest.mark.slow
def test_review_apply_moves_a_relabelled_file_to_its_class_folder_in_the_flat_layout(tiny_data, tmp_path):
    root = flat_copy(tiny_data, tmp_path / "flat")
    run = tmp_path / "run"
    run_cli("fit-one-cycle", "--data", root, *FIT, "--out", run, check=True)
    victim = sorted(val_files(run))[0]
    names = json.loads((run / "config.json").read_text())["classes"]
    target = sorted(EASY)[(sorted(EASY).index(victim.split("/")[-2]) + 1) % 4]
    (run / "decisions.csv").write_text("path,decision,new_class,actual,predicted,loss,time\n"
                                       f"{victim},relabel,{names[sorted(EASY).index(target)]},a,b,1.0,t\n")
    run_cli("review", run, "--apply", "--yes", check=True)
    moved = root / target / victim.split("/")[-1]
    assert moved.is_file() and not (root / victim.split("/")[-2] / victim.split("/")[-1]).exists()
    assert "quarantine" not in json.loads((run / "config.json").read_text())["classes"]
    run_cli("review", run, "--undo", "--yes", check=True)
    assert not moved.exists() and (root / victim.split("/")[-2] / victim.split("/")[-1]).is_file()

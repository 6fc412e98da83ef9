"""audit: what it finds is compared with what was planted (changed labels, re-encoded copies, dark and
blank images), on real images (a planted copy of small_data) and on generated colours that a model
learns in seconds (where every wrong label is findable); class folders, a CSV and a run; the folds
kept; the dataset never touched; bad input one line with its exit code."""

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.cli import main
from app.evaluation.findings import read_findings

COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (50, 70, 210), "white": (235, 235, 235)}


def colour_set(root: Path, per_class: int = 16, wrong: int = 2, seed: int = 0) -> set[str]:
    """Class folders (root/<colour>/) of 64-px noisy pictures of one colour each; `wrong` pictures per
    class are of the next colour but filed here. Returns the misfiled ones (relative paths)."""
    rng = np.random.default_rng(seed)
    names, misfiled = list(COLOURS), set()
    for c, name in enumerate(names):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            true = names[(c + 1) % len(names)] if i < wrong else name
            a = np.clip(np.array(COLOURS[true]) + rng.normal(0, 12, (64, 64, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(root / name / f"{name}_{i:02d}.png")
            if i < wrong:
                misfiled.add(f"{name}/{name}_{i:02d}.png")
    return misfiled


def digest(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def rel(f, root):
    return Path(f).relative_to(root).as_posix()


def one_line(capsys, rc: int, code: int, *words):
    err = capsys.readouterr().err.strip()
    assert rc == code, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for w in words:
        assert w.lower() in err.lower(), err


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    """The colour set as class folders, audited as a bare dataset (the recipe `train` would use)."""
    root = tmp_path_factory.mktemp("colours") / "flat"
    misfiled = colour_set(root)
    before = digest(root)
    out = root.parent / "audit"
    assert main(["audit", str(root), "--folds", "2", "--epochs", "16", "--out", str(out)]) == 0
    return root, out, misfiled, before


def test_class_folders_every_misfiled_picture_is_found_with_its_true_colour(colours):
    root, out, misfiled, before = colours
    found = read_findings(out)["label_issue"]
    flagged = {rel(f.path, root): f for f in found}
    assert len(set(flagged) & misfiled) >= 6  # of the 8 misfiled pictures (training and validation ones)
    assert len(set(flagged) - misfiled) <= 1
    for r in set(flagged) & misfiled:
        true = list(COLOURS)[(list(COLOURS).index(r.split("/")[0]) + 1) % 4]
        assert flagged[r].given == r.split("/")[0] and flagged[r].suggested == true
    assert [f.score for f in found] == sorted(f.score for f in found)  # worst first
    assert digest(root) == before  # the dataset is only read


def test_the_folds_are_kept_runs_over_all_training_images(colours):
    root, out, _, _ = colours
    a = json.loads((out / "audit.json").read_text())
    runs = a["folds"]["runs"]
    assert [r["fold"] for r in runs] == [1, 2]
    held = []
    for r in runs:
        run = Path(r["run"])
        assert (run / "models" / "last.pth").is_file() and (run / "probs.npz").is_file()
        with open(r["csv"], newline="") as f:
            rows = list(csv.DictReader(f))
        held += [x["fname"] for x in rows if x["is_valid"] == "1"]
        assert len(rows) == sum(r2["held_out"] for r2 in runs)  # every training image, each fold
    assert len(held) == len(set(held)) == sum(r["held_out"] for r in runs)  # each held out exactly once
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["kind"] == "audit" and cfg["status"] == "finished" and cfg["classes"] == sorted(COLOURS)
    page = (out / "report.html").read_text()
    assert "Audit: labels, leakage, image quality" in page and "status finished" in page  # written after it ended


def test_a_labels_csv_with_wrong_labels_is_audited_from_the_csv(tmp_path):
    """The same pictures, all filed right, and a --labels CSV (with its own validation split) that gets
    some training labels wrong."""
    root = tmp_path / "csvset"
    colour_set(root, wrong=0, seed=1)
    rng = np.random.default_rng(4)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    val = {f for f in files if int(f[-6:-4]) >= 13}  # 3 of each colour's 16
    wrong = set(rng.choice(sorted(set(files) - val), 6, replace=False).tolist())
    names = list(COLOURS)
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["fname", "label", "is_valid"])
        for r in files:
            c = r.split("/")[0]
            w.writerow([r, names[(names.index(c) + 1) % 4] if r in wrong else c, int(r in val)])
    out = tmp_path / "audit"
    assert main(["audit", str(root), "--labels", str(tmp_path / "labels.csv"), "--folds", "2", "--epochs", "24",
                 "--out", str(out)]) == 0
    found = read_findings(out)["label_issue"]
    flagged = {rel(f.path, root) for f in found}
    assert len(flagged & wrong) >= 5 and len(flagged - wrong) <= 1, (sorted(flagged), sorted(wrong))  # of the 6
    assert {f.split for f in found if rel(f.path, root) in wrong} == {"train"}


def test_a_run_leakage_copies_and_low_quality_images_are_found(audited):
    audit, _, planted = audited
    root = planted["root"]
    found = read_findings(audit)
    leaks = {rel(f.path, root): rel(f.other, root) for f in found["leakage"]}
    assert leaks == {p["copy"]: p["original"] for p in planted["pairs"]}  # each copy with its own original
    assert all(f.score > 0.99 and f.other_split == "train" for f in found["leakage"])
    low = {rel(f.path, root): f.detail for f in found["low_quality"] if f.path.startswith(str(root / "quality"))}
    assert low.get("quality/dark.jpg") == "dark" and low.get("quality/blank.jpg") == "low_information"
    a = json.loads((audit / "audit.json").read_text())
    assert a["leakage"]["n_leaked"] == 3
    m = json.loads((audit / "metrics.json").read_text())
    assert m["n"] == 63 and "calibration" in m  # 60 validation images and the 3 copies, scored by the run's model
    assert all((audit / f.cam).is_file() for f in found["label_issue"][:5] + found["leakage"])


def test_bad_input_is_one_line_with_its_exit_code(fitted, tmp_path, capsys):
    run, _ = fitted
    no_model = tmp_path / "nomodel"
    no_model.mkdir()
    shutil.copy(run / "config.json", no_model / "config.json")
    one_line(capsys, main(["audit", str(no_model)]), 5, "no trained model")
    one_line(capsys, main(["audit", str(run), "--folds", "1"]), 2, "at least 2 folds")
    one_line(capsys, main(["audit", str(tmp_path / "nothing")]), 3, "no such run or dataset")
    for n, words in ((1, "has 1 training image"), (3, "no room for 4 folds")):
        root = tmp_path / f"few{n}"
        colour_set(root, per_class=8, wrong=0)
        for p in sorted((root / "red").iterdir())[n:]:
            p.unlink()
        one_line(capsys, main(["audit", str(root), "--folds", "4", "--out", str(tmp_path / f"a{n}")]), 3, words)
        assert not (tmp_path / f"a{n}").exists()  # refused before any folder was made


def test_a_budget_without_room_for_the_folds_is_one_line(fitted, tmp_path, capsys):
    run, _ = fitted
    rc = main(["audit", str(run), "--folds", "2", "--time", "0.3", "--out", str(tmp_path / "a")])
    one_line(capsys, rc, 2, "no room for 2 folds in --time 0.3", "or fewer --folds")

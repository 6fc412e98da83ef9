"""bench --audit's planted facts: the noisy labels CSV (5 % changed, recorded, a valid layout over the
source's own files), the re-encoded copies planted as validation images (nothing written into the
source), the scores against them, and the squares whose boxes Grad-CAM is judged by."""

import hashlib

import numpy as np
from PIL import Image

from app.bench.audit import make_squares, plant, prf, score_leakage


def _digest(root):
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_plant_changes_five_percent_of_training_labels_and_copies_into_validation(small_data, tmp_path):
    from app.data.scan import scan

    before = _digest(small_data)
    planted = plant(small_data, tmp_path / "planted", noise=0.05, copies=4, seed=3)
    assert _digest(small_data) == before  # the source is only read
    ds = scan(planted["root"], labels=planted["labels"])  # a valid --labels layout over the links
    assert len(ds.split("train")) == 160 and len(ds.split("val")) == 60 + 4
    assert len(planted["changed"]) == 8  # 5 % of 160
    truth = {it.path.relative_to(planted["root"]).as_posix(): ds.classes[it.label] for it in ds.split("train")}
    for rel in planted["changed"]:
        assert truth[rel] != rel.split("/")[1]  # the folder is the true class; the CSV says another
    assert sum(truth[r] != r.split("/")[1] for r in truth) == 8
    for p in planted["pairs"]:
        copy, orig = planted["root"] / p["copy"], small_data / p["original"]
        with Image.open(copy) as a, Image.open(orig) as b:
            assert a.format == "JPEG" and a.width < b.width and a.height < b.height  # resized, re-encoded
        assert copy.read_bytes() != orig.read_bytes()


def test_prf_and_leakage_scoring(tmp_path):
    assert prf({"a", "b", "c", "d"}, {"a", "b", "x"}) == {"flagged": 4, "true_positives": 2, "precision": 0.5,
                                                          "recall": 0.6667, "f1": 0.5714}
    assert prf(set(), {"a"})["f1"] == 0.0
    from app.evaluation.findings import Finding, write_findings

    root = tmp_path / "root"
    planted = {"root": root, "pairs": [{"copy": "copies/c0.jpg", "original": "train/a/0.jpg"},
                                       {"copy": "copies/c1.jpg", "original": "train/a/1.jpg"}]}
    write_findings(tmp_path, [
        Finding("leakage", "val", str(root / "copies/c0.jpg"), other=str(root / "train/a/0.jpg"), score=0.99),
        Finding("leakage", "val", str(root / "copies/c1.jpg"), other=str(root / "train/a/7.jpg"), score=0.98),
        Finding("leakage", "val", str(root / "val/a/5.jpg"), other=str(root / "train/a/5.jpg"), score=0.97)])
    (tmp_path / "audit.json").write_text("{}")
    s = score_leakage(tmp_path, planted)
    assert s["found"] == 1 and s["false_pairs"] == 2  # a copy paired with the wrong original is not found
    assert not s["targets"]["all_found"] and s["targets"]["at_most_5_false_pairs"]


def test_squares_are_where_their_boxes_say(tmp_path):
    boxes = make_squares(tmp_path / "sq", train=2, val=3, side=128, seed=1)
    assert len(boxes) == 12 and len(list((tmp_path / "sq" / "train").rglob("*.png"))) == 8
    colours = {"red": 0, "green": 1, "blue": 2, "yellow": None}
    for f, (top, left, bottom, right) in boxes.items():
        a = np.asarray(Image.open(f)).astype(float)
        inside = a[top:bottom, left:right].reshape(-1, 3)
        assert 25 <= bottom - top <= 32 and bottom - top == right - left
        assert inside.std(0).max() < 20 < a.reshape(-1, 3).std(0).min()  # the square is flat, the noise is not
        outside = np.ones(a.shape[:2], bool)
        outside[top:bottom, left:right] = False
        assert abs(a[outside].mean() - 128) < 45  # grey noise (with a colour cast) around the square
        c = colours[f.split("/")[-2]]
        if c is not None:
            assert inside.mean(0).argmax() == c

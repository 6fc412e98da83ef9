"""evaluate: scikit-learn metrics that agree with the per-image predictions, TTA, every figure."""

import csv
import json

import pytest
from PIL import Image

from app.runs import FIGURES

from .conftest import assert_one_line_error, assert_png, run_cli


@pytest.fixture(scope="module")
def evaluated(fitted):
    run, _ = fitted
    p = run_cli("evaluate", run, "--tta", check=True)
    return run, p


def test_metrics_agree_with_per_image_predictions(evaluated):
    from sklearn.metrics import f1_score, precision_score, recall_score

    run, p = evaluated
    m = json.loads((run / "metrics.json").read_text())
    with open(run / "top_losses.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == m["n"] == 60
    y = [r["actual"] for r in rows]
    yhat = [r["predicted"] for r in rows]
    assert m["accuracy"] == pytest.approx(sum(a == b for a, b in zip(y, yhat)) / len(y))
    labels = m["classes"]
    assert m["f1_macro"] == pytest.approx(f1_score(y, yhat, labels=labels, average="macro", zero_division=0))
    assert m["precision_macro"] == pytest.approx(precision_score(y, yhat, labels=labels, average="macro", zero_division=0))
    assert m["recall_macro"] == pytest.approx(recall_score(y, yhat, labels=labels, average="macro", zero_division=0))
    assert sum(sum(r) for r in m["confusion"]) == 60
    assert set(m["per_class"]) == set(labels) == {"tench", "church", "golf ball", "parachute"}
    losses = [float(r["loss"]) for r in rows]
    assert losses == sorted(losses, reverse=True)
    for a, b, n in m["most_confused"]:
        assert a in labels and b in labels and a != b and n >= 1
    assert 0 <= m["tta"]["accuracy"] <= 1
    assert "with TTA" in p.stdout


def test_every_figure_is_a_real_picture(evaluated):
    run, _ = evaluated
    for key, name in FIGURES.items():
        if key == "lr_find":
            continue  # only for runs that had one (tests/test_cli.py checks that one)
        assert_png(run / "figures" / name)
    with Image.open(run / "figures" / FIGURES["confusion"]) as im:
        assert im.size[0] > 1.5 * im.size[1]  # counts and row-normalised side by side
    summary = (run / "summary.txt").read_text()
    assert "Sequential" in summary and "Total params" in summary


def test_compare_runs_table(evaluated, tmp_path):
    run, _ = evaluated
    p = run_cli("compare", run, run, check=True)
    assert p.stdout.count(run.name) >= 2 and "accuracy" in p.stdout


def test_evaluating_without_a_model_or_data_is_one_line(fitted, tmp_path):
    import shutil

    run, _ = fitted
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(run / "config.json", bare / "config.json")
    assert_one_line_error(run_cli("evaluate", bare), 5, "no trained model")
    moved = tmp_path / "moved"
    shutil.copytree(run, moved)
    cfg = json.loads((moved / "config.json").read_text())
    cfg["config"]["data"] = str(tmp_path / "gone")
    (moved / "config.json").write_text(json.dumps(cfg))
    assert_one_line_error(run_cli("evaluate", moved), 3, "data folder is gone", "--data")

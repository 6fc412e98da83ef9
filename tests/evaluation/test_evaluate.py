"""evaluate: scikit-learn metrics that agree with the per-image predictions, TTA, every figure."""

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from app.evaluation.figures import FIGURES, figure_path

from ..conftest import assert_one_line_error, assert_png, run_cli


@pytest.fixture(scope="module")
def evaluated(fitted):
    run, _ = fitted
    p = run_cli("evaluate", run, "--tta", check=True)
    return run, p


def test_metrics_agree_with_predictions_made_independently_by_the_bundle(evaluated, tmp_path):
    """Not the same interpretation through the same scikit-learn call: the run exported, every
    validation image classified by the bundle (onnxruntime, its own preprocessing), the true class
    read from the file's folder, the scores counted here by hand."""
    run, p = evaluated
    m = json.loads((run / "metrics.json").read_text())
    cfg = json.loads((run / "config.json").read_text())
    pkl = tmp_path / "m" / "model.pkl"
    run_cli("export", run, "--to", pkl, check=True)
    from app.shipping.predict import BundlePredictor

    bundle = BundlePredictor(pkl.with_suffix(""))
    name_of = dict(zip(cfg["synsets"], cfg["classes"]))
    files = sorted(Path(cfg["config"]["data"], "val").rglob("*.JPEG"))
    assert len(files) == m["n"] == 60
    probs = bundle.probs([bundle.load(f) for f in files])
    y = [name_of[f.parent.name] for f in files]
    yhat = [bundle.classes[i] for i in probs.argmax(1)]
    acc = sum(a == b for a, b in zip(y, yhat)) / len(y)
    assert abs(m["accuracy"] - acc) <= 2 / 60  # the cache's two-step resize may flip a borderline image
    recall = {c: sum(a == b == c for a, b in zip(y, yhat)) / y.count(c) for c in set(y)}
    assert abs(m["recall_macro"] - sum(recall.values()) / len(recall)) <= 0.05
    with open(run / "top_losses.csv") as f:
        rows = {r["path"]: r["predicted"] for r in csv.DictReader(f)}
    # Image by image the run's predictions are the bundle's, but the run's are with TTA and a weak
    # 2-epoch model is near the line on many images: where the two differ, the bundle must itself
    # rate the run's class close to its own pick (a mislabelled or shuffled vocab puts it far off).
    col = {c: j for j, c in enumerate(bundle.classes)}
    gaps = [float(pr.max() - pr[col[rows[str(f)]]]) for f, pr in zip(files, probs)]
    assert sum(g > 0 for g in gaps) <= 6 and max(gaps) < 0.2, sorted(gaps)[-8:]
    assert sum(sum(r) for r in m["confusion"]) == 60
    assert set(m["per_class"]) == set(m["classes"]) == {"tench", "church", "golf ball", "parachute"}
    losses = [float(r["loss"]) for r in csv.DictReader(open(run / "top_losses.csv"))]
    assert losses == sorted(losses, reverse=True)  # worst first, what review walks
    for a, b, n in m["most_confused"]:
        assert a in m["classes"] and b in m["classes"] and a != b and n >= 1
    assert "with TTA" in p.stdout


def test_every_figure_is_a_real_picture(evaluated):
    run, _ = evaluated
    for f in FIGURES:
        if f.key == "lr_find" or f.audit or f.task == "multi":
            continue  # lr-find's (tests/test_cli.py), the audit's (tests/audit), multi-label's (test_multilabel)
        assert_png(figure_path(run, f.key))
    with Image.open(figure_path(run, "confusion")) as im:
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


def test_tta_scores_come_from_tta_predictions_that_differ_from_plain_ones(fitted, monkeypatch):
    """TTA's metrics are computed from what learn.tta returned, and those predictions are not the
    plain ones (fastai averages augmented passes with the plain one)."""
    from fastai.learner import Learner

    from app.evaluation.evaluate import evaluate_learner
    from app.model.learner import load_run

    run, _ = fitted
    learn, cfg, ds = load_run(run, log=lambda *_: None)
    got = {}
    real_tta = Learner.tta

    def spy(self, *a, **k):
        got["tta"] = real_tta(self, *a, **k)
        return got["tta"]

    monkeypatch.setattr(Learner, "tta", spy)
    m = evaluate_learner(learn, run, cfg, tta=True, log=lambda *_: None, figures=False, ds=ds)
    probs, targs = got["tta"]
    plain, _ = learn.get_preds(dl=learn.dls.valid)
    assert not torch_allclose(probs, plain)
    assert m["tta"]["accuracy"] == pytest.approx(float((probs.argmax(1) == targs).float().mean()))


def torch_allclose(a, b):
    import torch

    return torch.allclose(a, b, atol=1e-4)


def test_evaluate_best_scores_the_best_checkpoint_and_drops_the_other_models_tta(fitted, tmp_path):
    import shutil

    import torch

    run, _ = fitted
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    run_cli("evaluate", copy, "--tta", check=True)
    assert "tta" in json.loads((copy / "metrics.json").read_text())
    run_cli("evaluate", copy, "--which", "best", check=True)
    m = json.loads((copy / "metrics.json").read_text())
    best = torch.load(copy / "models" / "best.pth", weights_only=True)
    assert m["model"] == "best" and m["accuracy"] == pytest.approx(best["accuracy"], abs=1e-6)
    assert "tta" not in m  # the last model's TTA scores are not this model's
    assert "accuracy with TTA" not in (copy / "report.html").read_text()


def test_compare_json_holds_each_runs_settings_and_metrics(evaluated, tmp_path):
    run, _ = evaluated
    out = tmp_path / "cmp.json"
    run_cli("compare", run, run, "--json", out, check=True)
    rows = json.loads(out.read_text())
    m = json.loads((run / "metrics.json").read_text())
    assert len(rows) == 2 and rows[0]["accuracy"] == m["accuracy"] and rows[0]["tta_accuracy"] == m["tta"]["accuracy"]
    assert rows[0]["epochs"] == 8 and rows[0]["size"] == 64 and rows[0]["command"] == "fit-one-cycle"


@pytest.mark.slow
def test_evaluate_split_test_writes_its_own_files_and_report_section(tiny_data, tmp_path):
    """A test/ folder beside train/ and val/: never trained on or validated, scored only when asked,
    into files of its own; the validation results are left as they were."""
    import shutil

    root = tmp_path / "d"
    shutil.copytree(tiny_data, root)
    shutil.copytree(root / "val", root / "test")
    run = tmp_path / "run"
    run_cli("fit-one-cycle", "--data", root, "--epochs", 1, "--size", 64, "--bs", 16, "--out", run, check=True)
    val_before = (run / "metrics.json").read_text()
    with open(run / "top_losses.csv") as f:
        assert all("/val/" in r["path"] for r in csv.DictReader(f))
    p = run_cli("evaluate", run, "--split", "test", check=True)
    assert "test split: accuracy" in p.stdout and "metrics_test.json" in p.stdout
    m = json.loads((run / "metrics_test.json").read_text())
    assert m["split"] == "test" and m["n"] == 16
    with open(run / "top_losses_test.csv") as f:
        assert {r["path"].split("/")[-3] for r in csv.DictReader(f)} == {"test"}
    for key in ("overall", "confusion", "per_class", "top_losses"):
        assert_png(figure_path(run, key, "test"))
    assert (run / "metrics.json").read_text() == val_before
    run_cli("report", run, check=True)
    html = (run / "report.html").read_text()
    assert "Test split (never used to choose the model)" in html and "on 16 test images" in html


def test_evaluate_split_test_without_a_test_folder_is_one_line(fitted):
    run, _ = fitted
    assert_one_line_error(run_cli("evaluate", run, "--split", "test"), 3, "no test split", "test/ folder")


def test_top_losses_rank_by_the_plain_loss_even_when_the_training_loss_is_class_weighted(tiny_data, tmp_path):
    """--balance weights puts class weights in the loss; top_losses.csv must still rank (and show)
    -log p(actual): checked on every row whose prediction is right, where `probability` is p(actual)."""
    import math
    import shutil

    import torch

    from app.core.config import TrainConfig
    from app.data.loaders import make_dls
    from app.evaluation.evaluate import Interp, write_top_losses
    from app.model.learner import build
    from app.model.weights import Weights

    root = tmp_path / "imb"
    shutil.copytree(tiny_data, root)
    for f in sorted((root / "train" / sorted(tiny_data.joinpath("train").iterdir())[0].name).iterdir())[1:]:
        f.unlink()  # one class with a single training image: weight 29 / (4 x 1), the others 29 / 36
    cfg = TrainConfig(data=str(root), size=64, bs=8, balance="weights", loader="cached", seed=3)
    ds, dls = make_dls(cfg, 64, torch.device("cpu"), log=lambda *_: None)
    learn = build(cfg, dls, None, torch.device("cpu"), log=lambda *_: None, weights=Weights("none"))
    assert max(learn.loss_func.func.weight.tolist()) > 5  # the weighted loss is far from the plain one
    write_top_losses(Interp.compute(learn), tmp_path / "top.csv", ds)
    with open(tmp_path / "top.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    right = [r for r in rows if r["actual"] == r["predicted"]]
    assert right and len(rows) == 16
    for r in right:
        assert float(r["loss"]) == pytest.approx(-math.log(float(r["probability"])), abs=2e-3)
    assert [float(r["loss"]) for r in rows] == sorted((float(r["loss"]) for r in rows), reverse=True)

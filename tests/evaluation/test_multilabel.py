"""Multi-label evaluation (issue 33): per-label thresholds that maximise F1 (checked on cases worked
out by hand), the metrics against hand counts, and a multi-label CSV of real collages through
train -> evaluate -> export -> predict (bundle and pickle agree on every label set) -> review
--apply / --undo (the CSV's label set edited and put back) -> --resume."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from app.evaluation.multilabel import THRESHOLD_FLOOR, choose_thresholds, metrics_multi, top_loss_rows

from ..conftest import SHARED, assert_one_line_error, cli, need_shared


def test_the_threshold_of_each_label_is_its_f1_optimum_within_its_bounds():
    # label 0, by hand: at 0.35 TP 3 FP 1 -> F1 6/7; at 0.8 TP 2 FN 1 -> 0.8; at 0.4 TP 2 FP 1 FN 1 -> 2/3
    # label 1: its positives score lowest of all: the best threshold is below the floor, so the floor
    probs = np.array([[0.9, 0.02], [0.8, 0.01], [0.35, 0.03], [0.4, 0.5], [0.3, 0.6], [0.1, 0.7]])
    targs = np.array([[1, 1], [1, 1], [1, 0], [0, 0], [0, 0], [0, 0]])
    t = choose_thresholds(probs, targs)
    assert t[0] == pytest.approx(0.35) and t[1] == THRESHOLD_FLOOR
    assert choose_thresholds(probs, np.zeros_like(targs)) == [0.5, 0.5]  # no positive: fastai's default


def test_metrics_match_counts_made_by_hand():
    vocab = ["cat", "dog", "car"]
    probs = np.array([[0.9, 0.8, 0.1], [0.2, 0.7, 0.6], [0.6, 0.1, 0.2], [0.1, 0.2, 0.3]])
    targs = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]])
    m = metrics_multi(probs, targs, vocab, [0.5, 0.5, 0.5])
    # predicted: {cat, dog}, {dog, car}, {cat}, {} -> exact matches: image 0 and image 3
    assert m["accuracy"] == 0.5 and m["n"] == 4
    # cat: TP1 FP1 -> F1 2/3; dog: TP2 -> 1; car: TP0 FP1 FN1 -> 0
    assert m["per_class"]["cat"]["f1"] == pytest.approx(2 / 3) and m["per_class"]["dog"]["f1"] == 1.0
    assert m["per_class"]["car"]["f1"] == 0.0 and m["f1_macro"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert m["hamming_loss"] == pytest.approx(3 / 12)  # wrong cells: car on image 1, cat and car on image 2
    assert m["per_class"]["car"]["confusion"] == [[2, 1], [1, 0]]  # [[tn, fp], [fn, tp]]
    rows = top_loss_rows(["a", "b", "c", "d"], probs, targs, vocab, [0.5] * 3)
    by_path = {r[0]: r for r in rows}
    assert by_path["c"][6:] == ["car", "cat"]  # missed car, wrong cat
    losses = [float(r[4]) for r in rows]
    assert losses == sorted(losses, reverse=True)
    want = -(math.log(0.4) + math.log(0.9) + math.log(0.2))  # image c: cat absent p .6, dog absent .1, car present .2
    assert float(by_path["c"][4]) == pytest.approx(want, abs=1e-3)


@pytest.fixture(scope="module")
def collage_run(tmp_path_factory):
    need_shared()
    from app.bench.multilabel import make_collages

    base = tmp_path_factory.mktemp("multi")
    root = make_collages(SHARED, base / "collages", train=160, val=48, seed=1)
    run = base / "run"
    cli("fit-one-cycle", "--data", root, "--labels", root / "labels.csv", "--resize", "squish", "--epochs", 3,
        "--size", 64, "--bs", 16, "--lr", 2e-3, "--out", run, check=True)
    return root, run


@pytest.mark.slow
def test_a_multi_label_csv_trains_evaluates_exports_and_both_predictors_agree(collage_run, tmp_path):
    root, run = collage_run
    m = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert m["task"] == "multi-label" and len(m["thresholds"]) == 10 and m["n"] == 60
    assert m["map"] > 0.2  # 10 labels, 2 of them per collage: chance mAP is about 0.19
    with open(run / "top_losses.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert {"missed", "wrong"} <= set(rows[0]) and len(rows) == 60
    from app.evaluation.figures import FIGURES, figure_path

    for f in FIGURES:  # the multi-label figures drawn; the single-label ones (a confusion matrix...) not
        if f.task != "any":
            assert figure_path(run, f.key).is_file() == (f.task == "multi"), f.key
    cli("export", run, "--to", tmp_path / "m" / "model.pkl", check=True)
    bundle = tmp_path / "m" / "model"
    meta = json.loads((bundle / "model.json").read_text(encoding="utf-8"))
    assert meta["task"] == "multi-label" and meta["thresholds"] == m["thresholds"]
    val = root / "images"
    for model, out in ((bundle, tmp_path / "b.csv"), (tmp_path / "m" / "model.pkl", tmp_path / "p.csv")):
        cli("predict", model, val, "--csv", out, check=True)
    read = lambda f: {r["path"]: r["labels"] for r in csv.DictReader(open(f, newline="", encoding="utf-8"))}  # noqa: E731
    b, p = read(tmp_path / "b.csv"), read(tmp_path / "p.csv")
    assert len(b) == 208 + 52 and b == p  # every label set the same from ONNX and from the pickle
    sets = [s for s in b.values()]
    assert any(";" in s for s in sets)  # several labels returned for some images
    _served_label_sets_are_predicts(bundle, b)
    meta["thresholds"] = meta["thresholds"][:-1]
    (bundle / "model.json").write_text(json.dumps(meta), encoding="utf-8")
    assert_one_line_error(cli("predict", bundle, val), 4, "one threshold per class (10)")


@pytest.mark.slow
def test_the_int8_check_of_a_multi_label_model_scores_every_label_at_its_threshold(collage_run, tmp_path, monkeypatch):
    """onnx-int8's accuracy check on a multi-label model counts every label of every image at the
    model's own thresholds (fastai's accuracy_multi): torch's side against what `predict` on the float
    bundle returns for the same images, int8's against model.int8.onnx run here by onnxruntime (one
    label of one image is 1 / 600 of it). The count is what is tested, not int8's quality on this
    barely trained toy model (it lost 2.3 points on an AVX2-only host): the refusal past
    INT8_MAX_DROP has its own test (tests/shipping/test_formats.py)."""
    from app.model.bundle import onnx_session
    from app.shipping import formats
    from app.shipping.predict import BundlePredictor

    monkeypatch.setattr(formats, "INT8_MAX_DROP", 100.0)
    root, run = collage_run
    cli("export", run, "--to", tmp_path / "q.pkl", "--format", "onnx-int8", check=True)
    meta = json.loads((tmp_path / "q" / "model.json").read_text(encoding="utf-8"))
    check = meta["formats"]["onnx-int8"]["check"]
    cli("predict", tmp_path / "q", root / "images", "--csv", tmp_path / "f.csv", check=True)
    with open(tmp_path / "f.csv", newline="", encoding="utf-8") as f:
        got = {Path(r["path"]).name: set(filter(None, r["labels"].split(";"))) for r in csv.DictReader(f)}
    with open(root / "labels.csv", newline="", encoding="utf-8") as f:
        given = {Path(r["fname"]).name: set(filter(None, r["labels"].split(";")))
                 for r in csv.DictReader(f) if r["is_valid"] == "True"}
    name = dict(zip(meta["synsets"], meta["classes"]))  # the CSV's keys, predict's names
    truth = {n: {name[k] for k in s} for n, s in given.items()}
    right = sum((c in got[n]) == (c in truth[n]) for n in given for c in meta["classes"])
    cells = len(given) * len(meta["classes"])
    assert check["images"] == len(given) == 60 and cells == 600
    assert check["accuracy_torch"] == pytest.approx(right / cells, abs=2 / cells)
    q = BundlePredictor(tmp_path / "q")  # predict's own preprocessing and thresholds, the int8 file's session
    q.sess = onnx_session(tmp_path / "q" / "model.int8.onnx")
    names = sorted(given)
    probs = q.probs([q.load(root / "images" / n) for n in names])
    right_q = sum((probs[i, j] >= q.thresholds[j]) == (c in truth[n])
                  for i, n in enumerate(names) for j, c in enumerate(meta["classes"]))
    assert check["accuracy_int8"] == pytest.approx(right_q / cells, abs=2 / cells)
    assert 0.5 < check["top1_agreement"] <= 1.0 and abs(check["accuracy_change_points"]) < 10


@pytest.mark.slow
def test_lr_find_and_fine_tune_train_a_multi_label_csv_with_bce(collage_run, tmp_path):
    """lr-find and fine-tune on the collages: the loss is BCE per label (about ln 2 = 0.69 for an
    untrained head, where a cross-entropy over 10 classes would start near ln 10 = 2.3)."""
    root, _ = collage_run
    common = ["--data", root, "--labels", root / "labels.csv", "--size", 64, "--bs", 16, "--weights", "none"]
    cli("lr-find", *common, "--out", tmp_path / "lf", check=True)
    lf = json.loads((tmp_path / "lf" / "lr_find.json").read_text(encoding="utf-8"))
    assert 0.4 < lf["losses"][0] < 1.2 and lf["recommended"] > 0
    cli("fine-tune", *common, "--resize", "squish", "--lr-from", tmp_path / "lf", "--freeze-epochs", 1, "--epochs",
        1, "--out", tmp_path / "ft", check=True)
    m = json.loads((tmp_path / "ft" / "metrics.json").read_text(encoding="utf-8"))
    assert m["task"] == "multi-label" and len(m["thresholds"]) == 10 and 0 <= m["f1_macro"] <= 1


def _served_label_sets_are_predicts(bundle: Path, by_path: dict) -> None:
    """`serve` on the bundle (in process) returns the label sets `predict` wrote, probabilities of the
    sigmoid (not a softmax over them: those sum to 1 and fall under the thresholds)."""
    from starlette.testclient import TestClient

    from app.shipping.serve import Limits, Model, make_app

    paths = [p for p, s in by_path.items() if ";" in s][:3] + [p for p, s in by_path.items() if not s][:1]
    with TestClient(make_app(Model(bundle), Limits())) as client:
        files = [("file", (Path(p).name, Path(p).read_bytes(), "image/jpeg")) for p in paths]
        r = client.post("/predict", files=files, params={"top_k": 10})
    assert r.status_code == 200, r.text
    for p, res in zip(paths, r.json()["results"]):
        assert ";".join(x["class"] for x in res["labels"]) == by_path[p], p
        assert sum(x["probability"] for x in res["predictions"]) != pytest.approx(1.0, abs=1e-3)


@pytest.mark.slow
def test_review_edits_a_label_set_into_the_csv_and_undo_puts_it_back(collage_run):
    import asyncio

    from app.evaluation.review import load_entries, make_app

    root, run = collage_run
    csv_before = (root / "labels.csv").read_bytes()
    entries = load_entries(run)

    async def drive():
        app = make_app(run, entries, graphics="unicode")
        async with app.run_test(size=(140, 44)) as pilot:
            await pilot.press("r", "home", "space", "r")  # open the checklist, toggle its first label, save
            await pilot.press("q")

    asyncio.run(drive())
    with open(run / "decisions.csv", newline="", encoding="utf-8") as f:
        (d,) = list(csv.DictReader(f))
    given = set(entries[0].actual.split(";"))
    names = json.loads((run / "config.json").read_text(encoding="utf-8"))["classes"]
    assert d["decision"] == "relabel" and set(filter(None, d["new_class"].split(";"))) == given ^ {names[0]}
    cli("review", run, "--apply", "--yes", check=True)
    synsets = json.loads((run / "config.json").read_text(encoding="utf-8"))["synsets"]
    rel = Path(entries[0].path).relative_to(root).as_posix()
    with open(root / "labels.csv", newline="", encoding="utf-8") as f:
        row = next(r for r in csv.DictReader(f) if r["fname"] == rel)
    want = {synsets[names.index(n)] for n in given ^ {names[0]}}
    assert set(filter(None, row["labels"].split(";"))) == want
    cli("review", run, "--undo", "--yes", check=True)
    assert (root / "labels.csv").read_bytes() == csv_before
    cli("fit-one-cycle", "--resume", run, check=True)  # a finished multi-label run resumes (nothing left to fit)


@pytest.mark.slow
def test_the_report_shows_each_labels_threshold_and_audit_refuses_in_one_line(collage_run):
    from html.parser import HTMLParser

    root, run = collage_run
    cli("report", run, check=True)
    cells: list[str] = []

    class Cells(HTMLParser):
        def handle_data(self, data):
            cells.append(data.strip())

    Cells().feed((run / "report.html").read_text(encoding="utf-8"))
    m = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert "Metrics per label" in cells and "mAP" in cells and "Most confused pairs" not in cells
    for name, v in m["per_class"].items():  # the row of each label: its name, then its own threshold
        assert cells[cells.index(name) + 1] == f'{v["threshold"]:.2f}'
    assert_one_line_error(cli("audit", run, "--time", "5"), 3, "multi-label")

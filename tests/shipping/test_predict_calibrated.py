"""predict --calibrated (the temperature fitted on the validation logits, in model.json and on the
pickled learner), --min-confidence (`unknown` below it) and --cam DIR (one Grad-CAM overlay per image),
for a bundle and a pickle."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ..conftest import ROOT, assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def exported(fitted, tmp_path_factory):
    run, _ = fitted
    to = tmp_path_factory.mktemp("calibrated") / "m.pkl"
    run_cli("export", run, "--to", to, check=True)
    return run, to, to.with_suffix("")


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _top(rows):
    return {r["path"]: (r["class_1"], float(r["prob_1"])) for r in rows}


def test_the_temperature_is_stored_and_calibrated_probabilities_fit_validation_better(exported, small_data, tmp_path):
    run, pkl, bundle = exported
    t = json.loads((bundle / "model.json").read_text())["calibration"]["temperature"]
    assert t == json.loads((run / "metrics.json").read_text())["calibration"]["temperature"] and t > 0
    val = small_data / "val"
    nll = {}
    for model in (bundle, pkl):
        for flag in ((), ("--calibrated",)):
            out = tmp_path / f"{model.name}{len(flag)}.csv"
            run_cli("predict", model, val, "--top-k", 4, "--csv", out, *flag, check=True)
            rows = _csv(out)
            truth = {"n01440764": "tench", "n03028079": "church", "n03445777": "golf ball", "n03888257": "parachute"}
            p_true = [next(float(r[f"prob_{i}"]) for i in range(1, 5) if r[f"class_{i}"] == truth[r["path"].split("/")[-2]])
                      for r in rows]
            nll[(model.suffix, bool(flag))] = -np.mean(np.log(np.maximum(p_true, 1e-12)))
            nll[(model.suffix, bool(flag), "top")] = _top(rows)
    for kind in ("", ".pkl"):
        plain, cal = nll[(kind, False, "top")], nll[(kind, True, "top")]
        assert {k: v[0] for k, v in plain.items()} == {k: v[0] for k, v in cal.items()}  # the same classes
        assert any(abs(plain[k][1] - cal[k][1]) > 1e-3 for k in plain)  # other probabilities
        assert nll[(kind, True)] <= nll[(kind, False)] + 1e-6  # fitted on these images: no worse on them
    b, p = nll[("", True, "top")], nll[(".pkl", True, "top")]
    assert all(abs(b[k][1] - p[k][1]) < 2e-3 for k in b)  # bundle and pickle agree after scaling too


def test_min_confidence_writes_unknown_below_it(exported, small_data, tmp_path):
    _, _, bundle = exported
    plain = _top(_csv(_out(tmp_path, "p.csv", bundle, small_data)))
    cut = float(np.median([p for _, p in plain.values()]))
    rows = _csv(_out(tmp_path, "m.csv", bundle, small_data, "--min-confidence", cut))
    assert set(rows[0]) == {"path", "prediction", "class_1", "prob_1", "class_2", "prob_2", "class_3", "prob_3"}
    for r in rows:
        c, p = plain[r["path"]]
        assert r["prediction"] == (c if p >= cut else "unknown")
    assert 0 < sum(r["prediction"] == "unknown" for r in rows) < len(rows)
    out = tmp_path / "m.jsonl"
    run_cli("predict", bundle, small_data / "val", "--min-confidence", 1.0, "--jsonl", out, check=True)
    assert {json.loads(line)["prediction"] for line in out.read_text().splitlines()} == {"unknown"}


def _out(tmp_path, name, model, data, *flags):
    out = tmp_path / name
    run_cli("predict", model, data / "val", "--csv", out, *flags, check=True)
    return out


def test_cam_writes_one_overlay_per_image_for_a_bundle_and_a_pickle(exported, small_data, tmp_path):
    _, pkl, bundle = exported
    val = small_data / "val"
    images = sorted(p.relative_to(val) for p in val.rglob("*.JPEG"))
    for model in (bundle, pkl):
        cams = tmp_path / f"cams-{model.suffix or 'bundle'}"
        p = run_cli("predict", model, val, "--cam", cams, "--csv", tmp_path / f"{model.name}.csv", check=True)
        assert f"Grad-CAM: {len(images)} overlay(s)" in p.stdout
        made = sorted(q.relative_to(cams) for q in cams.rglob("*.jpg"))
        assert made == [i.with_name(i.name + ".jpg") for i in images]
        with Image.open(cams / made[0]) as im:
            assert im.format == "JPEG" and im.size == (64, 64)  # the model's input size
            a = np.asarray(im.convert("RGB")).astype(int)
        from app.data.images import load_square

        assert np.abs(a - load_square(val / images[0], 64)).mean() > 5  # an overlay, not the picture
    keep = tmp_path / "cams-bundle"
    assert_one_line_error(run_cli("predict", bundle, val, "--cam", keep), 5, "not an empty folder")


def test_calibrated_bundle_predict_still_imports_no_torch_and_refuses_a_bundle_without_a_temperature(exported,
                                                                                                   small_data, tmp_path):
    import shutil

    _, _, bundle = exported
    img = next((small_data / "val" / "n03888257").iterdir())
    code = ("import sys\nfrom app.cli import main\n"
            f"rc = main(['predict', {str(bundle)!r}, {str(img)!r}, '--calibrated', '--min-confidence', '0.5'])\n"
            "print('RC', rc, 'HEAVY', sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'fastai')))\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "RC 0 HEAVY []" in p.stdout, p.stdout[-2000:] + p.stderr[-2000:]
    old = shutil.copytree(bundle, tmp_path / "old")
    meta = json.loads((old / "model.json").read_text())
    del meta["calibration"]
    (old / "model.json").write_text(json.dumps(meta))
    assert_one_line_error(run_cli("predict", old, img, "--calibrated"), 4, "has no temperature")
    (old / "model.safetensors").unlink()
    assert_one_line_error(run_cli("predict", old, img, "--cam", tmp_path / "c"), 4, "model.safetensors")

"""export --format: every format of the table written, checked against torch through the bundle's
own preprocessing, recorded in model.json, and loaded again in a fresh process by its own library."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from ..conftest import ROOT, assert_one_line_error, run_cli

FILES = {"onnx": ["model.onnx"], "onnx-int8": ["model.int8.onnx"], "openvino": ["model.xml", "model.bin"],
         "coreml": ["model.mlpackage"], "pt2": ["model.pt2"]}


def torch_reference(bundle, small_data, n=12):
    """The model rebuilt from model.safetensors (not from any exported file), fed the validation
    images through fastai's own validation pipeline: (paths, probabilities)."""
    import torch
    from fastai.data.transforms import IntToFloatTensor, Normalize, ToTensor
    from fastai.vision.augment import Resize
    from fastai.vision.core import PILImage
    from safetensors.torch import load_file

    from app.core.config import TrainConfig
    from app.data.loaders import datablock_dls
    from app.data.scan import scan
    from app.model.learner import build_learner

    files = sorted((small_data / "val").rglob("*.JPEG"))[:: 60 // n][:n]
    learn = build_learner(datablock_dls(scan(small_data), TrainConfig(bs=4, workers=0), 64), "none")
    learn.model.load_state_dict(load_file(str(bundle / "model.safetensors")))
    learn.model.eval()
    resize, to_t, to_f = Resize(64), ToTensor(), IntToFloatTensor()
    norm = Normalize.from_stats([0.485, 0.456, 0.406], [0.229, 0.224, 0.225], cuda=False)
    x = torch.cat([norm(to_f(to_t(resize(PILImage.create(f), split_idx=1))[None])) for f in files])
    with torch.no_grad():
        return files, torch.softmax(learn.model(x), 1).numpy()


def test_every_format_is_written_checked_and_recorded(all_formats, small_data):
    run, bundle, p = all_formats
    meta = json.loads((bundle / "model.json").read_text())
    assert list(meta["formats"]) == ["onnx", "onnx-int8", "openvino", "coreml", "pt2"]
    for name, files in FILES.items():
        rec = meta["formats"][name]
        assert all((bundle / f).exists() for f in files), name
        assert rec["file"] == files[0] and rec["check"]["passed"] and rec["versions"], rec
        assert f"  {name}: {files[0]}, " in p.stdout
    for name in ("onnx", "openvino", "pt2"):
        c = meta["formats"][name]["check"]
        assert c["images"] == 32 and 0 <= c["max_abs_dprob"] <= 1e-3, (name, c)
    q = meta["formats"]["onnx-int8"]["check"]
    n_val = len(list((small_data / "val").rglob("*.JPEG")))
    assert q["images"] == n_val == 60 and q["calibration_images"] == 160  # the whole validation set; all training
    run_acc = json.loads((run / "metrics.json").read_text())["accuracy"]
    assert abs(q["accuracy_torch"] - run_acc) <= 2 / 60  # the torch side is the run's own accuracy (evaluate's)
    assert 0.8 <= q["top1_agreement"] <= 1 and q["accuracy_change_points"] >= -1.0
    c = meta["formats"]["coreml"]["check"]
    assert c["ran"] is False and c["weights_equal"] == "20/20" and "macOS" in c["why_not_run"]
    assert meta["formats"]["coreml"]["runs_here"] is False
    assert {"openvino", "coremltools", "onnxruntime", "torch"} <= set(meta["versions"])
    assert not [f for f in bundle.iterdir() if f.name.startswith(".")]  # no temporary left inside


FRESH = r"""
import json, sys
import numpy as np
bundle, x = sys.argv[1], np.load(sys.argv[2])
out = {}
import onnxruntime as ort
for name, f in (("onnx", "model.onnx"), ("onnx-int8", "model.int8.onnx")):
    s = ort.InferenceSession(f"{bundle}/{f}", providers=["CPUExecutionProvider"])
    out[name] = s.run(None, {"input": x})[0].tolist()
import openvino as ov
out["openvino"] = ov.Core().compile_model(f"{bundle}/model.xml", "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0].tolist()
import torch
with torch.no_grad():
    out["pt2"] = torch.export.load(f"{bundle}/model.pt2").module()(torch.from_numpy(x)).numpy().tolist()
import coremltools as ct
spec = ct.utils.load_spec(f"{bundle}/model.mlpackage")
m = ct.models.MLModel(f"{bundle}/model.mlpackage", skip_model_load=True)
out["coreml"] = {"type": spec.WhichOneof("Type"), "input": [i.name for i in m.get_spec().description.input],
                 "shape": list(spec.description.input[0].type.multiArrayType.shape)}
print("RESULT " + json.dumps(out))
"""


def test_each_format_loads_in_a_fresh_process_and_gives_torchs_answers(all_formats, small_data, tmp_path):
    from app.model.bundle import softmax
    from app.shipping.predict import BundlePredictor

    _, bundle, _ = all_formats
    files, want = torch_reference(bundle, small_data)
    pred = BundlePredictor(bundle)  # predict's own preprocessing, from model.json
    from app.model.bundle import to_input

    np.save(tmp_path / "x.npy", to_input([pred.load(f) for f in files], pred.mean, pred.std))
    p = subprocess.run([sys.executable, "-c", FRESH, str(bundle), str(tmp_path / "x.npy")], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(p.stdout.split("RESULT ", 1)[1])
    for name in ("onnx", "openvino", "pt2"):
        assert np.abs(softmax(np.array(got[name], np.float32)) - want).max() <= 1e-3, name
    q = softmax(np.array(got["onnx-int8"], np.float32))
    assert (q.argmax(1) == want.argmax(1)).mean() >= 10 / 12 and np.abs(q - want).max() < 0.2
    assert got["coreml"] == {"type": "mlProgram", "input": ["input"], "shape": [1, 3, 64, 64]}


def test_a_wrong_mean_in_the_metadata_refuses_the_export(fitted, tmp_path, monkeypatch):
    """model.json's mean off by 0.1 on one channel: the export's check runs the written files
    through that metadata, sees probabilities unlike torch's, and leaves nothing behind."""
    from app.core.errors import ModelError
    from app.shipping import export

    real = export.bundle_info

    def wrong_mean(*a, **kw):
        info = real(*a, **kw)
        info["normalize"]["mean"][0] += 0.1
        return info

    monkeypatch.setattr(export, "bundle_info", wrong_mean)
    run, _ = fitted
    to = tmp_path / "out" / "m.pkl"
    with pytest.raises(ModelError, match=r"the onnx model's probabilities, through the bundle's preprocessing, "
                                         r"differ from PyTorch's by"):
        export.export_run(run, to, formats=["onnx", "openvino"])
    assert list(to.parent.iterdir()) == []


@pytest.mark.parametrize("name", ["onnx", "openvino", "pt2"])
def test_each_float_check_reads_the_metadata_it_ships_with(all_formats, small_data, tmp_path, name):
    """Each float format's own check, on a copy of the bundle: passes as exported, refuses the same
    file once model.json's mean is wrong."""
    from app.core.errors import ModelError
    from app.shipping import formats

    ctx = _context(all_formats, small_data, tmp_path)
    fmt, ref = formats.BY_NAME[name], formats._torch_probs(ctx, _ref_input(ctx))
    assert formats._check_float(fmt, ctx, ref)["max_abs_dprob"] <= 1e-3
    meta = json.loads((ctx.bundle / "model.json").read_text())
    meta["normalize"]["mean"] = [0.0, 0.0, 0.0]
    (ctx.bundle / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=f"the {name} model's probabilities, through the bundle's preprocessing"):
        formats._check_float(fmt, ctx, ref)


def test_the_coreml_check_finds_a_weight_that_differs(all_formats, small_data, tmp_path):
    import torch

    from app.core.errors import ModelError
    from app.shipping import formats

    ctx = _context(all_formats, small_data, tmp_path)
    fmt = formats.BY_NAME["coreml"]
    assert formats._check_coreml(fmt, ctx, None)["weights_equal"] == "20/20"
    with torch.no_grad():
        ctx.model[0][0][3].weight[0, 0, 0, 0] += 1e-3  # one value of the second convolution
    with pytest.raises(ModelError, match="1 of 20 weight tensors not found equal"):
        formats._check_coreml(fmt, ctx, None)


def test_int8_calibrated_on_the_wrong_images_is_refused_in_one_line(fitted, tmp_path, monkeypatch, capsys):
    """Calibration on black images (a real mistake: the wrong folder) makes the int8 model lose
    far more than a point on the validation set: one line, exit 4, nothing written."""
    from app.cli import main
    from app.shipping import formats

    real = formats.Context.arrays

    def black_training_images(self, split, n=None):
        got = real(self, split, n)
        return [np.zeros_like(a) for a in got] if split == "train" else got

    monkeypatch.setattr(formats.Context, "arrays", black_training_images)
    run, _ = fitted
    out = tmp_path / "out"
    rc = main(["export", str(run), "--to", str(out / "m.pkl"), "--format", "onnx-int8"])
    err = capsys.readouterr().err.strip()
    assert rc == 4 and len(err.splitlines()) == 1, err
    assert "onnx-int8 loses" in err and "leave onnx-int8 out of --format" in err
    assert list(out.iterdir()) == []


def test_an_unknown_format_or_a_missing_extra_is_one_line_before_any_work(fitted, tmp_path, monkeypatch, capsys):
    import importlib.util

    from app.cli import main

    run, _ = fitted
    assert_one_line_error(run_cli("export", run, "--to", tmp_path / "m.pkl", "--format", "onnx,tflite"), 2,
                          "unknown export format tflite", "onnx-int8, openvino, coreml, pt2")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "openvino" else real(n, *a))
    assert main(["export", str(run), "--to", str(tmp_path / "m.pkl"), "--format", "openvino"]) == 2
    assert capsys.readouterr().err.strip() == "error: --format openvino needs openvino: pip install .[ship]"
    assert list(tmp_path.iterdir()) == []


def test_the_readme_lists_every_format_of_the_table():
    from app.shipping.formats import FORMATS

    readme = (ROOT / "README.md").read_text()
    for f in FORMATS:
        assert f"| `{f.name}` | `{f.file}` |" in readme, f.name


def _context(all_formats, small_data, tmp_path):
    """A Context over a copy of the exported bundle, with the torch model rebuilt from its weights."""
    from safetensors.torch import load_file

    from app.core.config import TrainConfig
    from app.data.loaders import datablock_dls
    from app.data.scan import scan
    from app.model.learner import build_learner
    from app.shipping.export import plain_model, training_stats
    from app.shipping.formats import Context

    _, bundle, _ = all_formats
    copy = shutil.copytree(bundle, tmp_path / "bundle")
    ds = scan(small_data)
    learn = build_learner(datablock_dls(ds, TrainConfig(bs=4, workers=0), 64), "none")
    learn.model.load_state_dict(load_file(str(copy / "model.safetensors")))
    mean, std = training_stats()
    return Context(plain_model(learn), copy, ds, 64, "crop", mean, std)


def _ref_input(ctx):
    from app.model.bundle import to_input
    from app.shipping.formats import CHECK_IMAGES

    return to_input(ctx.arrays("val", CHECK_IMAGES), ctx.mean, ctx.std)

"""export: the learner pickle and a pickle-free bundle; ONNX gives PyTorch's logits on real images."""

import json

import numpy as np
import pytest
import torch

from ..conftest import assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def exported(fitted, tmp_path_factory):
    run, _ = fitted
    to = tmp_path_factory.mktemp("export") / "nette.pkl"
    p = run_cli("export", run, "--to", to, check=True)
    return run, to, to.with_suffix(""), p


def test_bundle_describes_the_model_completely(exported):
    run, pkl, bundle, p = exported
    assert pkl.is_file() and str(pkl) in p.stdout
    assert {f.name for f in bundle.iterdir()} == {"model.safetensors", "model.json", "model.onnx"}
    meta = json.loads((bundle / "model.json").read_text())
    assert meta["classes"] == ["tench", "church", "golf ball", "parachute"]
    assert meta["synsets"] == ["n01440764", "n03028079", "n03445777", "n03888257"]
    assert meta["input"]["size"] == 64 and len(meta["normalize"]["mean"]) == 3
    run_metrics = json.loads((run / "metrics.json").read_text())
    assert meta["metrics"]["accuracy"] == run_metrics["accuracy"]
    assert meta["data_fingerprint"] == json.loads((run / "config.json").read_text())["data_fingerprint"]
    assert {"torch", "fastai", "onnx", "onnxruntime"} <= set(meta["versions"])
    assert meta["onnx"]["max_abs_diff_vs_torch"] <= 1e-4


def test_onnx_matches_pytorch_on_real_images_with_any_batch_size(exported, small_data):
    import onnx
    import onnxruntime as ort
    from safetensors.torch import load_file

    from app.core.config import TrainConfig
    from app.data.loaders import datablock_dls
    from app.data.scan import scan
    from app.model.learner import build_learner
    from app.shipping.predict import BundlePredictor

    _, _, bundle, _ = exported
    onnx.checker.check_model(onnx.load(str(bundle / "model.onnx")))
    pred = BundlePredictor(bundle)
    files = sorted((small_data / "val").rglob("*.JPEG"))[:7]
    x = np.stack([pred.load(f) for f in files]).astype(np.float32) / 255
    x = ((x - pred.mean) / pred.std).transpose(0, 3, 1, 2).astype(np.float32)
    ds = scan(small_data)
    learn = build_learner(datablock_dls(ds, TrainConfig(bs=4, workers=0), 64), "none")
    learn.model.load_state_dict(load_file(str(bundle / "model.safetensors")))
    learn.model.eval()
    with torch.no_grad():
        want = learn.model(torch.from_numpy(np.ascontiguousarray(x))).numpy()
    sess = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    for n in (1, 7):
        got = sess.run(None, {"input": np.ascontiguousarray(x[:n])})[0]
        assert got.shape == (n, 4)
        assert np.abs(got - want[:n]).max() <= 1e-4


def test_export_never_overwrites(exported):
    run, pkl, bundle, _ = exported
    before = pkl.read_bytes()
    assert_one_line_error(run_cli("export", run, "--to", pkl), 5, "already exists")
    assert pkl.read_bytes() == before


def test_pickle_predictions_equal_the_bundles(exported, small_data):
    from app.shipping.predict import open_model

    _, pkl, bundle, _ = exported
    files = sorted((small_data / "val").rglob("*.JPEG"))[:12]
    a, b = open_model(pkl), open_model(bundle)
    pa = a.probs([a.load(f) for f in files])
    pb = b.probs([b.load(f) for f in files])
    assert a.classes == b.classes
    assert np.abs(pa - pb).max() < 1e-4


def test_the_learner_pickle_loads_and_predicts_outside_the_project(exported, small_data, tmp_path):
    """fastai users load_learner our pickle in their own notebook: a clean process whose working
    directory and sys.path exclude the project; its classes match the bundle's on the same images."""
    import subprocess
    import sys

    from app.shipping.export import pickle_modules
    from app.shipping.predict import open_model

    _, pkl, bundle, _ = exported
    assert not {m for m in pickle_modules(pkl) if m == "app" or m.startswith("app.")}
    files = sorted((small_data / "val").rglob("*.JPEG"))[:8]
    code = "\n".join([
        "import sys, json",
        "try:",
        "    import app",
        "    sys.exit('app is importable here: not a clean process')",
        "except ImportError:",
        "    pass",
        "from fastai.learner import load_learner",
        "learn = load_learner(sys.argv[1])",
        "with learn.no_bar():",
        "    print(json.dumps([learn.predict(f)[0] for f in sys.argv[2:]]))",
    ])
    p = subprocess.run([sys.executable, "-I", "-c", code, str(pkl), *map(str, files)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    theirs = json.loads(p.stdout.strip().splitlines()[-1])
    b = open_model(bundle)
    ours = [b.classes[int(np.argmax(pr))] for pr in b.probs([b.load(f) for f in files])]
    assert theirs == ours


def test_a_bundle_of_a_newer_format_is_refused_in_one_line(exported, small_data, tmp_path):
    import shutil

    _, _, bundle, _ = exported
    newer = tmp_path / "newer"
    shutil.copytree(bundle, newer)
    meta = json.loads((newer / "model.json").read_text())
    meta["format"] = "alexnet-cli-bundle/2"
    (newer / "model.json").write_text(json.dumps(meta))
    assert_one_line_error(run_cli("predict", newer, small_data / "val"), 4, "newer than this app reads")


def test_onnx_parity_is_measured_on_real_validation_images(small_data):
    """The export's ONNX check feeds real validation images through predict's own preprocessing."""
    from app.data.images import load_square
    from app.data.scan import scan
    from app.model.bundle import to_input
    from app.shipping.export import _sample_inputs

    ds = scan(small_data)
    x = _sample_inputs(ds, 64, [0.5] * 3, [0.25] * 3, n=4)
    val = [i for i in ds.items if i.split == "val"]
    want = to_input([load_square(i.path, 64) for i in val[:: len(val) // 4][:4]], [0.5] * 3, [0.25] * 3)
    assert x.shape == (4, 3, 64, 64) and np.array_equal(x, want)

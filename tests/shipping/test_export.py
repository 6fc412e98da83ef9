"""export: the learner pickle and a pickle-free bundle; ONNX gives PyTorch's logits on real images."""

import json

import numpy as np
import pytest
import torch

from ..conftest import assert_one_line_error, kill_at, run_cli


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


def test_onnx_sample_inputs_are_what_fastai_validation_feeds_the_model(small_data, tmp_path):
    """The images the ONNX check runs on, against fastai's own validation pipeline (PILImage.create,
    Resize, ToTensor, IntToFloatTensor, Normalize), not the functions the export uses: each sample
    is one real validation image, preprocessed as training validated it. Imagenette's copies are
    all 224 x 224, so the validation photos are cut to landscape and portrait first (a squash
    instead of a centre crop would then show)."""
    import shutil

    import torch
    from fastai.data.transforms import IntToFloatTensor, Normalize, ToTensor
    from fastai.vision.augment import Resize
    from fastai.vision.core import PILImage
    from PIL import Image

    from app.data.scan import scan
    from app.shipping.export import _sample_inputs

    data = shutil.copytree(small_data, tmp_path / "data")
    for i, f in enumerate(sorted((data / "val").rglob("*.JPEG"))):
        im = Image.open(f).convert("RGB")
        im.crop((0, 0, im.width, im.height * 2 // 3) if i % 2 else (0, 0, im.width * 2 // 3, im.height)).save(f)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    ds = scan(data)
    x = _sample_inputs(ds, 64, mean, std, n=5)
    resize, to_t, to_f = Resize(64), ToTensor(), IntToFloatTensor()
    norm = Normalize.from_stats(mean, std, cuda=False)

    def fastai_validation(path):
        im = resize(PILImage.create(path), split_idx=1)
        return norm(to_f(to_t(im)[None])).squeeze(0).numpy()

    want = np.stack([fastai_validation(i.path) for i in ds.items if i.split == "val"])
    assert x.shape == (5, 3, 64, 64) and x.dtype == np.float32
    for row in x:
        gaps = np.abs(want - row).reshape(len(want), -1).max(1)
        assert gaps.min() < 1e-5, gaps.min()  # exactly one validation image, as fastai validates it
    assert len({int(np.abs(want - row).reshape(len(want), -1).max(1).argmin()) for row in x}) == 5
    assert torch.is_tensor(torch.from_numpy(x))


class Drifts(torch.nn.Module):
    """A model whose output changes with each call: the ONNX graph (traced at the first) no longer
    matches PyTorch's next answer, a large, real difference."""

    def __init__(self):
        super().__init__()
        self.calls, self.lin = 0, torch.nn.Linear(3, 4)

    def forward(self, x):
        self.calls += 1
        return self.lin(x.mean((2, 3))) * 10 * self.calls


def test_a_large_onnx_difference_is_refused(tmp_path):
    from app.core.errors import ModelError
    from app.shipping.export import export_onnx

    x = np.random.default_rng(0).normal(size=(4, 3, 64, 64)).astype(np.float32)
    with pytest.raises(ModelError, match="differ from PyTorch's by"):
        export_onnx(Drifts().eval(), 64, tmp_path / "m.onnx", x)
    assert export_onnx(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 64 * 64, 4)).eval(), 64,
                       tmp_path / "ok.onnx", x) < 1e-4


def test_a_refused_export_leaves_nothing_and_the_retry_works(fitted, tmp_path, monkeypatch):
    from app.core.errors import ModelError
    from app.shipping import export, formats

    run, _ = fitted
    to = tmp_path / "out" / "m.pkl"
    monkeypatch.setattr(formats, "ONNX_TOLERANCE", -1.0)  # every difference refused: the bundle fails last
    with pytest.raises(ModelError):
        export.export_run(run, to)
    assert list(to.parent.iterdir()) == []  # no pickle, no bundle, no temporary
    monkeypatch.setattr(formats, "ONNX_TOLERANCE", 1e-3)
    pkl, bundle = export.export_run(run, to)
    assert pkl.is_file() and (bundle / "model.onnx").is_file()
    assert sorted(p.name for p in to.parent.iterdir()) == ["m", "m.pkl"]


@pytest.mark.parametrize("point", ["mkdir", "link", "unlink", "rename"])
def test_a_killed_export_leaves_nothing_that_blocks_the_retry(fitted, tmp_path, point):
    """SIGKILL a real `export` right after its first os.POINT: while the bundle is being written
    (mkdir), between publishing the pickle and renaming the bundle (link, unlink), and after the
    rename. The retry then succeeds, or finds the export whole; either way both names are there,
    whole, and no temporary is left."""
    import signal
    import zipfile

    run, _ = fitted
    out = tmp_path / "out"
    out.mkdir()
    assert kill_at(point, 1, "export", run, "--to", out / "m.pkl") == -signal.SIGKILL
    left = {x.name for x in out.iterdir()}
    assert any(".part" in n for n in left) or point == "rename", left  # the kill landed mid-export
    p = run_cli("export", run, "--to", out / "m.pkl")
    assert p.returncode == 0 or "already exists" in p.stderr + p.stdout, p.stderr
    assert sorted(x.name for x in out.iterdir()) == ["m", "m.pkl"]  # stale temporaries swept
    assert zipfile.ZipFile(out / "m.pkl").testzip() is None
    assert sorted(x.name for x in (out / "m").iterdir()) == ["model.json", "model.onnx", "model.safetensors"]


def test_two_exports_of_one_run_at_once_one_wins(fitted, tmp_path):
    import subprocess
    import sys

    from ..conftest import ROOT

    run, _ = fitted
    to = tmp_path / "m.pkl"
    procs = [subprocess.Popen([sys.executable, "-m", "app", "export", str(run), "--to", str(to)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    assert sorted(rc for rc, _, _ in outs) == [0, 5], outs
    _, _, err = next(o for o in outs if o[0] == 5)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "already exists" in lines[0] and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "m.pkl"]
    assert {f.name for f in (tmp_path / "m").iterdir()} == {"model.safetensors", "model.json", "model.onnx"}


def test_a_full_disk_export_is_one_line_and_leaves_nothing(fitted, tmp_path):
    from ..mounts import full_disk, listing, run_mounted

    run, _ = fitted
    disk, left = tmp_path / "disk", tmp_path / "left"
    p = run_mounted(full_disk(disk, "64m"), "export", run, "--to", disk / "m.pkl", after=listing(disk, left))
    assert_one_line_error(p, 5, "no space left")
    assert left.read_text().split() == [".fill"]


def test_a_disk_that_fills_while_the_pickle_is_written_is_one_line(fitted, tmp_path):
    """The up-front space check bypassed, so the real writer meets the full disk."""
    from ..mounts import listing, run_mounted, tmpfs

    run, _ = fitted
    disk, left = tmp_path / "disk", tmp_path / "left"
    code = ("import sys\nimport app.shipping.export as e\ne.need_space = lambda *a: None\n"
            "from app.cli import main\nsys.exit(main(sys.argv[1:]))")
    p = run_mounted(tmpfs(disk, "6m"), python=["-c", code, "export", str(run), "--to", str(disk / "m.pkl")],
                    after=listing(disk, left))
    assert_one_line_error(p, 5, "no space left")
    assert left.read_text().split() == []


def test_export_to_a_read_only_folder_is_one_line_before_loading(fitted, tmp_path):
    from ..mounts import read_only, run_mounted

    run, _ = fitted
    ro = tmp_path / "ro"
    ro.mkdir()
    p = run_mounted(read_only(ro), "export", run, "--to", ro / "m.pkl")
    assert_one_line_error(p, 5, "read-only", str(ro))


def test_a_run_validated_above_its_training_size_ships_at_that_size(tiny_data, tmp_path):
    """Issue 29: cpu-quick at 128 px is scored at its test size, 160 px, and every shipped file takes
    160 px images: the bundle's model.json and ONNX graph, and the learner pickle's own Resize."""
    import onnx
    from fastai.learner import load_learner
    from fastai.vision.augment import Resize

    run = tmp_path / "r128"
    run_cli("fit-one-cycle", "--data", tiny_data, "--size", 128, "--progressive", "none", "--epochs", 1, "--bs", 8,
            "--export", "--no-figures", "--out", run, check=True)
    m = json.loads((run / "metrics.json").read_text())
    assert (m["size"], m["train_size"]) == (160, 128)
    meta = json.loads((run / "export" / "r128" / "model.json").read_text())
    assert (meta["input"]["size"], meta["input"]["train_size"]) == (160, 128)
    dims = onnx.load(str(run / "export" / "r128" / "model.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims][1:] == [3, 160, 160]
    learn = load_learner(run / "export" / "r128.pkl")
    assert [tuple(t.size) for t in learn.dls.after_item.fs if isinstance(t, Resize)] == [(160, 160)]

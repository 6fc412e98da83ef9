"""The learner pickle in a plain notebook (a clean `python -I` process, this package not importable):
`load_learner(pkl).predict(path)` decodes files as training and the bundle do (EXIF rotation, alpha
on white, 16-bit scaled), re-exports from there, and the pickle names nothing of this package."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ..conftest import run_cli

NOTEBOOK = """
import json, sys
try:
    import app
    sys.exit("app is importable here: not a clean process")
except ImportError:
    pass
from fastai.learner import load_learner
learn = load_learner(sys.argv[1])
files = sys.argv[3:]
from pathlib import Path
from PIL import Image
with learn.no_bar():
    probs = [learn.predict(f)[2].tolist() for f in files]
    kinds = [learn.predict(x)[2].tolist() for x in (Path(files[0]), Image.open(files[0]))]  # what else fastai takes
learn.export(sys.argv[2])  # a notebook user re-exports what they loaded
again = load_learner(sys.argv[2])
with again.no_bar():
    probs_again = [again.predict(f)[2].tolist() for f in files]
print(json.dumps({"probs": probs, "again": probs_again, "kinds": kinds}))
"""


@pytest.fixture(scope="module")
def exported(fitted, tmp_path_factory):
    run, _ = fitted
    to = tmp_path_factory.mktemp("nb") / "m.pkl"
    run_cli("export", run, "--to", to, check=True)
    return to, to.with_suffix("")


def awkward_images(folder, photo):
    """A phone photo stored sideways (EXIF orientation 6), a half-transparent RGBA PNG and a 16-bit
    grayscale PNG, all made from one real validation photo."""
    src = Image.open(photo).convert("RGB")
    wide = src.crop((0, 40, src.width, src.height - 40))  # not square: a wrong rotation changes the crop
    exif = Image.Exif()
    exif[0x0112] = 6
    wide.save(folder / "sideways.jpg", exif=exif.tobytes(), quality=95)
    rgba = np.asarray(src.convert("RGBA")).copy()
    rgba[:, : rgba.shape[1] // 2, 3] = 0
    Image.fromarray(rgba, "RGBA").save(folder / "half_clear.png")
    g16 = (np.asarray(src.convert("L")).astype(np.uint16) * 257)
    Image.fromarray(g16).save(folder / "gray16.png")
    return [folder / n for n in ("sideways.jpg", "half_clear.png", "gray16.png")]


def test_the_pickle_decodes_like_the_bundle_in_a_plain_notebook(exported, small_data, tmp_path):
    from app.shipping.export import pickle_modules
    from app.shipping.predict import open_model

    pkl, bundle = exported
    photo = sorted((small_data / "val" / "n03028079").iterdir())[3]
    files = awkward_images(tmp_path, photo)
    assert Image.open(files[2]).mode.startswith("I;16")
    again = tmp_path / "again.pkl"
    p = subprocess.run([sys.executable, "-I", "-c", NOTEBOOK, str(pkl), str(again), *map(str, files)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(p.stdout.strip().splitlines()[-1])
    b = open_model(bundle)
    want = b.probs([b.load(f) for f in files])
    gaps = {f.name: (float(np.abs(np.asarray(t) - o).max()), float(np.abs(np.asarray(a) - o).max()))
            for f, t, a, o in zip(files, got["probs"], got["again"], want)}
    assert all(g < 1e-4 and h < 1e-4 for g, h in gaps.values()), gaps  # every file, loaded and re-exported
    for kind in got["kinds"]:  # a Path and an opened PIL image decode as the file name does
        assert np.abs(np.asarray(kind) - want[0]).max() < 1e-4
    for f in (pkl, again):
        assert not {m for m in pickle_modules(f) if m == "app" or m.startswith("app.")}


def test_the_decoder_is_built_from_the_images_module_source(monkeypatch):
    """A change to data/images.py (the other decoding rules) reaches the pickle's decoder unedited."""
    import inspect
    import pickle

    from app.data import images
    from app.shipping import notebook

    src = inspect.getsource(images)
    marked = src.replace("def open_rgb(", "DECODER_MARK = 'seen'\n\n\ndef open_rgb(")
    monkeypatch.setattr(inspect, "getsource", lambda m: marked if m is images else src)
    dec = pickle.loads(pickle.dumps(notebook.make_decoder()))
    assert type(dec).__reduce__.__globals__.get("DECODER_MARK") == "seen"  # rebuilt from the edited source

"""--resize and --balance typed on the CLI reach the run (config.json), the bundle (model.json) and
both predictors: a non-square image padded by the bundle's numpy path and by the pickle's fastai
Resize gets the same prediction."""

import json
import warnings

import numpy as np
import pytest

from ..conftest import run_cli
from ..data.test_loaders import wide_image


@pytest.mark.slow
def test_resize_pad_is_one_preprocessing_from_training_to_both_predictors(tiny_data, tmp_path):
    run = tmp_path / "run"
    run_cli("fit-one-cycle", "--data", tiny_data, "--epochs", 1, "--size", 64, "--bs", 16, "--resize", "pad",
            "--balance", "sampler", "--out", run, check=True)
    cfg = json.loads((run / "config.json").read_text())["config"]
    assert cfg["resize"] == "pad" and cfg["balance"] == "sampler"
    pkl = tmp_path / "m" / "model.pkl"
    run_cli("export", run, "--to", pkl, check=True)
    meta = json.loads((pkl.with_suffix("") / "model.json").read_text())
    assert meta["input"]["resize_method"] == "pad" and "padded to square" in meta["input"]["resize"]
    img = wide_image(tmp_path / "wide.png", 160, 64)

    from fastai.learner import load_learner

    from app.shipping.predict import BundlePredictor

    bundle = BundlePredictor(pkl.with_suffix(""))
    assert bundle.resize == "pad"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learn = load_learner(pkl, cpu=True)
    _, _, probs = learn.predict(str(img))
    want = bundle.probs([bundle.load(img)])[0]
    assert np.abs(probs.numpy() - want).max() < 0.02
    from fastai.vision.augment import Resize

    resizes = [t for t in learn.dls.valid.after_item.fs if isinstance(t, Resize)]
    assert [r.method for r in resizes] == ["pad"] and resizes[0].pad_mode == "zeros"

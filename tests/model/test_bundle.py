"""model.json is read and checked in one place (model/bundle.py read_meta): every malformed
description a user (or a broken copy) can make is one line and exit 4, never a MemoryError,
ZeroDivisionError, IndexError or an onnxruntime message."""

import json
import os

import pytest

from ..conftest import assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def bundle(fitted, tmp_path_factory):
    run, _ = fitted
    to = tmp_path_factory.mktemp("bundle") / "m.pkl"
    run_cli("export", run, "--to", to, check=True)
    return to.with_suffix("")


def _edit(meta, path, value):
    *keys, last = path.split(".")
    d = meta
    for k in keys:
        d = d[k]
    d[last] = value
    return meta


BAD = [("input.size", 0), ("input.size", -64), ("input.size", 10**9), ("input.size", "64"), ("input.size", 32),
       ("classes", []), ("classes", "tench"), ("classes", [1, 2, 3, 4]), ("normalize.mean", []),
       ("normalize.std", [0, 0, 0]), ("normalize.mean", ["a", "b", "c"]), ("input", None)]


@pytest.mark.parametrize("path,value", BAD, ids=[f"{p}={v!r}"[:40] for p, v in BAD])
def test_a_malformed_model_json_is_one_line(bundle, small_data, tmp_path, path, value):
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in ("model.onnx", "model.safetensors"):
        os.symlink(bundle / f, bad / f)
    meta = _edit(json.loads((bundle / "model.json").read_text()), path, value)
    (bad / "model.json").write_text(json.dumps(meta))
    img = next((small_data / "val" / "n03888257").iterdir())
    assert_one_line_error(run_cli("predict", bad, img), 4, "model.json", path.split(".")[-1])


@pytest.mark.parametrize("text", ["[1, 2, 3]", '"a bundle"', "{", ""])
def test_a_model_json_that_is_no_object_is_one_line(bundle, small_data, tmp_path, text):
    bad = tmp_path / "bad"
    bad.mkdir()
    os.symlink(bundle / "model.onnx", bad / "model.onnx")
    (bad / "model.json").write_text(text)
    assert_one_line_error(run_cli("predict", bad, small_data / "val"), 4, "model.json")


def test_classes_that_do_not_match_the_onnx_outputs_are_one_line(bundle, small_data, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    os.symlink(bundle / "model.onnx", bad / "model.onnx")
    meta = json.loads((bundle / "model.json").read_text())
    meta["classes"] = meta["classes"][:3]
    (bad / "model.json").write_text(json.dumps(meta))
    assert_one_line_error(run_cli("predict", bad, small_data / "val"), 4, "3 classes")

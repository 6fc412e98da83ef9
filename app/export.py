"""Export: the fastai learner pickle users know (learn.export), and beside it a bundle that
needs no pickle: model.safetensors (weights), model.json (everything needed to rebuild and
use the model) and model.onnx (dynamic batch, checked with onnx.checker and against PyTorch)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from .errors import RunError
from .runs import read_json
from .settings import models_root

BUNDLE_FORMAT = "alexnet-cli-bundle/1"
ONNX_OPSET = 17


def _targets(run: Path, to: Path | None) -> tuple[Path, Path]:
    pkl = Path(to) if to else models_root() / f"{Path(run).resolve().name}.pkl"
    if pkl.suffix != ".pkl":
        pkl = pkl.with_suffix(".pkl")
    bundle = pkl.with_suffix("")
    for p in (pkl, bundle):
        if p.exists():
            raise RunError(f"{p} already exists; nothing was overwritten (pass --to another path)")
    return pkl, bundle


def _plain_model(learn):
    m = learn.model
    m = getattr(m, "module", m)
    return getattr(m, "_orig_mod", m)


def export_learner(learn, run: Path, to: Path | None = None, ds=None, log=print) -> tuple[Path, Path]:
    """Both artefacts for a trained `learn` from `run`; neither overwrites anything."""
    from .runs import load_config

    run = Path(run)
    pkl, bundle = _targets(run, to)
    cfg, meta = load_config(run)
    pkl.parent.mkdir(parents=True, exist_ok=True)
    _export_pickle(learn, cfg, pkl, ds)
    log(f"learner pickle: {pkl}  (load_learner runs code from it: share the bundle instead)")
    write_bundle(learn, run, cfg, meta, bundle, ds)
    log(f"bundle: {bundle}  (model.safetensors, model.json, model.onnx)")
    return pkl, bundle


def _export_pickle(learn, cfg, pkl: Path, ds=None) -> None:
    """learn.export with DataBlock loaders (same vocab, size, normalisation), so the pickle is a
    stock fastai learner whose predict() reads image files, whatever loader trained it."""
    from .data import scan
    from .loaders import datablock

    ds = ds or scan(cfg.data)
    small = type(ds)(ds.root, ds.classes, [next(i for i in ds.items if i.split == s) for s in ("train", "val")])
    dls = datablock(small, cfg.replace(min_scale=1.0), cfg.size).dataloaders(ds.root, bs=2, num_workers=0)
    import torch
    from fastai.callback.fp16 import MixedPrecision

    from .callbacks import ModelInputs

    old_dls, old_model, old_cbs = learn.dls, learn.model, list(learn.cbs)
    speed = [cb for cb in learn.cbs if isinstance(cb, (ModelInputs, MixedPrecision))]
    learn.dls, learn.model = dls, _plain_model(learn).float().to(memory_format=torch.contiguous_format)
    learn.remove_cbs(speed)  # training-speed settings; the pickle is a plain fp32 learner
    try:
        learn.export(pkl.resolve())
    finally:
        learn.dls, learn.model = old_dls, old_model
        learn.add_cbs([cb for cb in old_cbs if cb in speed])


def write_bundle(learn, run: Path, cfg, meta: dict, bundle: Path, ds=None) -> Path:
    from safetensors.torch import save_file

    from .loaders import norm

    model = _plain_model(learn).eval()
    tmp = bundle.with_name(bundle.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=False)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp / "model.safetensors"))
    classes = meta.get("classes") or list(learn.dls.vocab)
    synsets = meta.get("synsets") or _synsets(classes)
    n = norm()
    mean = [float(x) for x in n.mean.flatten()]
    std = [float(x) for x in n.std.flatten()]
    diff = export_onnx(model, cfg.size, tmp / "model.onnx", _sample_inputs(ds, cfg, mean, std))
    metrics = read_json(run / "metrics.json") if (run / "metrics.json").is_file() else {}
    info = {
        "format": BUNDLE_FORMAT,
        "architecture": {
            "name": "alexnet",
            "body": "torchvision.models.alexnet().features",
            "head": "fastai.vision.learner.create_head(512, n_classes) (AdaptiveConcatPool2d, BN, dropout, linear)",
            "n_classes": len(classes),
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "state_dict_keys": len(state),
        },
        "classes": classes,
        "synsets": synsets,
        "input": {"size": cfg.size, "channels": 3, "layout": "NCHW", "dtype": "float32",
                  "resize": "centre crop to square, bilinear resize (fastai Resize)", "scale": 1 / 255},
        "normalize": {"mean": mean, "std": std},
        "onnx": {"file": "model.onnx", "opset": ONNX_OPSET, "input": "input", "output": "logits",
                 "dynamic_batch": True, "max_abs_diff_vs_torch": diff},
        "metrics": {k: metrics[k] for k in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "n", "tta")
                    if k in metrics},
        "data_fingerprint": meta.get("data_fingerprint"),
        "data": cfg.data,
        "train_config": cfg.to_dict(),
        "run": str(Path(run).resolve()),
        "versions": {**meta.get("versions", {}), **_lib_versions()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    (tmp / "model.json").write_text(json.dumps(info, indent=2))
    tmp.rename(bundle)
    return bundle


def _synsets(classes: list[str]) -> list[str]:
    from .data import IMAGENETTE

    inv = {v: k for k, v in IMAGENETTE.items()}
    return [inv.get(c, c) for c in classes]


def _lib_versions() -> dict:
    import onnx
    import onnxruntime
    import safetensors

    return {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "safetensors": safetensors.__version__}


def _sample_inputs(ds, cfg, mean, std, n: int = 16) -> np.ndarray:
    """Real validation images preprocessed exactly as the light predictor does."""
    from .images import BadImage, load_square

    arrs = []
    if ds is not None:
        for it in [i for i in ds.items if i.split == "val"][:: max(1, len(ds.items) // (4 * n))][:n]:
            try:
                arrs.append(load_square(it.path, cfg.size))
            except BadImage:
                continue
    if not arrs:
        arrs = [np.random.default_rng(0).integers(0, 256, (cfg.size, cfg.size, 3), dtype=np.uint8)]
    x = np.stack(arrs).astype(np.float32) / 255.0
    x = (x - np.array(mean, np.float32)) / np.array(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def export_onnx(model, size: int, path: Path, x: np.ndarray) -> float:
    """ONNX with a dynamic batch axis; returns the max |logit difference| vs PyTorch on `x`."""
    import onnx
    import onnxruntime as ort

    model = model.float().cpu().eval()
    dummy = torch.zeros(2, 3, size, size)
    torch.onnx.export(model, (dummy,), str(path), dynamo=False, opset_version=ONNX_OPSET,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    onnx.checker.check_model(onnx.load(str(path)))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(["logits"], {"input": x})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(x).contiguous()).numpy()
    return float(np.abs(got - want).max())


def export_run(run: Path, to: Path | None = None, which: str = "last", log=print) -> tuple[Path, Path]:
    """`python -m app export RUN`."""
    from .runs import load_run

    learn, cfg, ds = load_run(run, which=which, log=lambda *_: None)
    return export_learner(learn, Path(run), to, ds=ds, log=log)

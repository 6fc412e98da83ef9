"""Export: the fastai learner pickle users know (learn.export), and beside it a bundle that
needs no pickle: model.safetensors (weights), model.json (everything needed to rebuild and
use the model) and model.onnx (dynamic batch, checked with onnx.checker and against PyTorch on
real validation images, through the same preprocessing `predict` runs; refused above
formats.ONNX_TOLERANCE), and the other formats asked for (`--format`: OpenVINO, Core ML, torch.export,
ONNX int8; the table and their checks are in shipping/formats.py), each recorded in model.json.

The pickle is a stock fastai Learner whose image decoder is this app's (shipping/notebook.py):
only fastai, torch, PIL, NumPy and standard-library objects, so `load_learner` works in any
notebook with fastai installed, not only inside this project, and decodes files as training did.

An export goes with its run (RUN/export/<run>.pkl and RUN/export/<run>/) unless --to says
otherwise, is whole or absent: both artefacts are written under temporary names and renamed at
the end, the pickle's name taken only if free (two exports at once: one wins, the other says
so); a failure, a full disk or a kill leaves no half file and nothing that blocks the retry.
"""

from __future__ import annotations

import glob
import io
import os
import pickletools
import shutil
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ..core.errors import RunError, first_line
from ..core.files import check_writable, os_reason, publish, read_json, write_json, writing
from ..core.ranks import unwrap_model
from ..core.rundir import load_config
from ..model.bundle import BUNDLE_FORMAT, to_input
from .formats import ONNX_OPSET, export_onnx, image_arrays  # noqa: F401 (export_onnx: this module's API)

RESIZE_WORDS = {  # model.json's words for each fastai ResizeMethod (input.resize_method)
    "crop": "centre crop to square, bilinear resize (fastai Resize, method crop)",
    "squish": "the whole image stretched to square, bilinear (fastai Resize, method squish)",
    "pad": "padded to square with black, centred, then bilinear resize (fastai Resize, method pad, zeros)",
}


EXPORT_DIR = "export"


def export_targets(run: Path, to: Path | None = None, which: str = "last") -> tuple[Path, Path]:
    """(pickle, bundle) an export of `run` writes: --to, else RUN/export/<run name>[-best].pkl, the
    bundle beside it; refused now, before any work, if either exists."""
    run = Path(run)
    name = run.resolve().name + ("" if which == "last" else f"-{which}")
    pkl = Path(to) if to else run / EXPORT_DIR / f"{name}.pkl"
    if pkl.suffix != ".pkl":
        pkl = pkl.with_suffix(".pkl")
    bundle = pkl.with_suffix("")
    finish_interrupted(pkl, bundle)
    sweep_stale(pkl, bundle)
    for p in (pkl, bundle):
        if os.path.lexists(p):
            raise RunError(f"{p} already exists; nothing was overwritten (pass --to another path)")
    return pkl, bundle


def plain_model(learn):
    """The trained module alone: unwrapped (DDP), uncompiled, fp32, contiguous, on the CPU."""
    model = unwrap_model(learn.model)
    model.__dict__.pop("_compiled_call_impl", None)  # nn.Module.compile() in place: the pickle holds none of it
    return model.float().cpu().to(memory_format=torch.contiguous_format).eval()


def export_learner(learn, run: Path, to: Path | None = None, ds=None, log=print, which: str = "last",
                   formats=("onnx",)):
    """Both artefacts for a trained `learn` from `run`, or neither; nothing is overwritten. The
    bundle holds model.onnx and the other `formats` (shipping/formats.py), each checked."""
    from ..data.scan import scan_for
    from .formats import parse_formats

    run, formats = Path(run), parse_formats(formats)
    pkl, bundle = export_targets(run, to, which)
    check_writable(pkl, "export to")
    cfg, meta = load_config(run)
    ds = ds or scan_for(cfg)
    model = plain_model(learn)
    with writing(pkl.parent, "export to"):
        pkl.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(pkl, bundle)
    need_space(pkl.parent, model, formats)
    part_pkl, part_bundle = (p.with_name(f".{p.name}.part{os.getpid()}") for p in (pkl, bundle))
    try:
        with _export_errors(pkl.parent):
            export_pickle(model, cfg, ds, list(learn.dls.vocab), part_pkl, run)
            write_bundle(model, run, cfg, meta, part_bundle, ds, formats, log)
            publish(part_pkl, pkl)  # the name is taken only if free: a concurrent export stops here
            _publish_dir(part_bundle, bundle, pkl)
    finally:
        _remove(part_pkl)
        _remove(part_bundle)
    log(f"learner pickle: {pkl}  (load_learner runs code from it: share the bundle instead)")
    log(f"bundle: {bundle}  ({', '.join(sorted(p.name for p in bundle.iterdir()))})")
    return pkl, bundle


def _publish_dir(part: Path, bundle: Path, pkl: Path) -> None:
    """The finished bundle takes its name (a rename, never onto an existing folder); if it cannot,
    the pickle just published goes too, so the export is whole or absent."""
    try:
        if os.path.lexists(bundle):
            raise RunError(f"{bundle} already exists; nothing was overwritten (pass --to another path)")
        os.rename(part, bundle)
    except BaseException:
        pkl.unlink()
        raise


@contextmanager
def _export_errors(folder: Path):
    """Write failures as one line: OSError by its reason; torch's own file writer reports a full
    disk as a RuntimeError ("unexpected pos"), so the free space then says what happened."""
    try:
        yield
    except OSError as e:
        raise RunError(f"export to {folder} failed: {os_reason(e)}; nothing was written") from None
    except RuntimeError as e:
        free = shutil.disk_usage(folder).free
        why = "no space left on device" if free < 16 << 20 else first_line(e)
        raise RunError(f"export to {folder} failed: {why} ({free / 2**20:.0f} MB free); nothing was written") from None


def need_space(folder: Path, model, formats=("onnx",)) -> None:
    """The pickle, the safetensors and each format's file (the ONNX one included) hold every weight
    about once: refuse now when the folder's file system has not room for them (and 10 %)."""
    from .formats import weight_copies

    need = int(1.1 * (2 + weight_copies(formats)) * sum(p.numel() * p.element_size() for p in model.parameters()))
    free = shutil.disk_usage(folder).free
    if free < need:
        raise RunError(f"export to {folder} needs about {need / 2**20:.0f} MB, and {free / 2**20:.0f} MB are free "
                       "(no space left on device); nothing was written")


def finish_interrupted(pkl: Path, bundle: Path) -> None:
    """An export killed between its two renames left the pickle published (after the bundle was
    finished and checked) and its finished bundle under its temporary name: that bundle takes its name now, so the
    export is whole again rather than a pickle that blocks every retry."""
    import psutil

    if not os.path.isfile(pkl) or os.path.lexists(bundle):
        return
    for p in bundle.parent.glob(glob.escape(f".{bundle.name}.part") + "*"):
        pid = p.name.rpartition(".part")[2]
        if pid.isdigit() and not psutil.pid_exists(int(pid)) and (p / "model.json").is_file():
            os.rename(p, bundle)
            return


def sweep_stale(*targets: Path) -> None:
    """The temporaries (.NAME.part<pid>) of earlier exports to these targets whose process is gone
    (killed): removed. Nothing else in the folder is touched."""
    import psutil

    for t in targets:
        for p in t.parent.glob(glob.escape(f".{t.name}.part") + "*"):  # a name may hold [ ] * ?
            pid = p.name.rpartition(".part")[2]
            if pid.isdigit() and int(pid) != os.getpid() and not psutil.pid_exists(int(pid)):
                _remove(p)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif os.path.lexists(p):
        p.unlink()


def stock_dls(ds, cfg, vocab: list[str]):
    """DataLoaders made of fastai's own pieces (ItemGetter, Categorize, Resize, aug_transforms,
    Normalize with ImageNet statistics) and the app's decoder, carried as source: same vocab, size,
    normalisation and decoding as training, and nothing that imports this package, so the pickle
    loads wherever fastai does."""
    from fastai.data.block import CategoryBlock, DataBlock, MultiCategoryBlock, TransformBlock
    from fastai.data.transforms import IntToFloatTensor, RandomSplitter

    from ..data.loaders import batch_augs, norm, resize_tfm
    from .notebook import make_decoder

    picks = [next(i for i in ds.items if i.split == s) for s in ("train", "val")]
    images = TransformBlock(type_tfms=make_decoder(), batch_tfms=IntToFloatTensor)  # ImageBlock, our decoder
    labels = MultiCategoryBlock(vocab=vocab) if ds.multi else CategoryBlock(vocab=vocab, sort=False)
    block = DataBlock.from_columns(
        blocks=(images, labels), splitter=RandomSplitter(0.5, seed=0),
        item_tfms=resize_tfm(cfg, cfg.test_size()), batch_tfms=[*batch_augs(cfg, cfg.size, cached=False), norm()],
    )
    ys = [[vocab[k] for k in i.labels] if ds.multi else vocab[i.label] for i in picks]
    dls = block.dataloaders(([str(i.path) for i in picks], ys), path=ds.root, bs=2, num_workers=0)
    dls.multi = ds.multi
    return dls


def export_pickle(model, cfg, ds, vocab: list[str], pkl: Path, run: Path | None = None) -> None:
    """learn.export of a fresh stock Learner holding the trained weights (and, as a plain float,
    `learn.temperature` from `run`'s evaluation; a multi-label run's per-label thresholds as the
    loss's `thresh`); refused if the pickle would still name a module of this package. Its loss is
    the plain cross-entropy (BCE for multi-label), whatever smoothing trained it: what a notebook's
    get_preds(with_loss=True), Interpretation and ImageClassifierCleaner rank by is then -log
    p(actual), as the app's own top losses are."""
    from ..model.learner import build_learner
    from ..model.weights import Weights

    learn = build_learner(stock_dls(ds, cfg, vocab), Weights("none"), 0.0, log=lambda *_: None,
                          head_dropout=cfg.head_dropout, path=pkl.parent.resolve())
    learn.model.load_state_dict(model.state_dict())
    learn.unfreeze()
    if ds.multi:  # fastai's BCEWithLogitsLossFlat decodes with `thresh`: one per label, so predict() uses them
        learn.loss_func.thresh = torch.tensor(thresholds_of(run))
    learn.temperature = (calibration_record(Path(run)) or {}).get("temperature") if run and not ds.multi else None
    learn.export(pkl.resolve())
    foreign = [m for m in pickle_modules(pkl) if m == "app" or m.startswith("app.")]
    if foreign:
        raise RunError(f"the learner pickle would need this package to load ({', '.join(foreign)}); not written")


def pickle_modules(pkl: Path) -> set[str]:
    """Every module a fastai learner pickle imports when loaded (its GLOBAL/STACK_GLOBAL opcodes)."""
    with zipfile.ZipFile(pkl) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    mods, strings = set(), []
    for op, arg, _ in pickletools.genops(io.BytesIO(data)):
        if op.name == "GLOBAL":
            mods.add(arg.split(" ")[0])
        elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
            mods.add(strings[-2])
        if isinstance(arg, str):
            strings.append(arg)
    return mods


def write_bundle(model, run: Path, cfg, meta: dict, bundle: Path, ds, formats=("onnx",), log=lambda *_: None) -> Path:
    """model.safetensors, model.json, then each format's file, checked against `model` through
    model.json as written; model.json again, with the checks (written last: a bundle with a
    model.json is finished)."""
    from safetensors.torch import save_file

    from .formats import Context, write_and_check

    bundle.mkdir()
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(bundle / "model.safetensors"))
    info = bundle_info(model, run, cfg, meta, len(state), ds.multi)
    write_json(bundle / "model.json", info)
    mean, std = training_stats()
    shipped = torch.nn.Sequential(model, torch.nn.Sigmoid()).eval() if ds.multi else model  # multi: probabilities out
    ctx = Context(shipped, bundle, ds, cfg.test_size(), cfg.resize, mean, std)
    info["formats"] = write_and_check(ctx, formats, log)
    info["onnx"]["max_abs_diff_vs_torch"] = info["formats"]["onnx"]["check"]["max_abs_dlogit"]
    for f in info["formats"].values():
        info["versions"].update(f["versions"])
    write_json(bundle / "model.json", info)
    return bundle


def training_stats() -> tuple[list, list]:
    """The mean and std training normalised with (fastai's Normalize of both loaders)."""
    from ..data.loaders import norm

    n = norm()
    return [float(x) for x in n.mean.flatten()], [float(x) for x in n.std.flatten()]


def bundle_info(model, run: Path, cfg, meta: dict, n_keys: int, multi: bool = False) -> dict:
    """model.json: everything needed to rebuild and use the model."""
    classes = meta.get("classes") or []
    mean, std = training_stats()
    return {
        "format": BUNDLE_FORMAT,
        "architecture": _architecture(model, len(classes), n_keys),
        "classes": classes,
        "synsets": meta.get("synsets") or classes,
        "input": {"size": cfg.test_size(), "train_size": cfg.size, "channels": 3, "layout": "NCHW", "dtype": "float32",
                  "resize": RESIZE_WORDS[cfg.resize], "resize_method": cfg.resize, "scale": 1 / 255},
        "normalize": {"mean": mean, "std": std},
        "onnx": {"file": "model.onnx", "opset": ONNX_OPSET, "input": "input", "output": "logits",
                 "dynamic_batch": True, "max_abs_diff_vs_torch": None},
        "metrics": _metrics(run),
        **({"task": "multi-label", "thresholds": thresholds_of(run),
            "output": "probabilities: a sigmoid per label in the ONNX model; a label is predicted at or above its "
                      "threshold (chosen on the validation set)"} if multi else {}),
        "calibration": calibration_record(run),
        "weights": meta.get("weights_used", cfg.weights),
        "data_fingerprint": meta.get("data_fingerprint"),
        "data": cfg.data,
        "train_config": cfg.to_dict(),
        "run": str(Path(run).resolve()),
        "versions": {**meta.get("versions", {}), **_lib_versions()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _architecture(model, n_classes: int, n_keys: int) -> dict:
    return {
        "name": "alexnet",
        "body": "torchvision.models.alexnet().features",
        "head": "fastai.vision.learner.create_head(512, n_classes) (AdaptiveConcatPool2d, BN, dropout, linear)",
        "n_classes": n_classes,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "state_dict_keys": n_keys,
    }


def thresholds_of(run: Path) -> list[float]:
    """A multi-label run's per-label thresholds, as its evaluation chose them on the validation set."""
    m = read_json(run / "metrics.json") if (run / "metrics.json").is_file() else {}
    if "thresholds" not in m:
        raise RunError(f"{run} has no per-label thresholds yet: evaluate it first (python -m app evaluate {run})")
    return m["thresholds"]


def _metrics(run: Path) -> dict:
    m = read_json(run / "metrics.json") if (run / "metrics.json").is_file() else {}
    keys = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_micro", "map", "hamming_loss", "n", "tta")
    return {k: m[k] for k in keys if k in m}


def calibration_record(run: Path) -> dict | None:
    """model.json's `calibration`: the temperature evaluation fitted on the validation logits (predict
    --calibrated divides the logits by it) and the ECE before and after; None before any evaluation."""
    c = (read_json(run / "metrics.json") if (run / "metrics.json").is_file() else {}).get("calibration")
    if not isinstance(c, dict) or "temperature" not in c:
        return None
    keep = ("temperature", "ece", "ece_after", "n_bins", "n")
    return {**{k: c[k] for k in keep if k in c}, "fitted_on": "the validation set's logits (its log-probabilities)"}


def _lib_versions() -> dict:
    import onnx
    import onnxruntime
    import safetensors

    return {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "safetensors": safetensors.__version__}


def _sample_inputs(ds, size: int, mean, std, resize: str = "crop", n: int = 32) -> np.ndarray:
    """Real validation images, loaded and preprocessed exactly as `predict` does."""
    return to_input(image_arrays(ds, "val", size, resize, n), mean, std)


def export_run(run: Path, to: Path | None = None, which: str = "last", log=print,
               formats=("onnx",)) -> tuple[Path, Path]:
    """`python -m app export RUN [--format onnx,openvino,...]`."""
    from ..model.learner import load_run
    from .formats import parse_formats

    formats = parse_formats(formats)  # before loading anything: names known, extras installed
    pkl, _ = export_targets(run, to, which)
    check_writable(pkl, "export to")
    learn, cfg, ds = load_run(run, which=which, log=lambda *_: None)
    return export_learner(learn, Path(run), to, ds=ds, log=log, which=which, formats=formats)

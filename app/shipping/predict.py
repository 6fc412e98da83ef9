"""Predict: classify one image or a folder, batched, with a list of every file skipped and why.

MODEL is an exported bundle directory (onnxruntime + Pillow + NumPy: no torch, no fastai, no
pickle; starts in well under a second) or a fastai learner pickle (load_learner: runs code from
the file; batched through the learner's own test DataLoader, never a loop of learn.predict).
This module imports neither torch nor fastai at import time.
"""

from __future__ import annotations

import csv
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..core.errors import DataError, ModelError, NothingToDo, RunError, UsageError, first_line
from ..core.files import check_writable, write_new
from ..data.images import BadImage, load_square, open_rgb
from ..model.bundle import (
    calibrated,
    label_thresholds,
    labels_over,
    onnx_session,
    read_meta,
    softmax,
    temperature_of,
    to_input,
)

UNKNOWN = "unknown"  # --min-confidence: the prediction below it


def list_inputs(target: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """Image files to classify, and the files skipped by name (not images)."""
    target = Path(target)
    skipped: list[tuple[str, str]] = []
    if target.is_dir():
        from ..data.scan import walk_images

        return walk_images(target, skipped), skipped
    if target.exists() or target.is_symlink():
        return [target], skipped
    raise DataError(f"no such image or folder: {target}")


class BundlePredictor:
    """onnxruntime over model.onnx, preprocessing from model.json (the fastai validation path);
    `calibrated`: the logits divided by model.json's temperature."""

    def __init__(self, bundle: Path, calibrate: bool = False):
        import onnxruntime as ort

        self.meta = read_meta(bundle)  # checked there: classes, input size and normalisation usable
        self.temperature = _temperature(temperature_of(self.meta), bundle, calibrate)
        self.classes = self.meta["classes"]
        self.size = self.meta["input"]["size"]
        self.resize = self.meta["input"].get("resize_method", "crop")  # bundles before --resize: crop
        self.mean, self.std = self.meta["normalize"]["mean"], self.meta["normalize"]["std"]
        self.sess = onnx_session(bundle / "model.onnx", ort.get_available_providers())
        outputs = self.sess.get_outputs()[0].shape
        if len(outputs) != 2 or (isinstance(outputs[1], int) and outputs[1] != len(self.classes)):
            raise ModelError(f"{bundle / 'model.onnx'} gives {outputs[1:]} outputs per image but "
                             f"{bundle / 'model.json'} lists {len(self.classes)} classes")
        self.thresholds = label_thresholds(self.meta, self.classes, bundle / "model.json")

    def load(self, path: Path) -> np.ndarray:
        return load_square(path, self.size, self.resize)

    def probs(self, arrays: list[np.ndarray]) -> np.ndarray:
        """Class probabilities (softmax, or temperature-scaled with --calibrated); a multi-label bundle's
        ONNX model ends in a sigmoid per label."""
        out = self.logits(arrays)
        if self.thresholds is not None:
            return out
        return calibrated(out, self.temperature) if self.temperature else softmax(out)

    def logits(self, arrays: list[np.ndarray]) -> np.ndarray:
        return self.sess.run(None, {self.sess.get_inputs()[0].name: to_input(arrays, self.mean, self.std)})[0]


def _temperature(t: float | None, model: Path, calibrate: bool) -> float | None:
    """--calibrated: the model's temperature, or one line when it has none."""
    if calibrate and t is None:
        raise ModelError(f"{model} has no temperature (model.json calibration): evaluate its run and export it "
                         "again to predict --calibrated")
    return t if calibrate else None


class PicklePredictor:
    """A fastai learner pickle, batched through learn.dls.test_dl + get_preds; `calibrated`: its logits
    divided by the temperature the export stored on the learner (`learn.temperature`)."""

    def __init__(self, pkl: Path, calibrate: bool = False):
        import warnings

        from fastai.learner import load_learner
        from fastai.vision.core import PILImage

        from ..core.device import cuda_available
        from ..model.learner import quiet

        self.wrap = PILImage
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.learn = quiet(load_learner(pkl, cpu=not cuda_available()))  # our own bar counts images
        except Exception as e:
            raise ModelError(f"cannot load learner pickle {pkl}: {first_line(e)}") from None
        self.classes = list(self.learn.dls.vocab)
        thresh = getattr(self.learn.loss_func, "thresh", None)  # fastai's BCEWithLogitsLossFlat: multi-label
        self.thresholds = None if thresh is None else np.broadcast_to(np.asarray(thresh, dtype=np.float64),
                                                                     (len(self.classes),)).copy()
        self.temperature = _temperature(getattr(self.learn, "temperature", None), pkl, calibrate)

    def load(self, path: Path):
        return self.wrap(open_rgb(path))  # decoded the app's way once; fastai's item transforms resize it

    def probs(self, images: list) -> np.ndarray:
        from fastcore.basics import noop

        dl = self.learn.dls.test_dl(images, bs=len(images), num_workers=0)
        if self.temperature:
            z, _ = self.learn.get_preds(dl=dl, act=noop)
            return calibrated(z.float().numpy(), self.temperature)
        p, _ = self.learn.get_preds(dl=dl)
        return p.numpy()


def open_model(model: Path, calibrate: bool = False):
    model = Path(model)
    if model.is_dir():
        return BundlePredictor(model, calibrate)
    if model.is_file():
        if model.suffix != ".pkl":
            raise ModelError(f"{model} is neither a bundle directory nor a .pkl learner")
        return PicklePredictor(model, calibrate)
    raise ModelError(f"model not found: {model}")


def check_outputs(csv_path: Path | None, jsonl: Path | None, cam_dir: Path | None = None) -> None:
    """Before any work: two different files, neither there yet, both in folders that can be written;
    --cam's folder new or empty."""
    if csv_path and jsonl and os.path.realpath(csv_path) == os.path.realpath(jsonl):
        raise UsageError(f"--csv and --jsonl name the same file ({csv_path}); give each its own path")
    if cam_dir is not None and (Path(cam_dir).is_file() or (Path(cam_dir).is_dir() and any(Path(cam_dir).iterdir()))):
        raise RunError(f"--cam {cam_dir} exists and is not an empty folder; nothing was overwritten (choose another)")
    if cam_dir is not None:
        check_writable(Path(cam_dir) / "probe", "write Grad-CAM overlays in")
    for path in (csv_path, jsonl):
        if path is not None and os.path.lexists(path):
            raise RunError(f"{path} already exists; nothing was overwritten (choose another path)")
        if path is not None:
            check_writable(path)


def predict_path(model: Path, target: Path, top_k: int = 3, csv_path: Path | None = None,
                 jsonl: Path | None = None, bs: int = 64, console=None, progress_factory=None,
                 calibrate: bool = False, min_confidence: float | None = None, cam_dir: Path | None = None) -> list[dict]:
    """Classify `target` (file or folder); prints a table, optionally writes CSV / JSON lines, and with
    `cam_dir` one Grad-CAM overlay per image; `calibrate`: temperature-scaled probabilities;
    `min_confidence`: the prediction is `unknown` where the top probability is below it."""
    check_outputs(csv_path, jsonl, cam_dir)
    files, skipped = list_inputs(target)
    pred = open_model(model, calibrate)
    cams = _cam_writer(model, pred, cam_dir, target)
    k = min(top_k, len(pred.classes))
    results: list[dict] = []
    ctx = progress_factory() if progress_factory and len(files) > bs else None
    task = ctx.add_task("predicting", total=len(files)) if ctx else None
    with ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool, (ctx or _Null()):
        for start in range(0, len(files), bs):
            loaded = list(pool.map(lambda p: _load(pred, p), files[start : start + bs]))
            ok = [(p, a) for p, a, why in loaded if why is None]
            skipped += [(str(p), why) for p, _, why in loaded if why is not None]
            if ok:
                probs = pred.probs([a for _, a in ok])
                results += [_result(p, pr, pred, k, min_confidence) for (p, _), pr in zip(ok, probs)]
                if cams:
                    cams.write([p for p, _ in ok], probs.argmax(1))
            if ctx:
                ctx.advance(task, len(loaded))
    if results and csv_path:  # written (whole, under a free name) before anything is printed
        write_new(csv_path, lambda f: _write_csv(results, f, k))
    if results and jsonl:
        write_new(jsonl, lambda f: _write_jsonl(results, f))
    _print(results, skipped, console, many=bool(csv_path or jsonl), base=Path(target) if Path(target).is_dir() else None)
    if cams and console:
        console.print(f"Grad-CAM: {cams.written} overlay(s) in {cam_dir}", markup=False)
    if not results:
        raise NothingToDo(f"no readable image in {target} ({len(skipped)} skipped)")
    return results


def _load(pred, p):
    try:
        return p, pred.load(p), None
    except BadImage as e:
        return p, None, str(e)


def _result(path, pr, pred, k: int, min_confidence: float | None) -> dict:
    """One image: its top-k classes; a multi-label model's: also every label at or above its threshold;
    with --min-confidence its prediction (`unknown` below it)."""
    order = np.argsort(-pr)[:k]
    r = {"path": str(path), "top": [(pred.classes[i], float(pr[i])) for i in order]}
    if pred.thresholds is not None:
        r["labels"] = [(pred.classes[i], float(pr[i])) for i in labels_over(pr, pred.thresholds)]
    if min_confidence is not None:
        r["prediction"] = pred.classes[order[0]] if pr[order[0]] >= min_confidence else UNKNOWN
    return r


def _cam_writer(model: Path, pred, cam_dir: Path | None, target: Path):
    """--cam DIR: the torch model beside the predictor (a bundle's safetensors, a pickle's learner)."""
    if cam_dir is None:
        return None
    from .overlays import CamWriter

    return CamWriter.open(Path(model), pred, Path(cam_dir), Path(target))


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def _write_jsonl(results, f) -> None:
    for r in results:
        row = {"path": r["path"], "predictions": [{"class": c, "probability": p} for c, p in r["top"]]}
        if "labels" in r:
            row["labels"] = [{"class": c, "probability": p} for c, p in r["labels"]]
        if "prediction" in r:
            row["prediction"] = r["prediction"]
        f.write(json.dumps(row))
        f.write("\n")


def _write_csv(results, f, k: int) -> None:
    """path, [prediction (with --min-confidence),] class_1, prob_1, ..."""
    w = csv.writer(f)
    multi = bool(results) and "labels" in results[0]
    with_pred = bool(results) and "prediction" in results[0]
    w.writerow(["path"] + ["labels"] * multi + ["prediction"] * with_pred
               + [c for i in range(1, k + 1) for c in (f"class_{i}", f"prob_{i}")])
    for r in results:
        labels = [";".join(c for c, _ in r["labels"])] if multi else []
        w.writerow([r["path"]] + labels + ([r["prediction"]] if with_pred else [])
                   + [v for c, p in r["top"] for v in (c, f"{p:.6f}")])


def _print(results, skipped, console, many: bool, base: Path | None = None) -> None:
    """The table; every path and class name as a rich Text, so `[...]` in them is shown as typed."""
    if console is None:
        return
    from rich.table import Table
    from rich.text import Text

    shown = results[:20] if many and len(results) > 20 else results
    t = None
    if len(results) == 1:
        r = results[0]
        t = Table(title=Text(r["path"] + (f": {r['prediction']}" if "prediction" in r else "")), title_justify="left")
        t.add_column("class")
        t.add_column("probability", justify="right")
        if "labels" in r:
            t.add_column("predicted (its threshold)")
        chosen = {c for c, _ in r.get("labels", [])}
        for c, p in r["top"] if "labels" not in r else sorted({*r["top"], *r["labels"]}, key=lambda x: -x[1]):
            t.add_row(Text(c), f"{p:.4f}", *(["yes" if c in chosen else ""] if "labels" in r else []))
    elif results:
        t = Table(title=Text(str(base)) if base else None, title_justify="left")
        t.add_column("image", overflow="fold")
        t.add_column("prediction")
        t.add_column("probability", justify="right")
        t.add_column("next", style="dim")
        for r in shown:
            c, p = r["top"][0]
            rest = ", ".join(f"{c2} {p2:.2f}" for c2, p2 in r["top"][1:])
            if "labels" in r:  # multi-label: the label set, each above its own threshold
                c, p = "; ".join(c2 for c2, _ in r["labels"]) or "(none)", max([p2 for _, p2 in r["labels"]] or [0.0])
            name = str(Path(r["path"]).relative_to(base)) if base else r["path"]
            t.add_row(Text(name), Text(r.get("prediction", c)), f"{p:.4f}", Text(rest))
    if t is not None:
        console.print(t)
    if len(shown) < len(results):
        console.print(f"... {len(results) - len(shown)} more in the output file")
    console.print(f"classified {len(results)} image(s), skipped {len(skipped)}")
    for p, why in skipped:
        console.print(f"  skipped {p}: {why}", soft_wrap=True, markup=False)

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

from ..core.errors import DataError, ModelError, NothingToDo, RunError, first_line
from ..data.images import RESIZE, BadImage, load_square, open_rgb
from ..model.bundle import onnx_session, read_meta, softmax, to_input


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
    """onnxruntime over model.onnx, preprocessing from model.json (the fastai validation path)."""

    def __init__(self, bundle: Path):
        import onnxruntime as ort

        self.meta = read_meta(bundle)
        try:
            self.classes = self.meta["classes"]
            self.size = int(self.meta["input"]["size"])
            self.resize = self.meta["input"].get("resize_method", "crop")  # bundles before --resize: crop
            if self.resize not in RESIZE:
                raise KeyError(f"input.resize_method {self.resize!r}")
            self.mean, self.std = self.meta["normalize"]["mean"], self.meta["normalize"]["std"]
        except (KeyError, TypeError) as e:
            raise ModelError(f"{bundle / 'model.json'} is not a valid bundle description (missing {e})") from None
        self.sess = onnx_session(bundle / "model.onnx", ort.get_available_providers())

    def load(self, path: Path) -> np.ndarray:
        return load_square(path, self.size, self.resize)

    def probs(self, arrays: list[np.ndarray]) -> np.ndarray:
        return softmax(self.logits(arrays))

    def logits(self, arrays: list[np.ndarray]) -> np.ndarray:
        return self.sess.run(None, {self.sess.get_inputs()[0].name: to_input(arrays, self.mean, self.std)})[0]


class PicklePredictor:
    """A fastai learner pickle, batched through learn.dls.test_dl + get_preds."""

    def __init__(self, pkl: Path):
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

    def load(self, path: Path):
        return self.wrap(open_rgb(path))  # decoded the app's way once; fastai's item transforms resize it

    def probs(self, images: list) -> np.ndarray:
        dl = self.learn.dls.test_dl(images, bs=len(images), num_workers=0)
        p, _ = self.learn.get_preds(dl=dl)
        return p.numpy()


def open_model(model: Path):
    model = Path(model)
    if model.is_dir():
        return BundlePredictor(model)
    if model.is_file():
        if model.suffix != ".pkl":
            raise ModelError(f"{model} is neither a bundle directory nor a .pkl learner")
        return PicklePredictor(model)
    raise ModelError(f"model not found: {model}")


def _check_output(path: Path | None) -> None:
    if path is not None and Path(path).exists():
        raise RunError(f"{path} already exists; nothing was overwritten (choose another path)")


def predict_path(model: Path, target: Path, top_k: int = 3, csv_path: Path | None = None,
                 jsonl: Path | None = None, bs: int = 64, console=None, progress_factory=None) -> list[dict]:
    """Classify `target` (file or folder); prints a table, optionally writes CSV / JSON lines."""
    _check_output(csv_path)
    _check_output(jsonl)
    files, skipped = list_inputs(target)
    pred = open_model(model)
    k = min(top_k, len(pred.classes))
    results: list[dict] = []

    def load(p):
        try:
            return p, pred.load(p), None
        except BadImage as e:
            return p, None, str(e)

    ctx = progress_factory() if progress_factory and len(files) > bs else None
    task = ctx.add_task("predicting", total=len(files)) if ctx else None
    with ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool, (ctx or _Null()):
        for start in range(0, len(files), bs):
            loaded = list(pool.map(load, files[start : start + bs]))
            ok = [(p, a) for p, a, why in loaded if why is None]
            skipped += [(str(p), why) for p, _, why in loaded if why is not None]
            if ok:
                probs = pred.probs([a for _, a in ok])
                for (p, _), pr in zip(ok, probs):
                    order = np.argsort(-pr)[:k]
                    results.append({"path": str(p), "top": [(pred.classes[i], float(pr[i])) for i in order]})
            if ctx:
                ctx.advance(task, len(loaded))
    _print(results, skipped, console, many=bool(csv_path or jsonl), base=Path(target) if Path(target).is_dir() else None)
    if csv_path:
        _write_csv(results, csv_path, k)
    if jsonl:
        _write_jsonl(results, jsonl)
    if not results:
        raise NothingToDo(f"no readable image in {target} ({len(skipped)} skipped)")
    return results


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def _write_jsonl(results, path: Path) -> None:
    with open(path, "w") as f:
        for r in results:
            f.write(json.dumps({"path": r["path"], "predictions": [{"class": c, "probability": p} for c, p in r["top"]]}))
            f.write("\n")


def _write_csv(results, path: Path, k: int) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path"] + [c for i in range(1, k + 1) for c in (f"class_{i}", f"prob_{i}")])
        for r in results:
            w.writerow([r["path"]] + [v for c, p in r["top"] for v in (c, f"{p:.6f}")])


def _print(results, skipped, console, many: bool, base: Path | None = None) -> None:
    if console is None:
        return
    from rich.table import Table

    shown = results[:20] if many and len(results) > 20 else results
    if not results:
        t = None
    elif len(results) == 1:
        t = Table(title=results[0]["path"], title_justify="left")
        t.add_column("class")
        t.add_column("probability", justify="right")
        for c, p in results[0]["top"]:
            t.add_row(c, f"{p:.4f}")
    else:
        t = Table(title=f"{base}" if base else None, title_justify="left")
        t.add_column("image", overflow="fold")
        t.add_column("prediction")
        t.add_column("probability", justify="right")
        t.add_column("next", style="dim")
        for r in shown:
            c, p = r["top"][0]
            rest = ", ".join(f"{c2} {p2:.2f}" for c2, p2 in r["top"][1:])
            name = str(Path(r["path"]).relative_to(base)) if base else r["path"]
            t.add_row(name, c, f"{p:.4f}", rest)
    if t is not None:
        console.print(t)
    if len(shown) < len(results):
        console.print(f"... {len(results) - len(shown)} more in the output file")
    console.print(f"classified {len(results)} image(s), skipped {len(skipped)}")
    for p, why in skipped:
        console.print(f"  skipped {p}: {why}", soft_wrap=True, markup=False)

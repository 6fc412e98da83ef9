"""The pickle-free model bundle's format: model.json read and checked, and the one preprocessing
function (decoded square uint8 images -> normalised NCHW float32) that both `predict` and the
export's ONNX check run. Imports neither torch nor fastai."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..core.errors import ModelError, first_line


def onnx_session(onnx_file: Path, available=("CPUExecutionProvider",)):
    """onnxruntime on the GPU when its CUDA provider is installed, else the CPU."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    try:
        return ort.InferenceSession(str(onnx_file), opts, providers=providers)
    except Exception as e:
        raise ModelError(f"cannot load {onnx_file}: {first_line(e)}") from None


FORMAT = "alexnet-cli-bundle"


VERSION = 1


BUNDLE_FORMAT = f"{FORMAT}/{VERSION}"


def read_meta(bundle: Path, need: tuple[str, ...] = ("model.onnx",)) -> dict:
    """model.json of a bundle this app can read (and the files `need` names beside it); one line
    naming the problem otherwise. The one place a bundle's format is read and checked."""
    meta_file = Path(bundle) / "model.json"
    if not meta_file.is_file() or not all((Path(bundle) / f).is_file() for f in need):
        raise ModelError(f"{bundle} is not a model bundle (needs model.json and {' and '.join(need)})")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError(f"a JSON {type(meta).__name__}, not an object")
        name, _, version = str(meta.get("format", "")).partition("/")
        version = int(version)
    except (ValueError, TypeError, OSError) as e:
        raise ModelError(f"{meta_file} is not a valid bundle description ({e})") from None
    if name != FORMAT:
        raise ModelError(f"{meta_file}: format {meta.get('format')!r} is not an {FORMAT} bundle")
    if version > VERSION:
        raise ModelError(f"{bundle} is a {FORMAT}/{version} bundle, newer than this app reads ({BUNDLE_FORMAT}): "
                         "update alexnet-cli")
    problem = _problem(meta, preprocessing="model.onnx" in need)
    if problem:
        raise ModelError(f"{meta_file} is not a valid bundle description: {problem}")
    return meta


RESIZE_METHODS = ("crop", "squish", "pad")  # fastai's ResizeMethod; data/images.py RESIZE implements them
MAX_SIZE = 2048  # input sides above this are not AlexNet bundles this app wrote (and would exhaust memory)


def _problem(meta: dict, preprocessing: bool) -> str | None:
    """What in model.json a bundle cannot be used with, or None: its classes always; its input size
    and normalisation when it is to predict (`preprocessing`), not when only its weights are read."""
    from ..core.config import MIN_SIZE

    classes, inp, norm = meta.get("classes"), meta.get("input"), meta.get("normalize")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
        return f"classes must be a non-empty list of names, not {classes!r}"[:200]
    if not preprocessing:
        return None
    size = inp.get("size") if isinstance(inp, dict) else None
    if not isinstance(size, int) or isinstance(size, bool) or not MIN_SIZE <= size <= MAX_SIZE:
        return f"input.size must be a whole number of pixels from {MIN_SIZE} to {MAX_SIZE}, not {size!r}"
    for key in ("mean", "std"):
        v = norm.get(key) if isinstance(norm, dict) else None
        if not (isinstance(v, list) and len(v) == 3 and all(_number(x) for x in v)):
            return f"normalize.{key} must be 3 numbers (one per RGB channel), not {v!r}"
    if any(x <= 0 for x in norm["std"]):
        return f"normalize.std must be positive, not {norm['std']!r}"
    if inp.get("resize_method", "crop") not in RESIZE_METHODS:  # absent in bundles before --resize: crop
        return f"input.resize_method must be one of {', '.join(RESIZE_METHODS)}, not {inp['resize_method']!r}"
    return None


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)


def to_input(arrays: list[np.ndarray], mean, std) -> np.ndarray:
    """(size, size, 3) uint8 images -> (N, 3, size, size) float32, scaled to 0..1 and normalised."""
    x = np.stack(arrays).astype(np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def fit_temperature(logits, targets, bounds=(0.05, 20.0)) -> float:
    """Temperature scaling (Guo et al. 2017): the T > 0 whose softmax(logits / T) has the lowest
    negative log-likelihood on these labels (scipy's bounded search over log T). Log-probabilities
    work as logits: they differ by one constant per image, which softmax ignores."""
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    z, y = np.asarray(logits, np.float64), np.asarray(targets, np.int64)

    def nll(log_t: float) -> float:
        return float(-log_softmax(z / np.exp(log_t), axis=1)[np.arange(len(y)), y].mean())

    r = minimize_scalar(nll, bounds=tuple(np.log(bounds)), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(r.x))


def calibrated(logits: np.ndarray, temperature: float | None) -> np.ndarray:
    """softmax(logits / T): the probabilities temperature scaling gives (T None or 1: as they were)."""
    return softmax(np.asarray(logits, np.float64) / float(temperature or 1.0)).astype(np.float32)


def temperature_of(meta: dict) -> float | None:
    """The temperature model.json stores (calibration.temperature), or None for a bundle without one."""
    t = (meta.get("calibration") or {}).get("temperature") if isinstance(meta.get("calibration"), dict) else None
    return float(t) if _number(t) and t > 0 else None


def label_thresholds(meta: dict, classes: list[str], where) -> np.ndarray | None:
    """A multi-label model's per-label thresholds (None: one class per image); one line when they do
    not match its classes."""
    if meta.get("task") != "multi-label":
        return None
    t = meta.get("thresholds")
    if not isinstance(t, list) or len(t) != len(classes) or not all(isinstance(x, (int, float)) for x in t):
        raise ModelError(f"{where}: a multi-label model needs one threshold per class ({len(classes)}), found "
                         f"{len(t) if isinstance(t, list) else t!r}")
    return np.asarray(t, dtype=np.float64)


def labels_over(p: np.ndarray, thresholds: np.ndarray) -> list[int]:
    """One image's labels from a multi-label model: each at or above its own threshold, likeliest first."""
    return [int(i) for i in np.argsort(-p) if p[i] >= thresholds[i]]

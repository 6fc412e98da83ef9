"""The model and its weights: torchvision AlexNet under fastai's vision_learner head.

`--weights` is `imagenet` (torchvision's download, fastai's pretrained=True path), `none`
(random init) or a path: a torchvision-format AlexNet state dict (.pth) or an exported bundle
directory. Weights files are read with weights_only=True or safetensors: no pickle runs.
A file that does not fit is refused with what does not match; nothing falls back silently.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from .errors import ModelError, NetworkError

IMAGENET_FILE = "alexnet-owt-7be5be79.pth"


def alexnet_arch():
    from torchvision.models import alexnet

    return alexnet


def _unwrap(sd):
    """Accept {'state_dict': ...}, {'model': ...} and DataParallel 'module.' prefixes."""
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise ModelError("weights file does not hold a state dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def check_weights(weights: str | None) -> None:
    """Up-front check of --weights (no torch import): a path must exist."""
    if weights and weights not in ("none", "imagenet") and not Path(weights).exists():
        raise ModelError(f"weights file not found: {weights}")


def read_state_dict(path: str | Path) -> dict:
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return _unwrap(torch.load(path, map_location="cpu", weights_only=True))
    except ModelError:
        raise
    except Exception as e:
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise ModelError(f"cannot read weights file {path}: {first}") from None


def _mismatch(expected: dict, given: dict, what: str, src: Path, show=lambda k: k) -> None:
    """ModelError naming (in the file's own key names, via `show`) what is missing or mis-shaped."""
    missing = [show(k) for k in expected if k not in given]
    shapes = [
        f"{show(k)} is {tuple(given[k].shape)}, expected {tuple(v.shape)}"
        for k, v in expected.items()
        if k in given and tuple(given[k].shape) != tuple(v.shape)
    ]
    if missing or shapes:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s): {', '.join(missing[:4])}")
        if shapes:
            parts.append(f"wrong shape: {'; '.join(shapes[:3])}")
        raise ModelError(f"{src} does not fit {what}: {' | '.join(parts)}")


def load_torchvision_body(model, path: str | Path) -> int:
    """Copy torchvision AlexNet 'features.*' weights into the learner's body; returns tensors copied."""
    sd = read_state_dict(path)
    body = model[0]
    expected = body.state_dict()
    given = {"0." + k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")}
    if not given:
        sample = ", ".join(list(sd)[:3]) or "nothing"
        raise ModelError(
            f"{path} is not a torchvision AlexNet state dict (no 'features.*' keys; found {sample})"
        )
    _mismatch(expected, given, "AlexNet's convolutional body", Path(path), show=lambda k: "features." + k[2:])
    body.load_state_dict({k: given[k] for k in expected})
    return len(expected)


def load_bundle(model, bundle: str | Path, vocab: list[str]) -> str:
    """Weights from an exported bundle: whole model when classes match, else the body only."""
    bundle = Path(bundle)
    from safetensors.torch import load_file

    st = bundle / "model.safetensors"
    if not st.is_file():
        raise ModelError(f"{bundle} is not a model bundle (no model.safetensors)")
    sd = load_file(str(st))
    meta = json.loads((bundle / "model.json").read_text()) if (bundle / "model.json").is_file() else {}
    if meta.get("classes") == list(vocab):
        _mismatch(model.state_dict(), sd, "this model", st)
        model.load_state_dict(sd)
        return "whole model (same classes)"
    body = {k[2:]: v for k, v in sd.items() if k.startswith("0.")}
    _mismatch(model[0].state_dict(), body, "AlexNet's convolutional body", st)
    model[0].load_state_dict(body)
    return "body only (different classes: new head)"


def imagenet_error(e: Exception) -> NetworkError:
    import torch

    reason = str(getattr(e, "reason", "") or e).strip().splitlines()
    reason = reason[0][:100] if reason else type(e).__name__
    return NetworkError(
        f"ImageNet weights need {IMAGENET_FILE} from download.pytorch.org, and the download "
        f"failed ({reason}); put the file in {torch.hub.get_dir()}/checkpoints/ or pass "
        "--weights PATH to a torchvision AlexNet state dict"
    )


def make_loss(label_smoothing: float):
    from fastai.losses import CrossEntropyLossFlat, LabelSmoothingCrossEntropyFlat

    if label_smoothing > 0:
        return LabelSmoothingCrossEntropyFlat(eps=label_smoothing)
    return CrossEntropyLossFlat()


def quiet(learn, always: bool = False):
    """fastprogress bars only on a terminal: piped output (CI, logs) stays one line per message."""
    if always or not sys.stdout.isatty() or os.environ.get("APP_PROGRESS") == "0":
        from fastai.callback.progress import ProgressCallback

        learn.remove_cb(ProgressCallback)
    return learn


def build_learner(dls, weights: str = "none", label_smoothing: float = 0.0, wd=None, path=".",
                  cbs=None, metrics=None, log=print, ps: float = 0.5):
    """vision_learner(dls, alexnet) with the requested weights; never silently random."""
    import fastai.callback.all  # noqa: F401  (adds fit_one_cycle, fine_tune, lr_find, to_fp16)
    from fastai.metrics import F1Score, accuracy
    from fastai.vision.learner import vision_learner

    kw = dict(
        loss_func=make_loss(label_smoothing), metrics=metrics or [accuracy, F1Score(average="macro")],
        path=path, model_dir="models", cbs=cbs, wd=wd, ps=ps,
    )
    if weights == "imagenet":
        try:
            learn = vision_learner(dls, alexnet_arch(), pretrained=True, **kw)
        except (OSError, RuntimeError, ValueError) as e:  # URLError is an OSError
            raise imagenet_error(e) from None
        log("weights: ImageNet (torchvision AlexNet_Weights.IMAGENET1K_V1)")
        return learn
    learn = vision_learner(dls, alexnet_arch(), pretrained=False, **kw)
    if weights in ("none", "", None):
        log("weights: random init")
        return learn
    p = Path(weights)
    if p.is_dir():
        what = load_bundle(learn.model, p, list(dls.vocab))
        log(f"weights: bundle {p} ({what})")
    else:
        n = load_torchvision_body(learn.model, p)
        log(f"weights: {p} ({n} body tensors)")
    return learn

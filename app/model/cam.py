"""Where the model looks: a gradient-weighted class activation map (pytorch-grad-cam) of AlexNet's last
convolution, for a trained Learner, a run's checkpoint or a bundle's safetensors, on image files
preprocessed exactly as the bundle's `predict` does (model/bundle.py: square, resized, normalised).

The map is pytorch-grad-cam's LayerCAM (Jiang et al. 2021: each place weighted by its own positive
gradient), not plain GradCAM (one weight per channel, the gradient averaged over the map): on squares
at random places plain GradCAM's peak lay inside the square for 28 % of images (5 % of its maps blank),
LayerCAM's for 93 % (benchmarks/runs/gradcam-method-probe.json; `bench --audit` measures it again on
other squares). CAM_METHOD names it.

The target is the ReLU right after the body's last Conv2d: that ReLU works in place, so it rewrites
the convolution's output tensor, and a hook on the convolution itself would read post-ReLU
activations on a CPU (where pytorch-grad-cam's `.cpu()` is no copy) and pre-ReLU ones on a GPU.
Needs the audit extra (`pip install .[audit]`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.errors import ModelError, UsageError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # fastai's imagenet_stats
CAM_METHOD = "LayerCAM"  # a class of pytorch_grad_cam (GradCAM, GradCAMPlusPlus, HiResCAM, ...)


def grad_cam_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("pytorch_grad_cam") is not None


def require_grad_cam():
    """pytorch-grad-cam, or one line saying how to install it."""
    try:
        import pytorch_grad_cam
    except ImportError:
        raise UsageError("Grad-CAM needs pytorch-grad-cam: pip install .[audit]") from None
    return pytorch_grad_cam


def target_layer(model):
    """The module that outputs AlexNet's last convolution's activation map (its in-place ReLU)."""
    import torch.nn as nn

    body = list(model[0].modules())
    last = max(i for i, m in enumerate(body) if isinstance(m, nn.Conv2d))
    after = body[last + 1] if last + 1 < len(body) else None
    return after if isinstance(after, nn.ReLU) else body[last]


class CamModel:
    """A classifier in eval mode on the CPU with what its inputs need: size, resize method, statistics."""

    def __init__(self, model, classes: list[str], size: int, resize: str = "crop", mean=IMAGENET_MEAN,
                 std=IMAGENET_STD):
        self.model = model.float().cpu().eval()
        self.classes, self.size, self.resize, self.mean, self.std = list(classes), size, resize, mean, std

    @classmethod
    def from_learner(cls, learn, size: int, resize: str = "crop") -> CamModel:
        import copy

        from ..core.ranks import unwrap_model

        model = copy.deepcopy(unwrap_model(learn.model))  # the learner's own model stays where it was
        model.__dict__.pop("_compiled_call_impl", None)
        return cls(model, list(learn.dls.vocab), size, resize)

    @classmethod
    def from_run(cls, run: str | Path, which: str = "last") -> CamModel:
        """A run's checkpoint in fastai's AlexNet model, without its dataset (nothing scanned)."""
        from ..core.rundir import checkpoint_path, load_config
        from .weights import torch_load

        cfg, meta = load_config(run)
        model = _alexnet(len(meta["classes"]), cfg.head_dropout)
        model.load_state_dict(torch_load(checkpoint_path(Path(run), which))["model"])
        return cls(model, meta["classes"], cfg.test_size(), cfg.resize)

    @classmethod
    def from_bundle(cls, bundle: str | Path) -> CamModel:
        """A bundle's model.safetensors (the torch weights beside model.onnx)."""
        from safetensors.torch import load_file

        from .bundle import read_meta

        meta = read_meta(Path(bundle), need=("model.onnx", "model.safetensors"))
        model = _alexnet(len(meta["classes"]), meta.get("train_config", {}).get("head_dropout", 0.5))
        try:
            model.load_state_dict(load_file(str(Path(bundle) / "model.safetensors")))
        except RuntimeError as e:
            raise ModelError(f"{bundle}/model.safetensors does not fit AlexNet with {len(meta['classes'])} classes: "
                             f"{str(e).splitlines()[0][:160]}") from None
        inp, norm = meta["input"], meta["normalize"]
        return cls(model, meta["classes"], inp["size"], inp.get("resize_method", "crop"), norm["mean"], norm["std"])

    def load(self, path) -> np.ndarray:
        from ..data.images import load_square

        return load_square(path, self.size, self.resize)

    def heatmaps(self, arrays: list[np.ndarray], targets: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(Grad-CAM maps in [0, 1] at the input size, (N, S, S); the softmax probabilities, (N, C)) of
        the images (each (S, S, 3) uint8) for class `targets` (None: each image's predicted class)."""
        import torch

        cams = require_grad_cam()
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        from .bundle import to_input

        x = torch.from_numpy(to_input(arrays, self.mean, self.std))
        with torch.no_grad(), torch.compiler.set_stance("force_eager"):
            probs = torch.softmax(self.model(x), 1).numpy()
        targets = list(probs.argmax(1)) if targets is None else list(targets)
        with getattr(cams, CAM_METHOD)(model=self.model, target_layers=[target_layer(self.model)]) as cam, \
                torch.compiler.set_stance("force_eager"):  # hooks fire (a compiled graph skips them)
            maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets])
        return np.nan_to_num(maps.astype(np.float32)), probs

    def overlays(self, arrays: list[np.ndarray], targets: list[int] | None = None, bs: int = 32):
        """[(overlay (S, S, 3) uint8, class index shown, its probability)] for each image."""
        from pytorch_grad_cam.utils.image import show_cam_on_image

        out = []
        for start in range(0, len(arrays), bs):
            part = arrays[start : start + bs]
            tgt = None if targets is None else targets[start : start + bs]
            maps, probs = self.heatmaps(part, tgt)
            for i, (a, m) in enumerate(zip(part, maps)):
                c = int(probs[i].argmax()) if tgt is None else int(tgt[i])
                out.append((show_cam_on_image(a.astype(np.float32) / 255, m, use_rgb=True, image_weight=0.55), c,
                            float(probs[i][c])))
        return out


def _alexnet(n_classes: int, head_dropout: float):
    """fastai's vision_learner model for AlexNet (the same body and head, so a checkpoint fits)."""
    from fastai.vision.learner import create_vision_model
    from torchvision.models import alexnet

    return create_vision_model(alexnet, n_classes, pretrained=False, ps=head_dropout)


def peak(cam_map: np.ndarray) -> tuple[int, int]:
    """(row, column) of a map's maximum."""
    r, c = np.unravel_index(int(np.argmax(cam_map)), cam_map.shape)
    return int(r), int(c)

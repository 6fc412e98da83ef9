"""`predict --cam DIR`: one Grad-CAM overlay per image (where the model looked for the class it
predicted), as DIR/<the image's path under the target>.jpg, each written whole. Grad-CAM needs the
torch model: a bundle's model.safetensors (the bundle's preprocessing, from model.json) or a
pickle's learner (its Resize and Normalize); so --cam imports torch, where plain bundle predict
does not."""

from __future__ import annotations

import os
from pathlib import Path

from ..core.errors import ModelError
from ..core.files import publish


class CamWriter:
    def __init__(self, cam, folder: Path, base: Path):
        self.cam, self.folder, self.base, self.written, self.taken = cam, folder, base, 0, set()

    @classmethod
    def open(cls, model: Path, pred, folder: Path, target: Path) -> CamWriter:
        from ..model.cam import CamModel, require_grad_cam

        require_grad_cam()
        if model.is_dir():
            if not (model / "model.safetensors").is_file():
                raise ModelError(f"--cam needs the torch weights beside the ONNX model: {model}/model.safetensors "
                                 "is missing (export the run again, or pass its .pkl)")
            cam = CamModel.from_bundle(model)
        else:
            cam = _from_pickle(pred.learn)
        return cls(cam, folder, target if target.is_dir() else target.parent)

    def write(self, paths: list[Path], classes) -> None:
        """The overlays of these images for these class indices (the predictions)."""
        from PIL import Image

        from ..data.images import BadImage

        arrays, kept = [], []
        for p, c in zip(paths, classes):
            try:
                arrays.append(self.cam.load(p))
                kept.append((p, int(c)))
            except BadImage:
                continue
        if not kept:
            return
        for (p, _), (overlay, _, _) in zip(kept, self.cam.overlays(arrays, [c for _, c in kept])):
            out = self._name(Path(p))
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
            Image.fromarray(overlay).save(tmp, format="JPEG", quality=88)
            publish(tmp, out)
            self.written += 1

    def _name(self, p: Path) -> Path:
        try:
            rel = p.relative_to(self.base)
        except ValueError:
            rel = Path(p.name)
        out = self.folder / rel.with_name(rel.name + ".jpg")
        n = 1
        while str(out) in self.taken or os.path.lexists(out):  # two inputs of one name: a free one
            n += 1
            out = self.folder / rel.with_name(f"{rel.name}-{n}.jpg")
        self.taken.add(str(out))
        return out


def _from_pickle(learn):
    """A pickle's model with its learner's own preprocessing: fastai's Resize (size, method) and Normalize."""
    from fastai.data.transforms import Normalize
    from fastai.vision.augment import Resize

    from ..model.cam import CamModel

    resize = next((t for t in learn.dls.after_item.fs if isinstance(t, Resize)), None)
    norm = next((t for t in learn.dls.after_batch.fs if isinstance(t, Normalize)), None)
    if resize is None or norm is None:
        raise ModelError("--cam: this learner pickle has no Resize and Normalize to prepare images with")
    size = resize.size[0] if isinstance(resize.size, tuple) else resize.size
    return CamModel(learn.model, list(learn.dls.vocab), int(size), str(resize.method),
                    [float(x) for x in norm.mean.flatten()], [float(x) for x in norm.std.flatten()])

"""The model and its weights: torchvision AlexNet under fastai's vision_learner head.

`--weights` is `imagenet` (torchvision's ImageNet file: torch's hub cache first, else a download
with a progress bar), `auto` (imagenet when it can be had, else random init, said in one line), `none`
(random init) or a path: a torchvision-format AlexNet state dict (.pth) or an exported bundle
directory. One resolver (`resolve_weights`) decides, and says which weights and why; weights
files are read with weights_only=True or safetensors: no pickle runs. A file that does not fit is
refused with what does not match; a file named like torchvision's whose SHA-256 does not start
with the name's hash is refused; nothing falls back silently.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import ModelError, NetworkError, first_line

IMAGENET_FILE = "alexnet-owt-7be5be79.pth"


IMAGENET_URL = "https://download.pytorch.org/models/" + IMAGENET_FILE


DOWNLOAD_TIMEOUT_S = 20


_HASHED_NAME = re.compile(r"^alexnet-[a-z0-9]+-(?P<prefix>[0-9a-f]{6,})\.pth$")  # torchvision's naming


@dataclass
class Weights:
    """What initialises the model: `kind` is none | imagenet | state_dict | bundle."""

    kind: str
    path: Path | None = None
    reason: str = ""

    @property
    def spec(self) -> str:
        """The value config.json's `weights` holds: 'none', 'imagenet' or the path."""
        return self.kind if self.kind in ("none", "imagenet") else str(self.path)

    @property
    def pretrained(self) -> bool:
        return self.kind != "none"


def hub_checkpoints() -> Path:
    """Where torchvision keeps downloaded weights ($TORCH_HOME/hub/checkpoints)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def check_hash(path: Path) -> None:
    """A file named like torchvision's (alexnet-owt-<prefix>.pth) must hash to that prefix."""
    m = _HASHED_NAME.match(Path(path).name)
    if not m:
        return
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if not h.hexdigest().startswith(m["prefix"]):
        raise ModelError(f"{path} is corrupt or not the file its name says: SHA-256 {h.hexdigest()[:12]}... does "
                         f"not start with {m['prefix']}; delete it and download it again")


def fetch_imagenet(progress=None) -> Path:
    """torchvision's ImageNet AlexNet file: from the hub cache (no network), else downloaded into it
    with one bar on `progress` (a rich Progress, core/progress.py) and torch.hub's SHA-256 prefix check."""
    from ..core.download import download

    target = hub_checkpoints() / IMAGENET_FILE
    if not target.is_file():
        prefix = _HASHED_NAME.match(IMAGENET_FILE)["prefix"]
        try:
            download(IMAGENET_URL, target, progress, sha256_prefix=prefix, timeout=DOWNLOAD_TIMEOUT_S,
                     label=f"downloading {IMAGENET_FILE}")
        except NetworkError as e:  # offline, refused, timed out, or not the file its name says
            raise imagenet_error(e) from None
    check_hash(target)
    return target


def imagenet_error(e: Exception) -> NetworkError:
    return NetworkError(
        f"ImageNet weights need {IMAGENET_FILE} from download.pytorch.org, and the download failed "
        f"({first_line(e, 240)}); put the file in {hub_checkpoints()}/ or pass --weights PATH to a "
        "torchvision AlexNet state dict"
    )


def check_weights(weights: str | None) -> None:
    """Up-front check of --weights (no torch import): a path must exist."""
    if weights and weights not in ("none", "imagenet", "auto") and not Path(weights).exists():
        raise ModelError(f"weights file not found: {weights}")


def resolve_weights(spec: str | None, progress=None) -> Weights:
    """The one place that turns --weights into weights, with the reason recorded in config.json."""
    spec = spec or "none"
    if spec == "none":
        return Weights("none", reason="--weights none: random init")
    if spec in ("imagenet", "auto"):
        try:
            path = fetch_imagenet(progress)
        except NetworkError as e:
            if spec == "imagenet":
                raise
            return Weights("none", reason=f"--weights auto: ImageNet weights unavailable offline, so random init ({e})")
        return Weights("imagenet", path, f"--weights {spec}: ImageNet (torchvision AlexNet_Weights.IMAGENET1K_V1) "
                                         f"from {path}")
    p = Path(spec).expanduser()
    if p.is_dir():
        return Weights("bundle", p, f"--weights {spec}: an exported bundle")
    if not p.is_file():
        raise ModelError(f"weights file not found: {p}")
    check_hash(p)
    return Weights("state_dict", p, f"--weights {spec}: a torchvision AlexNet state dict")


def torch_load(path: str | Path, mmap: bool = False):
    """torch.load(weights_only=True): tensors, numbers and plain containers only. A file that holds
    anything else (a pickle that would run code when loaded) is refused in one line, never loaded
    another way."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError:
        raise ModelError(f"{path} refused: it holds Python objects other than tensors and numbers (loading it "
                         "would run code from the file), so it was not loaded") from None
    except Exception as e:
        raise ModelError(f"cannot read {path}: {first_line(e)}") from None


def read_state_dict(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:
            raise ModelError(f"cannot read weights file {path}: {first_line(e)}") from None
    return _unwrap(torch_load(path))


def _unwrap(sd):
    """Accept {'state_dict': ...}, {'model': ...} and DataParallel 'module.' prefixes."""
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise ModelError("weights file does not hold a state dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _mismatch(expected: dict, given: dict, what: str, src: Path, show=lambda k: k) -> None:
    """ModelError naming (in the file's own key names, via `show`) what is missing, unexpected or
    mis-shaped."""
    missing = [show(k) for k in expected if k not in given]
    extra = [show(k) for k in given if k not in expected]
    shapes = [
        f"{show(k)} is {tuple(given[k].shape)}, expected {tuple(v.shape)}"
        for k, v in expected.items()
        if k in given and tuple(given[k].shape) != tuple(v.shape)
    ]
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} tensor(s): {', '.join(missing[:4])}")
    if extra:
        parts.append(f"unexpected {len(extra)} tensor(s): {', '.join(extra[:4])}")
    if shapes:
        parts.append(f"wrong shape: {'; '.join(shapes[:3])}")
    if parts:
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
    body.load_state_dict(given)
    return len(expected)


def load_bundle(model, bundle: str | Path, vocab: list[str]) -> str:
    """Weights from an exported bundle: whole model when classes match, else the body only."""
    bundle = Path(bundle)
    from safetensors.torch import load_file

    from .bundle import read_meta

    meta = read_meta(bundle, need=("model.safetensors",))  # checked as everywhere: a newer format is refused
    st = bundle / "model.safetensors"
    sd = load_file(str(st))
    if meta.get("classes") == list(vocab):
        _mismatch(model.state_dict(), sd, "this model", st)
        model.load_state_dict(sd)
        return "whole model (same classes)"
    body = {k[2:]: v for k, v in sd.items() if k.startswith("0.")}
    _mismatch(model[0].state_dict(), body, "AlexNet's convolutional body", st)
    model[0].load_state_dict(body)
    return "body only (different classes: new head)"


def keep_body_layers(model, n: int) -> int:
    """Only the first `n` convolutions of a loaded body keep their weights; the later ones get a fresh
    random init. Early layers (edges, textures) transfer; a source trained on few classes has deep
    layers too specific to them (measured: benchmarks/runs/transfer-5-class-source.json). Returns the layers reset."""
    from torchvision.models import alexnet

    body, fresh = model[0][0], alexnet().features
    convs = [i for i, m in enumerate(body) if isinstance(m, type(fresh[0]))]
    for i in convs[n:]:
        body[i].load_state_dict(fresh[i].state_dict())
    return len(convs[n:])

"""What a resumed run must get back exactly: every random generator, the optimizer's state (on
its parameters' device), and checkpoints written atomically. Used by the checkpoint callback, by
resume and by the time-budget probe, which must leave the run's state as it found it."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from ..core.files import atomic
from ..core.ranks import unwrap_dl


def rng_state(dls=None, device=None) -> dict:
    """Every generator a resumed run must continue: torch, Python, NumPy, the loader's shuffling,
    and the training GPU's (only that one: asking for all would open a context on every GPU)."""
    st = {"torch": torch.get_rng_state(), "python": random.getstate(),
          "numpy": [np.asarray(x).tolist() if isinstance(x, np.ndarray) else x for x in np.random.get_state()]}
    if device is not None and device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    if dls is not None:
        st["dl"] = unwrap_dl(dls.train).rng.getstate()
    return st


def set_rng_state(st: dict, dls=None, device=None) -> None:
    torch.set_rng_state(st["torch"])
    random.setstate(_tuplify(st["python"]))
    n = st["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), *n[2:]))
    cuda = st.get("cuda")
    if isinstance(cuda, torch.Tensor) and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(cuda, device)
    if dls is not None and "dl" in st:
        unwrap_dl(dls.train).rng.setstate(_tuplify(st["dl"]))


def model_digest(model) -> str:
    """SHA-256 of a model's weights (names, dtypes, shapes and bytes, in the standard memory
    layout): equal exactly when two trainings ended with the same weights, bit for bit."""
    import hashlib

    from ..core.ranks import unwrap_model

    h = hashlib.sha256()
    for k, v in sorted(unwrap_model(model).state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _tuplify(x):
    return tuple(_tuplify(i) for i in x) if isinstance(x, (list, tuple)) else x


def loadable(obj):
    """Containers and numbers torch.load(weights_only=True) accepts (fastai's L, numpy scalars)."""
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, dict):
        return {k: loadable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) or type(obj).__name__ == "L":
        return [loadable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def load_opt_state(opt, sd: dict) -> None:
    """The saved optimizer state (read on the CPU), each tensor moved to its parameter's device:
    fastai's Adam would otherwise mix CPU state with CUDA gradients at the first step."""
    from fastcore.foundation import L

    opt.load_state_dict({"state": sd["state"], "hypers": L(sd["hypers"])})
    for p, _, state, _ in opt.all_params(with_grad=False):
        for k, v in state.items():
            if isinstance(v, torch.Tensor) and v.device != p.device:
                state[k] = v.to(p.device)


def atomic_save(obj, path: Path) -> None:
    """Write then rename: a kill mid-write leaves the previous file intact. A full disk is the
    OSError(ENOSPC) it is, not the "unexpected pos" RuntimeError torch's zip writer turns it into."""
    with atomic(path) as tmp:
        with open(tmp, "wb") as f:
            w = _Recording(f)
            try:
                torch.save(obj, w)
            except RuntimeError:
                if w.error is not None:
                    raise w.error from None
                raise
            f.flush()
            os.fsync(f.fileno())


class _Recording:
    """A file for torch.save that keeps the OSError of a failed write (torch reports only its own)."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, b):
        try:
            return self.f.write(b)
        except OSError as e:
            self.error = e
            raise

    def flush(self):
        self.f.flush()

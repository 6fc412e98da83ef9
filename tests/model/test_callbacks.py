"""The model's own callbacks on a real Learner: CpuBf16 really computes in bf16 on the CPU (fastai's
to_bf16 does not there), with fp32 weights and a finite loss."""

from __future__ import annotations

import pytest
import torch

from app.core.config import TrainConfig


@pytest.fixture(scope="module")
def dls(tiny_data):
    from app.data.cache import open_or_build, stored_size
    from app.data.loaders import cached_dls
    from app.data.scan import scan

    return cached_dls(open_or_build(scan(tiny_data), stored_size(64), log=lambda *_: None), TrainConfig(bs=8), 64)


def _conv_dtypes(learn) -> set:
    seen = set()
    h = learn.model[0][0][0].register_forward_hook(lambda m, i, o: seen.add(o.dtype))
    learn.fit(1, 1e-4)
    h.remove()
    return seen


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_cpu_bf16_runs_the_convolutions_in_bf16_and_keeps_fp32_weights(dls, tmp_path, precision, dtype):
    from app.model.callbacks import CpuBf16
    from app.model.learner import build

    learn = build(TrainConfig(size=64, bs=8, precision=precision), dls, tmp_path, torch.device("cpu"),
                  lambda *a, **k: None)
    assert any(isinstance(cb, CpuBf16) for cb in learn.cbs) == (precision == "bf16")
    assert _conv_dtypes(learn) == {dtype}
    assert all(p.dtype == torch.float32 for p in learn.model.parameters())
    assert torch.isfinite(torch.tensor(learn.recorder.losses)).all()


def test_fastais_own_to_bf16_stays_fp32_on_a_cpu(dls, tmp_path):
    """Why CpuBf16 exists: fastai 2.8.12's MixedPrecision opens CUDA's autocast, off on a CPU."""
    import warnings

    from app.model.learner import build

    learn = build(TrainConfig(size=64, bs=8, precision="fp32"), dls, tmp_path, torch.device("cpu"),
                  lambda *a, **k: None)
    learn.to_bf16()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _conv_dtypes(learn) == {torch.float32}

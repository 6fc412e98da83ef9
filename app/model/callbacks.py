"""The model's own fastai callbacks: how inputs reach it (plain tensors, channels_last) and how its
gradients are clipped. Every Learner the app builds has them, whatever command trains it."""

from __future__ import annotations

import torch
from fastai.callback.core import Callback
from fastai.callback.fp16 import AMPMode, MixedPrecision
from fastai.callback.training import GradientClip


class GradientClipWhenOver(GradientClip):
    """fastai's GradientClip; on the CPU it scales the gradients only when their norm is over
    `max_norm`. On an accelerator it scales every step by the clamped coefficient (as fastai does),
    since testing the norm on the host would stall the device every step.

    AlexNet has no normalisation layers, and a single exploding batch at the peak lr can cost a run
    1.5 points (measured, benchmarks/accuracy.md). The stock callback multiplies every gradient by
    its clamped coefficient every step, ~2 s per 64-px epoch on 2 CPU cores; the norm alone is cheap.
    """

    def before_step(self):
        params = [p for p in self.learn.model.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm([p.grad for p in params], self.norm_type)
        if norm.device.type != "cpu" or norm > self.max_norm:
            torch.nn.utils.clip_grads_with_norm_(params, self.max_norm, norm)


class CpuBf16(MixedPrecision):
    """fastai's MixedPrecision in bf16 on the CPU. fastai 2.8.12's opens `autocast('cuda')` whatever
    the device, which a CPU run turns off with a warning: `learn.to_bf16()` there trains in fp32
    (checked: every convolution's output stayed float32). This one opens the CPU's autocast and no
    grad scaler (bf16 has fp32's range, as fastai's own bf16 mode has none)."""

    def __init__(self):
        super().__init__(amp_mode=AMPMode.BF16)

    def before_fit(self):
        from fastcore.foundation import L

        self.autocast = torch.autocast("cpu", dtype=torch.bfloat16)
        self.learn.scaler, self.scales = torch.amp.GradScaler("cpu", enabled=False), L()


class ModelInputs(Callback):
    """Inputs reach the model as plain tensors (fastai's TensorImage subclass dispatch costs ~12 %
    of an AlexNet step on CPU, measured), in channels_last when asked (faster convolutions with
    oneDNN on CPU and cuDNN on GPU). fastai restores the types when it decodes batches."""

    order = -1

    def __init__(self, channels_last: bool = True):
        self.channels_last = channels_last

    def before_fit(self):
        if self.channels_last:
            self.learn.model.to(memory_format=torch.channels_last)

    def before_batch(self):
        x = self.learn.xb[0]
        if isinstance(x, torch.Tensor):
            x = x.as_subclass(torch.Tensor)
            if self.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            self.learn.xb = (x, *self.learn.xb[1:])

"""The model's own fastai callbacks: how inputs reach it (plain tensors, channels_last) and how its
gradients are clipped. Every Learner the app builds has them, whatever command trains it."""

from __future__ import annotations

import torch
from fastai.callback.core import Callback
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

"""Several processes (GPUs or machines, or CPU processes with gloo) through fastai + Accelerate.

Launch with `torchrun --nproc_per_node N -m app ...` or `accelerate launch --multi_gpu
--num_processes N -m app ...`. fastai's DistributedTrainer wraps the model in DDP and the
loaders in DistributedDL (each rank its own shard; predictions gathered for metrics). Two
subclasses make it run on CPU with gloo too:
  - CpuSafeDistributedTrainer._wrap_dl: fastai asks `model.device`, which a DDP-wrapped CPU
    model lacks; ours passes the loaders' device.
  - GlooSafeDistributedDL._broadcast: fastai moves the index list to CUDA (NCCL needs it);
    ours does that only on the NCCL backend.
SyncBatchNorm is GPU-only: it is used on GPUs, not on CPU. Which rank this is: core/ranks.py.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.distributed
from fastai.distributed import DistributedDL, DistributedTrainer

from ..core.ranks import world_size


class GlooSafeDistributedDL(DistributedDL):
    def _broadcast(self, t, rank):
        t = torch.LongTensor(t)
        if torch.distributed.get_backend() == "nccl":
            t = t.cuda()
        torch.distributed.broadcast(t, rank)
        return t.cpu().tolist()


class CpuSafeDistributedTrainer(DistributedTrainer):
    def _wrap_dl(self, dl):
        return dl if isinstance(dl, DistributedDL) else GlooSafeDistributedDL(dl, device=self.dls.device)


@contextmanager
def distributed(learn, device):
    """fastai's distrib_ctx, with the CPU-safe trainer; a no-op in a single process."""
    if world_size() <= 1:
        yield learn
        return
    cpu = device.type == "cpu"
    learn.add_cb(CpuSafeDistributedTrainer(sync_bn=not cpu, cpu=cpu))  # bars: rank 0 only (model.learner.build)
    try:
        yield learn
    finally:
        learn.remove_cb(CpuSafeDistributedTrainer)

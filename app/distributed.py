"""Several processes (GPUs or machines, or CPU processes with gloo) through fastai + Accelerate.

Launch with `torchrun --nproc_per_node N -m app ...` or `accelerate launch --multi_gpu
--num_processes N -m app ...`. fastai's DistributedTrainer wraps the model in DDP and the
loaders in DistributedDL (each rank its own shard; predictions gathered for metrics). Two
subclasses make it run on CPU with gloo too:
  - CpuSafeDistributedTrainer._wrap_dl: fastai asks `model.device`, which a DDP-wrapped CPU
    model lacks; ours passes the loaders' device.
  - GlooSafeDistributedDL._broadcast: fastai moves the index list to CUDA (NCCL needs it);
    ours does that only on the NCCL backend.
SyncBatchNorm is GPU-only: it is used on GPUs, not on CPU. The launcher's variables (WORLD_SIZE,
RANK, LOCAL_RANK) are read here and nowhere else.
"""

from __future__ import annotations

import datetime
import os
from contextlib import contextmanager

import torch
import torch.distributed
from fastai.distributed import DistributedDL, DistributedTrainer

# Rank 0 scans the dataset and builds the decoded cache while the others wait at a barrier; on
# ImageNet that takes far longer than NCCL's 10-minute default, which would abort the run.
BARRIER_TIMEOUT = datetime.timedelta(hours=6)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def is_rank0() -> bool:
    return rank() == 0


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


def init(device) -> None:
    """Start the process group once, with the backend Accelerate picks (gloo on CPU, NCCL on GPU)."""
    if world_size() > 1 and not torch.distributed.is_initialized():
        from accelerate import PartialState

        PartialState(cpu=device.type == "cpu", timeout=BARRIER_TIMEOUT)  # passed to init_process_group


@contextmanager
def distributed(learn, device):
    """fastai's distrib_ctx, with the CPU-safe trainer; a no-op in a single process."""
    if world_size() <= 1:
        yield learn
        return
    from fastai.callback.progress import ProgressCallback

    cpu = device.type == "cpu"
    learn.add_cb(CpuSafeDistributedTrainer(sync_bn=not cpu, cpu=cpu))
    if rank():
        learn.remove_cb(ProgressCallback)
    try:
        yield learn
    finally:
        learn.remove_cb(CpuSafeDistributedTrainer)


def unwrap_dl(dl):
    """The loader itself, also under DDP (fastai's DistributedDL wraps it as `.dl`)."""
    return dl.dl if isinstance(dl, DistributedDL) else dl


def unwrap_model(model):
    """The plain module under DDP (`.module`); --compile compiles in place, so there is no wrapper."""
    return getattr(model, "module", model)


def barrier() -> None:
    if world_size() > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()


def broadcast(obj):
    """Every rank gets rank 0's value (the run directory it created, the time-budget plan)."""
    if world_size() <= 1 or not torch.distributed.is_initialized():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def rank0_first(fn):
    """fastai's rank0_first: files shared by all ranks (the cache) are built once, by rank 0."""
    if world_size() <= 1 or not torch.distributed.is_initialized():
        return fn()
    if rank() == 0:
        res = fn()
    barrier()
    if rank() != 0:
        res = fn()
    return res


@contextmanager
def this_process_only():
    """Rank 0 working alone (evaluation, figures, export) while the others wait at a barrier:
    fastai gathers predictions across ranks whenever WORLD_SIZE > 1 (to_detach -> maybe_gather),
    which would wait forever for ranks that are not predicting."""
    old = os.environ.get("WORLD_SIZE")
    os.environ["WORLD_SIZE"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("WORLD_SIZE", None)
        else:
            os.environ["WORLD_SIZE"] = old

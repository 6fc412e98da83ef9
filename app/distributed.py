"""Several processes (GPUs or machines, or CPU processes with gloo) through fastai + Accelerate.

Launch with `torchrun --nproc_per_node N -m app ...` or `accelerate launch --multi_gpu
--num_processes N -m app ...`. fastai's DistributedTrainer wraps the model in DDP and the
loaders in DistributedDL (each rank its own shard; predictions gathered for metrics). Two
small fixes make it run on CPU with gloo too, each a subclass overriding one method:
  - DistributedTrainer._wrap_dl asked `model.device`, which a DDP-wrapped CPU model lacks;
    ours passes the loaders' device.
  - DistributedDL._broadcast moved the index list to CUDA (NCCL needs it); ours only does that
    on the NCCL backend.
SyncBatchNorm is GPU-only: it is used on GPUs, not on CPU.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import torch
from fastai.distributed import DistributedDL, DistributedTrainer


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def init(device: torch.device) -> None:
    """Start the process group once, with the backend Accelerate picks (gloo on CPU, NCCL on GPU)."""
    if world_size() > 1 and not torch.distributed.is_initialized():
        from accelerate import PartialState

        PartialState(cpu=device.type == "cpu")


class GlooSafeDistributedDL(DistributedDL):
    def _broadcast(self, t, rank):
        t = torch.LongTensor(t)
        if torch.distributed.get_backend() == "nccl":
            t = t.cuda()
        torch.distributed.broadcast(t, rank)
        return t.cpu().tolist()

    def get_idxs(self):
        idxs = super().get_idxs()
        log = os.environ.get("APP_SHARD_LOG")  # for tests: which items this rank was given
        if log and self.dl is getattr(self, "_train_dl", None):
            with open(f"{log}.rank{self.rank}", "a") as f:
                f.write(",".join(map(str, idxs)) + "\n")
        return idxs


class CpuSafeDistributedTrainer(DistributedTrainer):
    def _wrap_dl(self, dl):
        if isinstance(dl, DistributedDL):
            return dl
        ddl = GlooSafeDistributedDL(dl, device=self.dls.device)
        ddl._train_dl = self.old_dls[0] if getattr(self, "old_dls", None) else None
        return ddl


@contextmanager
def distributed(learn, device: torch.device):
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


def barrier() -> None:
    if world_size() > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()


def broadcast_path(p: Path | None) -> Path:
    """Every rank gets rank 0's value (the run directory it created)."""
    if world_size() <= 1 or not torch.distributed.is_initialized():
        return p
    obj = [str(p) if p else None]
    torch.distributed.broadcast_object_list(obj, src=0)
    return Path(obj[0])


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

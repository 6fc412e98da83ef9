"""Ranks: which process this is when a launcher (torchrun, accelerate launch) starts several, and
the few collective steps every layer may need (rank 0 first, a barrier, a broadcast). The
launcher's variables (WORLD_SIZE, RANK, LOCAL_RANK) are read here and nowhere else. torch is
imported only when there really are several processes; the DDP wrappers themselves live in
training/distributed.py.
"""

from __future__ import annotations

import datetime
import os
from contextlib import contextmanager

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


def init(device) -> None:
    """Start the process group once, with the backend Accelerate picks (gloo on CPU, NCCL on GPU)."""
    if world_size() > 1 and not _initialized():
        from accelerate import PartialState

        PartialState(cpu=device.type == "cpu", timeout=BARRIER_TIMEOUT)  # passed to init_process_group


def _initialized() -> bool:
    import torch.distributed

    return torch.distributed.is_initialized()


def unwrap_dl(dl):
    """The loader itself, also under DDP (fastai's DistributedDL wraps it as `.dl`)."""
    if world_size() <= 1:
        return dl
    from fastai.distributed import DistributedDL

    return dl.dl if isinstance(dl, DistributedDL) else dl


def unwrap_model(model):
    """The plain module under DDP (`.module`); --compile compiles in place, so there is no wrapper."""
    return getattr(model, "module", model)


def barrier() -> None:
    if world_size() > 1 and _initialized():
        import torch.distributed

        torch.distributed.barrier()


def broadcast(obj):
    """Every rank gets rank 0's value (the run directory it created, the time-budget plan)."""
    if world_size() <= 1 or not _initialized():
        return obj
    import torch.distributed

    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def rank0_first(fn):
    """fastai's rank0_first: files shared by all ranks (the cache) are built once, by rank 0."""
    if world_size() <= 1 or not _initialized():
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

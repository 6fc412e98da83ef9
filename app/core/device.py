"""Which device trains: `auto` is the GPU of this process (LOCAL_RANK under a launcher) when CUDA
works, else the CPU. A GPU that is present but unusable (e.g. a driver too old for the CUDA 13
wheels) is said in one line, never silently swapped for the CPU."""

from __future__ import annotations

import glob
import shutil
import warnings

from .errors import UsageError


def seed_everything(seed: int, device) -> None:
    """fastai's set_seed. Bit-exact (deterministic kernels) on the CPU, where runs repeat exactly;
    on CUDA runs are not bit-exact anyway, so cuDNN picks its fastest kernels instead."""
    import torch
    from fastai.torch_core import set_seed

    cpu = device.type == "cpu"
    set_seed(seed, reproducible=cpu)
    if not cpu:
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True


_warned = False


def cuda_available() -> bool:
    """torch.cuda.is_available(), without importing torch where it is not installed (bundle predict)."""
    try:
        import torch
    except ImportError:
        return False
    with warnings.catch_warnings():  # an unusable driver warns here; unusable_gpu() says it in one line
        warnings.simplefilter("ignore")
        return torch.cuda.is_available()


def trains_on_cuda(device: str | None = "auto") -> bool:
    """Whether the device --device names is a GPU (`auto`: CUDA when it works), decided without
    touching the device: the preset and the time budget follow the device that will train, not
    what the machine has (`--device cpu` on a GPU machine gets the CPU recipe and budget)."""
    if device in ("auto", "", None):
        return cuda_available()
    return str(device).strip().lower().startswith("cuda")


def gpu_present() -> bool:
    """An NVIDIA GPU is visible to the OS (device files or nvidia-smi), whatever CUDA says."""
    return bool(glob.glob("/dev/nvidia[0-9]*")) or shutil.which("nvidia-smi") is not None


def unusable_gpu_warning() -> str | None:
    """One line when a GPU is there but CUDA cannot use it (then training runs on the CPU)."""
    if cuda_available() or not gpu_present():
        return None
    import torch

    return (f"warning: an NVIDIA GPU is present but CUDA is unusable with this torch {torch.__version__} "
            f"(CUDA {torch.version.cuda}); training on the CPU. Update the driver or install a torch build "
            "for your driver's CUDA version.")


def pick_device(device: str = "auto", log=None):
    """torch.device for --device (auto, cpu, cuda, cuda:N); the CUDA device is made current."""
    import torch

    from .ranks import local_rank

    global _warned
    if device in ("auto", "", None):
        if not cuda_available():
            msg = unusable_gpu_warning()
            if msg and log and not _warned:
                log(msg)
                _warned = True
            return torch.device("cpu")
        d = torch.device("cuda", local_rank())
    else:
        try:
            d = torch.device(device)
        except RuntimeError:
            raise UsageError(f"unknown --device {device!r} (choose auto, cpu, cuda or cuda:N)") from None
        if d.type == "cuda" and not cuda_available():
            raise UsageError("--device cuda asked for, but no CUDA GPU is available")
        if d.type == "cuda" and d.index is not None and d.index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: this machine has {torch.cuda.device_count()} GPU(s)")
    if d.type == "cuda":
        d = torch.device("cuda", d.index if d.index is not None else torch.cuda.current_device())
        torch.cuda.set_device(d)  # nvJPEG, the cache upload and RNG state then use this GPU
    return d


def bf16_ok(device) -> bool:
    """bf16 in hardware (Ampere and later), not emulated."""
    import torch

    if device.type != "cuda":
        return False
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # older torch without the argument
        return torch.cuda.get_device_capability(device)[0] >= 8


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# The one-line switch (issue 24): True makes `--precision auto` train in bf16 on CPUs with native
# bf16 (cpu_bf16()["native"]) once `bench --bf16` shows >= 1.25x end to end and `bench
# --bf16-accuracy` accuracy within 0.5 points. Measured: 2.16x, but -0.83 points over 3 seeds, so it
# stays False (benchmarks/cpu-bf16-*.json, README "Precision").
AUTO_CPU_BF16 = False


PRECISIONS = ("auto", "fp32", "bf16")


def _cpuinfo(path: str) -> list[tuple[str, str]]:
    """/proc/cpuinfo's (key, value) lines, keys lower-cased; none where there is no such file
    (Windows, macOS) or it cannot be read."""
    from pathlib import Path

    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [(k.strip().lower(), v.strip()) for k, _, v in (ln.partition(":") for ln in text.splitlines())]


def cpu_model(path: str = "/proc/cpuinfo") -> str:
    """The CPU's model name (/proc/cpuinfo, else what the platform says)."""
    import platform

    return next((v for k, v in _cpuinfo(path) if k in ("model name", "hardware")), None) \
        or platform.processor() or platform.machine()


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str]:
    """The CPU's instruction-set flags from /proc/cpuinfo (x86 'flags', Arm 'Features'); empty
    where there is no such file (Windows, macOS) or it cannot be read."""
    return {f for k, v in _cpuinfo(path) if k in ("flags", "features") for f in v.split()}


def cpu_bf16(path: str = "/proc/cpuinfo") -> dict:
    """Whether this CPU computes bf16 natively: oneDNN's own check (also True where AVX-512 only
    emulates bf16) and the flags that make it native (avx512_bf16, amx_bf16; bf16 on Arm)."""
    import torch

    try:
        mkldnn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        mkldnn = False
    flags = sorted(cpu_flags(path) & {"avx512_bf16", "amx_bf16", "bf16"})
    return {"mkldnn_bf16": mkldnn, "flags": flags, "native": mkldnn and bool(flags)}


def resolve_precision(requested: str | None, device) -> str:
    """fp32, bf16 or fp16 for --precision on `device`. auto: a GPU's bf16 (fp16 without it), and on
    a CPU fp32 unless AUTO_CPU_BF16 and the CPU has native bf16. Concrete values stay as they are
    (a resumed run keeps its own); fp16 exists only on a GPU."""
    req = (requested or "auto").lower()
    if req not in (*PRECISIONS, "fp16"):
        raise UsageError(f"unknown --precision {requested!r} (choose {', '.join(PRECISIONS)})")
    if device.type == "cuda":
        if req == "auto":
            return "bf16" if bf16_ok(device) else "fp16"
        if req == "bf16" and not bf16_ok(device):
            raise UsageError("--precision bf16: this GPU has no bf16 in hardware; use auto (fp16) or fp32")
        return req
    if req == "auto":
        return "bf16" if AUTO_CPU_BF16 and cpu_bf16()["native"] else "fp32"
    return "fp32" if req == "fp16" else req


def autocast(precision: str, device):
    """torch.autocast for a resolved precision on `device` (disabled for fp32): what the budget
    probe and the benches time, the same as training's callbacks run."""
    import torch

    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype, enabled=precision in ("bf16", "fp16"))

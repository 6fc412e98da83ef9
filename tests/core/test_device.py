"""Picking the device: a GPU that is present but unusable is said in one line (never a silent CPU
run), --device is checked, bf16 only where the hardware has it."""

import pytest
import torch

from app.core import device as dev
from app.core.errors import UsageError


def test_an_unusable_gpu_is_said_in_one_line(monkeypatch):
    monkeypatch.setattr(dev, "cuda_available", lambda: False)
    monkeypatch.setattr(dev, "gpu_present", lambda: True)
    monkeypatch.setattr(dev, "_warned", False)
    said = []
    assert dev.pick_device("auto", log=said.append) == torch.device("cpu")
    assert len(said) == 1 and "GPU is present but CUDA is unusable" in said[0] and "\n" not in said[0]
    dev.pick_device("auto", log=said.append)
    assert len(said) == 1  # once per process


def test_no_gpu_no_warning_and_bad_devices_are_usage_errors(monkeypatch):
    monkeypatch.setattr(dev, "cuda_available", lambda: False)
    monkeypatch.setattr(dev, "gpu_present", lambda: False)
    said = []
    assert dev.pick_device("auto", log=said.append).type == "cpu" and said == []
    with pytest.raises(UsageError, match="no CUDA GPU"):
        dev.pick_device("cuda:1")
    with pytest.raises(UsageError, match="unknown --device"):
        dev.pick_device("tpu")


def test_bf16_needs_the_hardware_not_emulation(monkeypatch):
    calls = []

    def supported(including_emulation=True):
        calls.append(including_emulation)
        return False

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported)
    assert dev.bf16_ok(torch.device("cuda")) is False and calls == [False]
    assert dev.bf16_ok(torch.device("cpu")) is False


def test_loaded_optimizer_state_moves_beside_its_parameters():
    """Resume on CUDA: the checkpoint is read on the CPU; each Adam moment must go to its
    parameter's device before the first step (here the 'meta' device stands in for a GPU)."""
    from fastai.optimizer import Adam

    from app.training.state import load_opt_state, loadable

    cpu = torch.nn.Linear(3, 2)
    opt = Adam(cpu.parameters(), lr=1e-3)
    for p in cpu.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    saved = loadable(opt.state_dict())
    moved = torch.nn.Linear(3, 2, device="meta")
    opt2 = Adam(moved.parameters(), lr=1e-3)
    load_opt_state(opt2, saved)
    tensors = [v for _, _, st, _ in opt2.all_params() for v in st.values() if isinstance(v, torch.Tensor)]
    assert tensors and all(t.device.type == "meta" for t in tensors)


def test_the_training_device_is_the_one_asked_for_not_the_machines(monkeypatch):
    monkeypatch.setattr(dev, "cuda_available", lambda: True)  # a machine with a GPU
    assert dev.trains_on_cuda("auto") and dev.trains_on_cuda(None) and dev.trains_on_cuda("cuda:1")
    assert not dev.trains_on_cuda("cpu") and not dev.trains_on_cuda("CPU")
    monkeypatch.setattr(dev, "cuda_available", lambda: False)
    assert not dev.trains_on_cuda("auto") and dev.trains_on_cuda("cuda")  # pick_device refuses it later


def test_cpu_flags_are_read_from_cpuinfo_on_any_os(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_tile\n\nprocessor\t: 1\nflags\t: fpu\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")
    assert {"avx512_bf16", "amx_tile", "fpu"} <= dev.cpu_flags(str(x86)) and "bf16" in dev.cpu_flags(str(arm))
    assert dev.cpu_flags(str(tmp_path / "missing")) == set()  # Windows, macOS: no /proc/cpuinfo
    assert dev.cpu_bf16(str(x86))["flags"] == ["avx512_bf16"] and dev.cpu_bf16(str(tmp_path / "no"))["native"] is False


def test_precision_auto_is_fp32_on_a_cpu_until_the_switch_and_bf16_on_a_gpu(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(dev, "cpu_bf16", lambda: {"mkldnn_bf16": True, "flags": ["avx512_bf16"], "native": True})
    assert dev.resolve_precision("auto", cpu) == "fp32" and dev.resolve_precision("bf16", cpu) == "bf16"
    monkeypatch.setattr(dev, "AUTO_CPU_BF16", True)  # the one-line switch
    assert dev.resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(dev, "cpu_bf16", lambda: {"mkldnn_bf16": True, "flags": [], "native": False})
    assert dev.resolve_precision("auto", cpu) == "fp32"  # emulated bf16 is not worth it
    assert dev.resolve_precision("fp16", cpu) == "fp32"  # a GPU run resumed on a CPU
    monkeypatch.setattr(dev, "bf16_ok", lambda d: False)
    assert dev.resolve_precision("auto", gpu) == "fp16" and dev.resolve_precision("fp32", gpu) == "fp32"
    with pytest.raises(UsageError, match="no bf16 in hardware"):
        dev.resolve_precision("bf16", gpu)
    with pytest.raises(UsageError, match="unknown --precision 'half'"):
        dev.resolve_precision("half", cpu)

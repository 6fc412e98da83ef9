"""lr-find as typed: its recipe follows the device that will run it (the GPU is faked here)."""

import pytest


@pytest.mark.parametrize("device, preset, bs", [("cpu", "cpu-quick", 64), ("cuda", "gpu-fast", 256)])
def test_lr_find_takes_the_recipe_of_the_device_asked_for(monkeypatch, device, preset, bs):
    from app.core import device as dev
    from app.training import lr_find as lf

    monkeypatch.setattr(dev, "cuda_available", lambda: True)
    seen = []
    monkeypatch.setattr(lf, "lr_find", lambda cfg, **kw: seen.append(cfg))
    lf.run_lr_find("auto", "none", device=device)
    assert (seen[0].preset, seen[0].bs) == (preset, bs)

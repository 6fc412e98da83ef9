"""Weights: torchvision state dicts, bundles, and the ImageNet download path (offline: one line)."""

import urllib.error

import pytest
import torch

from app.errors import ModelError, NetworkError
from app.model import IMAGENET_FILE, build_learner, load_torchvision_body, read_state_dict
from app.settings import TrainConfig


@pytest.fixture(scope="module")
def dls(tiny_data):
    from app.data import scan
    from app.loaders import datablock_dls

    return datablock_dls(scan(tiny_data), TrainConfig(bs=8, workers=0), 64)


def test_imagenet_offline_is_one_clear_line(dls, monkeypatch):
    def offline(*a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(NetworkError) as e:
        build_learner(dls, "imagenet")
    msg = str(e.value)
    assert IMAGENET_FILE in msg and "--weights PATH" in msg and "\n" not in msg


def test_random_init_is_said_out_loud(dls):
    said = []
    build_learner(dls, "none", log=said.append)
    assert said == ["weights: random init"]


def test_state_dict_wrappers_and_errors(tmp_path):
    from torchvision.models import alexnet

    sd = alexnet(weights=None).state_dict()
    p = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, p)
    assert set(read_state_dict(p)) == set(sd)
    other = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, other)
    model = torch.nn.Sequential(torch.nn.Sequential(alexnet().features))
    with pytest.raises(ModelError, match="no 'features"):
        load_torchvision_body(model, other)


def test_bundle_weights_load_back_for_further_training(dls, tmp_path):
    """--weights BUNDLE_DIR: the whole model when classes match, the body when they do not."""
    import json

    from safetensors.torch import save_file

    learn = build_learner(dls, "none")
    bundle = tmp_path / "b"
    bundle.mkdir()
    save_file({k: v.contiguous() for k, v in learn.model.state_dict().items()}, str(bundle / "model.safetensors"))
    (bundle / "model.json").write_text(json.dumps({"classes": list(dls.vocab)}))
    again = build_learner(dls, str(bundle))
    for (k, a), b in zip(learn.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.equal(a, b), k
    (bundle / "model.json").write_text(json.dumps({"classes": ["a", "b"]}))
    said = []
    third = build_learner(dls, str(bundle), log=said.append)
    assert "body only" in said[0]
    assert torch.equal(third.model[0][0][0].weight, learn.model[0][0][0].weight)

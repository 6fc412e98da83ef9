"""Weights: the one resolver (hub cache, download, hash check, offline), torchvision state dicts,
bundles, and what a pretrained body means for training (frozen layers, normalisation, lrs)."""

import hashlib

import pytest
import torch

from app.core.config import TrainConfig
from app.core.errors import ModelError, NetworkError
from app.model import weights as model_mod
from app.model.learner import build_learner
from app.model.weights import Weights, load_torchvision_body, read_state_dict, resolve_weights


@pytest.fixture(scope="module")
def dls(tiny_data):
    from app.data.loaders import datablock_dls
    from app.data.scan import scan

    return datablock_dls(scan(tiny_data), TrainConfig(bs=8, workers=0), 64)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache of the test's own ($TORCH_HOME)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.fixture
def offline(monkeypatch):
    """The ImageNet URL points at a local port nothing listens on: the real download code runs and
    is refused, as offline. The list records every connection tried, so a test can prove it ran."""
    import socket

    from app.core import download as dl

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{s.getsockname()[1]}/{model_mod.IMAGENET_FILE}"
    s.close()
    monkeypatch.setattr(model_mod, "IMAGENET_URL", url)
    calls, real = [], dl.urlopen

    def spy(req, *a, **k):
        calls.append(req.full_url)
        return real(req, *a, **k)

    monkeypatch.setattr(dl, "urlopen", spy)
    return calls


def _torchvision_file(folder, seed=0):
    """A real torchvision AlexNet state dict saved under torchvision's naming: alexnet-owt-<sha256 prefix>.pth."""
    from torchvision.models import alexnet

    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "tmp.pth"
    torch.save(alexnet(weights=None).state_dict(), tmp)
    prefix = hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]
    path = folder / f"alexnet-owt-{prefix}.pth"
    tmp.rename(path)
    return path


def test_imagenet_is_taken_from_the_hub_cache_without_network(hub, offline, monkeypatch):
    path = _torchvision_file(hub)
    monkeypatch.setattr(model_mod, "IMAGENET_FILE", path.name)
    w = resolve_weights("imagenet")
    assert w.kind == "imagenet" and w.path == path and offline == []  # no download tried
    assert "ImageNet" in w.reason and str(path) in w.reason


def test_a_file_whose_hash_does_not_match_its_name_is_refused(hub, offline, monkeypatch):
    path = _torchvision_file(hub)
    bad = path.with_name("alexnet-owt-00000000.pth")
    path.rename(bad)
    monkeypatch.setattr(model_mod, "IMAGENET_FILE", bad.name)
    with pytest.raises(ModelError, match="does not start with 00000000"):
        resolve_weights("imagenet")
    with pytest.raises(ModelError, match="SHA-256"):  # also when given as a path
        resolve_weights(str(bad))


def test_imagenet_offline_is_one_clear_line_and_auto_falls_back_saying_so(hub, offline):
    with pytest.raises(NetworkError) as e:
        resolve_weights("imagenet")
    msg = str(e.value)
    assert offline == [model_mod.IMAGENET_URL]  # the patch applied: the real download call was made
    assert model_mod.IMAGENET_FILE in msg and "--weights PATH" in msg and str(hub) in msg and "\n" not in msg
    w = resolve_weights("auto")
    assert w.kind == "none" and "unavailable offline" in w.reason and len(offline) == 2


def test_imagenet_is_downloaded_into_the_hub_cache_with_its_hash_checked(hub, tmp_path, monkeypatch):
    """The real download path against a real HTTP server on 127.0.0.1: a torchvision file named
    by its own hash prefix, fetched into $TORCH_HOME's cache and then used; the same URL serving
    another file is refused by the name's hash and leaves nothing in the cache."""
    import http.server
    import threading
    from functools import partial

    www = tmp_path / "www"
    src = _torchvision_file(www)
    (www / "alexnet-owt-00000000.pth").write_bytes(src.read_bytes())  # right bytes, a name that lies
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(www)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{srv.server_address[1]}"
        monkeypatch.setattr(model_mod, "IMAGENET_FILE", src.name)
        monkeypatch.setattr(model_mod, "IMAGENET_URL", f"{base}/{src.name}")
        w = resolve_weights("imagenet")
        assert w.kind == "imagenet" and w.path == hub / src.name and w.path.read_bytes() == src.read_bytes()
        monkeypatch.setattr(model_mod, "IMAGENET_FILE", "alexnet-owt-00000000.pth")
        monkeypatch.setattr(model_mod, "IMAGENET_URL", f"{base}/alexnet-owt-00000000.pth")
        with pytest.raises(NetworkError, match="does not start with 00000000"):
            resolve_weights("imagenet")
        assert sorted(p.name for p in hub.iterdir()) == [src.name]  # nothing half-written or wrong kept
    finally:
        srv.shutdown()
        srv.server_close()


def test_random_init_is_said_out_loud(dls):
    said = []
    build_learner(dls, "none", log=said.append)
    assert said == ["weights: random init"]


def test_torchvision_state_dict_loads_every_body_key_and_freezes_the_body(dls, tmp_path):
    """A state dict saved from torchvision's own alexnet(): all 10 body tensors, nothing missing or
    unexpected; the body frozen (only the head and BatchNorm train), as fastai's pretrained=True."""
    path = _torchvision_file(tmp_path / "w", seed=3)
    sd = torch.load(path, weights_only=True)
    learn = build_learner(dls, resolve_weights(str(path)))
    body = learn.model[0].state_dict()
    assert len(body) == 10
    for k, v in body.items():
        assert torch.equal(v, sd["features." + k[2:]]), k
    learn.create_opt()
    trainable = {n for n, p in learn.model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("1.") for n in trainable if not _is_bn(learn.model, n))
    assert not any(p.requires_grad for p in learn.model[0].parameters())


def _is_bn(model, name):
    mod = model.get_submodule(name.rsplit(".", 1)[0])
    return isinstance(mod, torch.nn.modules.batchnorm._BatchNorm)


def test_unfrozen_phase_gets_fastais_discriminative_lrs(dls, tmp_path):
    """fine_tune's second phase: lr slice(base/200, base/2) over AlexNet's 3 parameter groups, read
    back from the optimizer as fastai sets it."""
    import numpy as np

    from app.training.epochs import phases

    learn = build_learner(dls, resolve_weights(str(_torchvision_file(tmp_path / "w"))))
    ph = phases(TrainConfig(command="fine-tune", lr=2e-3))[1]
    learn.unfreeze()
    learn.create_opt()
    learn.opt.set_hypers(lr=ph["lr"])
    lrs = [h["lr"] for h in learn.opt.hypers]
    assert len(lrs) == 3
    assert np.allclose(lrs, [1e-5, 1e-4, 1e-3])  # fastai's geometric spread from base/200 to base/2
    assert all(p.requires_grad for p in learn.model.parameters())


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
    extra = tmp_path / "extra.pth"
    torch.save({**sd, "features.13.weight": torch.zeros(3)}, extra)
    with pytest.raises(ModelError, match="unexpected 1 tensor"):
        load_torchvision_body(model, extra)


def test_bundle_weights_load_back_for_further_training(dls, tmp_path):
    """--weights BUNDLE_DIR: the whole model when classes match, the body and a new head when not."""
    import json

    from safetensors.torch import save_file

    from app.model.bundle import BUNDLE_FORMAT, FORMAT, VERSION

    learn = build_learner(dls, "none")
    bundle = tmp_path / "b"
    bundle.mkdir()
    save_file({k: v.contiguous() for k, v in learn.model.state_dict().items()}, str(bundle / "model.safetensors"))
    (bundle / "model.json").write_text(json.dumps({"format": BUNDLE_FORMAT, "classes": list(dls.vocab)}))
    again = build_learner(dls, Weights("bundle", bundle))
    for (k, a), b in zip(learn.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.equal(a, b), k
    (bundle / "model.json").write_text(json.dumps({"format": BUNDLE_FORMAT, "classes": ["a", "b"]}))
    said = []
    third = build_learner(dls, resolve_weights(str(bundle)), log=said.append)
    assert "body only" in said[0]
    assert torch.equal(third.model[0][0][0].weight, learn.model[0][0][0].weight)
    assert not torch.equal(third.model[1][-1].weight, learn.model[1][-1].weight)  # a new head
    (bundle / "model.json").write_text(json.dumps({"format": f"{FORMAT}/{VERSION + 1}", "classes": ["a", "b"]}))
    with pytest.raises(ModelError, match="newer than this app reads"):  # the format is checked on this path too
        build_learner(dls, resolve_weights(str(bundle)))


def test_pretrained_inputs_are_normalised_with_imagenet_statistics_on_both_loaders(small_data):
    from fastai.data.transforms import Normalize
    from fastai.vision.core import imagenet_stats

    from app.data.cache import open_or_build, stored_size
    from app.data.loaders import cached_dls, datablock_dls
    from app.data.scan import scan

    ds = scan(small_data)
    cfg = TrainConfig(bs=8, workers=0, size=64)
    for dl in (cached_dls(open_or_build(ds, stored_size(64), log=lambda *_: None), cfg, 64).valid,
               datablock_dls(ds, cfg, 64).valid):
        norms = [t for t in dl.after_batch.fs if isinstance(t, Normalize)]
        assert len(norms) == 1
        assert torch.allclose(norms[0].mean.flatten().cpu(), torch.tensor(imagenet_stats[0]))
        assert torch.allclose(norms[0].std.flatten().cpu(), torch.tensor(imagenet_stats[1]))

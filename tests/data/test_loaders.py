"""The loaders' dataset options: --balance weights (scikit-learn's balanced weights in the loss) and
sampler (fastai's WeightedDL draws every class equally), --resize crop|squish|pad the same way in the
cache, fastai's Resize and predict, and a test split that never reaches training."""

import shutil
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from app.core.config import TrainConfig
from app.data.images import RESIZE, load_square
from app.data.loaders import make_dls
from app.data.scan import scan

from ..conftest import EASY, ROOT


@pytest.fixture
def imbalanced(tiny_data, tmp_path):
    root = tmp_path / "imb"
    shutil.copytree(tiny_data, root)
    for f in sorted((root / "train" / sorted(EASY)[0]).iterdir())[2:]:
        f.unlink()  # class 0: 2 training images, the others 8
    return root


def test_balance_weights_puts_sklearn_balanced_weights_in_the_loss(imbalanced):
    from app.model.learner import build
    from app.model.weights import Weights

    cfg = TrainConfig(data=str(imbalanced), size=64, bs=8, balance="weights", label_smoothing=0.0, loader="cached")
    ds, dls = make_dls(cfg, 64, torch.device("cpu"), log=lambda *_: None)
    learn = build(cfg, dls, None, torch.device("cpu"), log=lambda *_: None, weights=Weights("none"))
    want = [26 / (4 * 2), 26 / (4 * 8), 26 / (4 * 8), 26 / (4 * 8)]  # n / (k x count), by hand
    assert learn.loss_func.func.weight.tolist() == pytest.approx(want)
    out, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    manual = torch.nn.functional.cross_entropy(out, y, weight=torch.tensor(want))
    assert learn.loss_func(out, y).item() == pytest.approx(manual.item(), rel=1e-5)


@pytest.mark.parametrize("loader", ["cached", "datablock"])
def test_balance_sampler_draws_every_class_equally(imbalanced, loader):
    cfg = TrainConfig(data=str(imbalanced), size=64, bs=8, balance="sampler", loader=loader, workers=0)
    ds, dls = make_dls(cfg, 64, torch.device("cpu"), log=lambda *_: None)
    dl = dls.train
    label_of = ({i: int(r) for i, r in enumerate(dl.dataset.items)} if loader == "cached" else None)
    labels = dls.cache.labels if loader == "cached" else None
    path_label = {str(it.path): it.label for it in ds.items}
    drawn = Counter()
    np.random.seed(0)
    for _ in range(200):
        for i in dl.get_idxs():
            drawn[int(labels[label_of[i]]) if loader == "cached" else path_label[str(dl.items[i])]] += 1
    share = drawn[0] / sum(drawn.values())
    assert share == pytest.approx(0.25, abs=0.02)  # unweighted it would be 2 / 26 = 0.077
    cfg_plain = cfg.replace(balance="none")
    _, plain = make_dls(cfg_plain, 64, torch.device("cpu"), log=lambda *_: None)
    assert type(plain.train).__name__ in ("CachedDL", "TfmdDL")


def wide_image(path, w=128, h=64):
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = (250, 20, 20)  # left half red, right half blue
    a[:, w // 2:] = (20, 20, 250)
    Image.fromarray(a).save(path)
    return path


def test_resize_methods_against_what_they_must_do(tmp_path):
    p = wide_image(tmp_path / "wide.png")
    crop, squish, pad = (load_square(p, 64, m) for m in ("crop", "squish", "pad"))
    assert crop[:, :30, 0].mean() > 200 and crop[:, 34:, 2].mean() > 200  # the centre square: half and half
    assert squish[:, :30, 0].mean() > 200 and squish[:, 34:, 2].mean() > 200
    assert pad[:14].max() == 0 and pad[-14:].max() == 0  # black bars above and below
    assert pad[20:44, :30, 0].mean() > 200 and pad[20:44, 34:, 2].mean() > 200  # the whole image kept
    assert set(RESIZE) == {"crop", "squish", "pad"}


@pytest.mark.parametrize("method", ["crop", "squish", "pad"])
def test_our_resize_matches_fastais_resize(tmp_path, method):
    """The bundle's numpy/PIL preprocessing is fastai's Resize (the independent reference)."""
    from fastai.vision.augment import Resize
    from fastai.vision.core import PILImage

    p = tmp_path / "photo.jpg"
    Image.open(next((ROOT.parent / "shared/data/imagenette2-224/val/n03028079").iterdir())).convert("RGB").resize(
        (160, 96)).save(p)
    ours = load_square(p, 64, method).astype(int)
    theirs = np.asarray(Resize(64, method=method, pad_mode="zeros")(PILImage.create(p), split_idx=1)).astype(int)
    assert np.abs(ours - theirs).mean() < 2.0, np.abs(ours - theirs).mean()


def test_the_cache_stores_images_made_square_by_the_method(tmp_path):
    from app.data.cache import open_or_build

    root = tmp_path / "d"
    for c in ("a", "b"):
        (root / "train" / c).mkdir(parents=True)
        (root / "val" / c).mkdir(parents=True)
        for split in ("train", "val"):
            wide_image(root / split / c / "w.png")
    ds = scan(root)
    padded = open_or_build(ds, 80, resize="pad", log=lambda *_: None).reader().read([0])[0]
    cropped = open_or_build(ds, 80, resize="crop", log=lambda *_: None).reader().read([0])[0]
    assert padded[:, :18].max() == 0 and cropped[:, :18].min() > 0  # (3, 80, 80): black rows only when padded


def test_a_test_split_never_reaches_training(tiny_data, tmp_path):
    root = tmp_path / "d"
    shutil.copytree(tiny_data, root)
    shutil.copytree(root / "val", root / "test")
    for loader in ("cached", "datablock"):
        cfg = TrainConfig(data=str(root), size=64, bs=8, loader=loader, workers=0)
        ds, dls = make_dls(cfg, 64, torch.device("cpu"), log=lambda *_: None)
        assert len(ds.split("test")) == 16
        n = len(dls.train.dataset) + len(dls.valid.dataset)
        assert n == 48, loader  # 32 training + 16 validation images; the 16 test images are not there


def test_datablock_validation_preprocesses_as_the_bundle_does_even_with_random_crops(tiny_data):
    """Claim confirmed (fastai's RandomResizedCrop validates by squashing to size + 14 % and cutting
    the centre): with min_scale < 1 the DataBlock loader's validation images were not the bundle's.
    Now validation is the plain Resize, identical to predict's preprocessing."""
    from app.data.loaders import norm
    from app.model.bundle import to_input

    cfg = TrainConfig(data=str(tiny_data), size=64, bs=4, loader="datablock", min_scale=0.5, workers=0)
    ds, dls = make_dls(cfg, 64, torch.device("cpu"), log=lambda *_: None)
    x, _ = dls.valid.one_batch()
    paths = [str(p) for p in dls.valid.items[:4]]
    n = norm()
    want = to_input([load_square(p, 64) for p in paths], n.mean.flatten().tolist(), n.std.flatten().tolist())
    assert np.abs(x.numpy() - want).max() < 1e-4


def test_training_images_without_augmentation_for_review_train(tiny_data):
    """Claim confirmed for the DataBlock loader: the training dataset handed to the validation
    loader (review --train) kept its random crops, so two passes differed. split_dl gives the
    validation transforms: two passes are identical."""
    from app.data.loaders import split_dl

    cfg = TrainConfig(data=str(tiny_data), size=64, bs=32, loader="datablock", min_scale=0.5, workers=0)
    ds, dls = make_dls(cfg, 64, torch.device("cpu"), log=lambda *_: None)
    old = dls.valid.new(dls.train.dataset, shuffle=False, drop_last=False)
    assert not torch.equal(old.one_batch()[0], old.one_batch()[0])  # augmented
    dl = split_dl(dls, ds, "train")
    assert len(dl.items) == 32 and torch.equal(dl.one_batch()[0], dl.one_batch()[0])
    cached = make_dls(cfg.replace(loader="cached"), 64, torch.device("cpu"), log=lambda *_: None)[1]
    cdl = split_dl(cached, ds, "train")
    assert len(cdl.dataset) == 32 and torch.equal(cdl.one_batch()[0], cdl.one_batch()[0])


def test_the_cached_loader_normalises_in_the_batchs_own_memory_with_imagenet_statistics(tiny_data):
    """Issue 29: the cached loader's Normalize writes into the batch IntToFloatTensor has just made
    (no two new batch-sized tensors per batch); its numbers are still ImageNet's statistics applied
    in numpy, fastai's own Normalize bit for bit, and they decode back to the cache's pixels."""
    from fastai.data.transforms import IntToFloatTensor, Normalize

    from app.data.loaders import norm
    from app.model.cam import IMAGENET_MEAN, IMAGENET_STD

    cfg = TrainConfig(data=str(tiny_data), size=64, bs=4, workers=0)
    _, dls = make_dls(cfg, 64, torch.device("cpu"), log=lambda *_: None)
    n = [t for t in dls.valid.after_batch.fs if isinstance(t, Normalize)]
    assert len(n) == 1
    raw, _ = next(iter(dls.valid.create_batches(dls.valid.get_idxs())))  # gathered uint8, untransformed
    floats = IntToFloatTensor()(raw)
    out = n[0](floats)
    assert out.data_ptr() == floats.data_ptr()  # in place
    assert torch.equal(out, norm()(IntToFloatTensor()(raw)))  # fastai's own Normalize, bit for bit
    mean, std = np.array(IMAGENET_MEAN).reshape(1, 3, 1, 1), np.array(IMAGENET_STD).reshape(1, 3, 1, 1)
    assert np.abs(out.numpy() - (raw.numpy() / 255 - mean) / std).max() < 1e-5
    back = IntToFloatTensor().decode(n[0].decode(out))  # what show_batch does
    assert (back - raw.long()).abs().max() <= 1  # fastai's decode truncates: within a grey level


@pytest.mark.parametrize("loader", ["cached", "datablock"])
def test_validation_sees_whole_images_at_the_test_size_while_training_keeps_its_own(tiny_data, loader):
    """Issue 29 (--test-scale, FixRes): at every progressive size, training batches stay at the
    training size and validation batches are the bundle's own preprocessing at the test size
    (predict's load_square: 96 px stays 96, 128 px is validated at 160). fastai's affine, which on a
    validation batch would only resample it back to the training size, leaves the cached loader's
    validation batches alone; TTA's augmented passes (split 0) still get it."""
    from app.data.loaders import item_paths, norm, set_size
    from app.model.bundle import to_input

    cfg = TrainConfig(data=str(tiny_data), size=128, progressive="96:0.5", bs=4, loader=loader, min_scale=0.6,
                      test_scale=1.25, workers=0)
    _, dls = make_dls(cfg, 96, torch.device("cpu"), log=lambda *_: None)
    n = norm()
    mean, std = n.mean.flatten().tolist(), n.std.flatten().tolist()
    paths = item_paths(dls.valid)[:4]
    for size, test in ((96, 96), (128, 160)):
        set_size(dls, size)
        assert dls.train.one_batch()[0].shape[-2:] == (size, size)
        x = dls.valid.one_batch()[0].numpy()
        want = to_input([load_square(p, test) for p in paths], mean, std)
        assert x.shape == want.shape == (4, 3, test, test)
        # 160 px: the cache stored at 160 (cached) or the file itself (datablock), so the same pixels; 96 px:
        # the 128 px cache resized, within 3.5 grey levels (1/255 / std is about 0.018) on average, where
        # another image of the set is more than ten times as far
        assert np.abs(x - want).mean() < (1e-4 if test == 160 or loader == "datablock" else 0.06), (size, loader)
        assert np.abs(x - np.roll(want, 1, axis=0)).mean() > 0.6
    if loader == "cached":
        with dls.valid.dataset.set_split_idx(0):  # what learn.tta does to the validation loader
            a, b = dls.valid.one_batch()[0], dls.valid.one_batch()[0]
        assert a.shape[-2:] == (128, 128) and not torch.equal(a, b)  # fastai's random affine, at the training size

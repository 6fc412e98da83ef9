"""Every awkward image file gets a defined result: decoded upright to RGB, or a skip reason."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from app.data.images import BadImage, center_crop_resize, check_image, load_square, open_rgb

from ..conftest import ROOT, SHARED, need_shared
from ..corpus import as_root, make_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    need_shared()
    src = next((SHARED / "train" / "n03028079").iterdir())
    return make_corpus(tmp_path_factory.mktemp("corpus"), src)


def test_every_corpus_file_has_its_expected_verdict(corpus):
    for name, (path, expected) in corpus.items():
        if name == "unreadable.jpg" and as_root():
            continue  # root reads anything; covered by the next test in a non-root process
        reason = check_image(path)
        if expected == "ok":
            assert reason is None, f"{name}: {reason}"
            im = open_rgb(path)
            assert im.mode == "RGB" and min(im.size) > 0
        else:
            assert reason is not None and expected in reason, f"{name}: {reason!r} lacks {expected!r}"


def test_unreadable_file_is_refused_for_a_normal_user(corpus):
    path = corpus["unreadable.jpg"][0]
    if not as_root():
        assert "permission denied" in check_image(path)
        return
    # Root reads anything: run the check as root without the capabilities that bypass file
    # permissions (util-linux setpriv), so mode 000 really is unreadable.
    setpriv = shutil.which("setpriv")
    if not setpriv:
        pytest.skip("root here, and util-linux setpriv is missing to drop CAP_DAC_OVERRIDE")
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from app.data.images import check_image; print(check_image({str(path)!r}))"
    out = subprocess.run([setpriv, "--bounding-set", "-dac_override,-dac_read_search", sys.executable, "-c", code],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.strip() == "permission denied", out.stdout


def test_a_fifo_named_like_an_image_is_skipped_not_read(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    assert check_image(fifo) == "not a regular file (a FIFO, socket or device)"  # opening it would block


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_a_fifo_in_a_dataset_does_not_hang_data(tiny_data, tmp_path):
    """The scan opened every file to read its mode before the regular-file check: a FIFO blocked
    `data` and training for ever (reproduced: killed by the timeout)."""
    import shutil

    from ..conftest import run_cli

    root = tmp_path / "d"
    shutil.copytree(tiny_data, root)
    os.mkfifo(root / "train" / sorted(p.name for p in (root / "train").iterdir())[0] / "pipe.jpg")
    p = run_cli("data", root, timeout=120)
    assert p.returncode == 0 and "pipe.jpg: not a regular file" in p.stdout, p.stderr


def test_exif_rotation_is_applied(corpus):
    im = open_rgb(corpus["exif_rotated.jpg"][0])
    assert im.size == (64, 96)  # stored 96 wide x 64 high, displayed rotated


def test_12bit_data_in_a_16bit_file_is_scaled_by_its_bit_depth(tmp_path):
    """A 12-bit sensor's values (0..4095) in a 16-bit PNG: scaled by 4095, not by 65535 into near-black."""
    ramp = np.linspace(0, 4095, 64 * 64).astype(np.uint16).reshape(64, 64)
    Image.fromarray(ramp).save(tmp_path / "twelve.png")
    a = np.asarray(open_rgb(tmp_path / "twelve.png"))[..., 0]
    assert a.max() == 255 and 120 < a.mean() < 135  # 0..4095 -> 0..255, mean ~127 (was ~8 with / 257)
    from app.data.images import bit_depth

    assert [bit_depth(v) for v in (255, 256, 1023, 4095, 4096, 16383, 65535)] == [8, 10, 10, 12, 14, 14, 16]


def test_16bit_png_is_scaled_not_clipped(corpus):
    a = np.asarray(open_rgb(corpus["gray16.png"][0]))
    assert 100 < a.mean() < 155, a.mean()  # a 0..65535 ramp -> 0..255 ramp, not all-white
    assert a.min() == 0 and a.max() == 255


def test_transparent_areas_become_white(corpus):
    a = np.asarray(open_rgb(corpus["rgba.png"][0]))
    left = a[:, : a.shape[1] // 2 - 2]
    assert left.min() >= 250


def test_cmyk_colours_survive(corpus):
    cm = np.asarray(open_rgb(corpus["cmyk.jpg"][0]), dtype=np.float32)
    src = np.asarray(Image.open(next((SHARED / "train" / "n03028079").iterdir())).convert("RGB"), dtype=np.float32)
    assert np.abs(cm - src).mean() < 12


def test_bomb_is_refused_from_its_header_without_decoding(corpus):
    with pytest.raises(BadImage, match="12000x12000"):
        open_rgb(corpus["bomb.png"][0])


def test_center_crop_resize_matches_fastai_resize(tmp_path):
    """The light predictor's resize equals fastai's validation Resize on a non-square image."""
    from fastai.vision.augment import Resize
    from fastai.vision.core import PILImage

    rng = np.random.default_rng(0)
    im = Image.fromarray(rng.integers(0, 256, (150, 230, 3), dtype=np.uint8))
    ours = np.asarray(center_crop_resize(im, 64))
    theirs = np.asarray(Resize(64)(PILImage(im), split_idx=1))
    assert ours.shape == theirs.shape == (64, 64, 3)
    assert np.array_equal(ours, theirs)


def test_load_square_shape(corpus):
    a = load_square(corpus["grayscale.jpg"][0], 80)
    assert a.shape == (80, 80, 3) and a.dtype == np.uint8


def test_pad_resize_of_a_very_wide_image_stays_small_in_memory_and_matches_fastais_pad(tmp_path):
    """Claim 9 (issue 28): padding a 20000 x 1000 PNG to its long side before resizing made a 1.2 GB
    canvas (peak 1.68 GB for one image, in each cache worker). The long side is resized first now;
    the picture is fastai's Resize(method='pad') within a grey level."""
    import subprocess
    import sys

    import numpy as np
    from fastai.vision.augment import Resize
    from fastai.vision.core import PILImage
    from PIL import Image

    from app.data.images import pad_resize

    wide = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1000, 20000, 3), dtype=np.uint8)).save(
        wide, compress_level=1)
    probe = ("import resource, sys; from app.data.images import open_rgb, pad_resize; im = open_rgb(sys.argv[1]); "
             "b = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; pad_resize(im, 144); "
             "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - b) / 1024)")
    grew = float(subprocess.run([sys.executable, "-c", probe, str(wide)], capture_output=True, text=True,
                                check=True, cwd=ROOT).stdout)
    assert grew < 200, f"pad_resize took {grew:.0f} MB more"
    a = np.zeros((60, 300, 3), np.uint8)
    a[:, :100], a[:, 100:200], a[:, 200:] = (250, 20, 20), (20, 250, 20), (20, 20, 250)
    im = Image.fromarray(a)
    ours = np.asarray(pad_resize(im, 96), dtype=np.float32)
    theirs = np.asarray(Resize(96, method="pad", pad_mode="zeros")(PILImage(im), split_idx=1), dtype=np.float32)
    assert ours.shape == theirs.shape == (96, 96, 3) and np.abs(ours - theirs).mean() < 2.0

"""Many classes: a real 200-class subset (Tiny ImageNet, its words.txt names) and a generated
1,000-class set of tiny images, each trained one epoch and evaluated through every figure and the
report, which must stay bounded: every figure at most MAX_SIDE pixels on each side and MAX_MP
megapixels (today's confusion matrix at 200 classes was 24,849 x 12,434 px), the report under
MAX_REPORT_MB."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.evaluation.figures import FIGURES, figure_path

from ..conftest import ROOT, assert_png, run_cli

TINY = ROOT.parent / "shared" / "data" / "tiny-imagenet-200-64"
MAX_SIDE, MAX_MP, MAX_REPORT_MB = 4000, 12.0, 4.0


def generated(root: Path, n_classes: int, train: int = 2, val: int = 1, side: int = 64) -> Path:
    """n_classes classes of small noisy solid-colour JPEGs (learnable, cheap)."""
    rng = np.random.default_rng(0)
    for c in range(n_classes):
        base = rng.integers(0, 256, 3)
        for split, n in (("train", train), ("val", val)):
            d = root / split / f"class{c:04d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(np.clip(base + rng.normal(0, 30, (side, side, 3)), 0, 255).astype(np.uint8)).save(
                    d / f"{i}.jpg", quality=85)
    return root


def check_bounded(run: Path, n_classes: int) -> None:
    for f in FIGURES:
        p = figure_path(run, f.key)
        if f.key == "lr_find" or f.audit or f.task == "multi":  # lr-find's, the audit's (tests/audit), multi-label's
            continue
        assert_png(p)
        with Image.open(p) as im:
            w, h = im.size
        assert w <= MAX_SIDE and h <= MAX_SIDE and w * h <= MAX_MP * 1e6, f"{p.name}: {w}x{h}"
    size_mb = (run / "report.html").stat().st_size / 1e6
    assert size_mb < MAX_REPORT_MB, f"report.html is {size_mb:.1f} MB"
    m = json.loads((run / "metrics.json").read_text())
    assert len(m["classes"]) == n_classes and len(m["per_class"]) == n_classes


@pytest.mark.slow
def test_200_real_classes_through_every_figure_and_the_report(tmp_path):
    if not TINY.is_dir():
        pytest.skip(f"real data not found at {TINY}")
    from app.data.subset import make_subset

    data = make_subset(TINY, tmp_path / "tiny200", 3, 1, seed=0)  # 600 training, 200 validation images
    run = tmp_path / "run"
    run_cli("fit-one-cycle", "--data", data, "--epochs", 1, "--size", 64, "--bs", 64, "--out", run, check=True)
    check_bounded(run, 200)
    m = json.loads((run / "metrics.json").read_text())
    assert "goldfish" in m["classes"]  # words.txt's first name, not the wnid
    html = (run / "report.html").read_text()
    assert "200 classes (open)" in html  # the per-class table folded


@pytest.mark.slow
def test_1000_generated_classes_through_every_figure_and_the_report(tmp_path):
    data = generated(tmp_path / "c1000", 1000)
    run = tmp_path / "run"
    run_cli("fit-one-cycle", "--data", data, "--epochs", 1, "--size", 64, "--bs", 64, "--out", run, check=True)
    check_bounded(run, 1000)
    m = json.loads((run / "metrics.json").read_text())
    assert "confusion_sparse" in m and "confusion" not in m  # metrics.json stays small
    assert (run / "metrics.json").stat().st_size < 2e6

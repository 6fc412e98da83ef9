"""Calibration: torchmetrics' ECE against the reliability bins (two computations of one number),
temperature scaling against a planted temperature, and the held-out check that scaling helps an
over-confident model on images it was not fitted on."""

import numpy as np
import pytest

from app.evaluation.calibration import calibration_entry, ece, held_out_calibrated, reliability_bins
from app.model.bundle import calibrated, fit_temperature, softmax

from ..conftest import assert_png


def _planted(n=20000, classes=6, temperature=2.5, seed=0):
    """Logits whose labels are drawn from softmax(logits / temperature): the model is over-confident
    by exactly that temperature."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 3.0, (n, classes))
    p = softmax(z / temperature)
    y = (rng.random(n)[:, None] > np.cumsum(p, 1)).sum(1)
    return z, y


def test_temperature_scaling_recovers_the_planted_temperature():
    z, y = _planted(temperature=2.5)
    assert fit_temperature(z, y) == pytest.approx(2.5, rel=0.05)
    z, y = _planted(temperature=0.6, seed=1)  # under-confident: a temperature below 1
    assert fit_temperature(z, y) == pytest.approx(0.6, rel=0.05)


def test_ece_is_the_reliability_bins_weighted_gap_and_scaling_lowers_it_on_held_out_images():
    z, y = _planted()
    p = softmax(z)
    bins = reliability_bins(p, y)
    assert len(bins) == 15 and sum(b[4] for b in bins) == len(y)
    by_hand = sum(b[4] / len(y) * abs(b[3] - b[2]) for b in bins)
    assert ece(p, y) == pytest.approx(by_hand, abs=1e-5)  # torchmetrics and the diagram's bins agree
    assert ece(p, y) > 0.15  # over-confident by 2.5x: a large gap
    after, temps = held_out_calibrated(z, y)
    assert all(t == pytest.approx(2.5, rel=0.08) for t in temps)  # each half's fit, on the other half's images
    assert ece(after, y) < 0.02
    assert calibrated(z, 1.0) == pytest.approx(p, abs=1e-6)


def test_metrics_entry_and_the_reliability_figure(tmp_path):
    from app.evaluation.figures import reliability

    z, y = _planted(n=2000)
    c = calibration_entry(softmax(z), y)  # from probabilities: their logarithms serve as logits
    assert c["temperature"] == pytest.approx(fit_temperature(z, y), rel=1e-3)
    assert c["ece_after"] < c["ece"] and c["n"] == 2000
    assert_png(reliability({"calibration": c}, tmp_path / "r.png"))
    assert reliability({}, tmp_path / "none.png") is None

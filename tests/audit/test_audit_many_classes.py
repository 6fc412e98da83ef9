"""audit on 200 real classes (a Tiny ImageNet subset): every figure it draws bounded as evaluation's
are (tests/evaluation/test_many_classes.py), the report under its limit, the tables cut to a page."""

import json

import pytest
from PIL import Image

from app.cli import main
from app.evaluation.findings import read_findings

from ..evaluation.test_many_classes import MAX_MP, MAX_REPORT_MB, MAX_SIDE, TINY


@pytest.mark.slow
def test_an_audit_of_200_classes_stays_bounded(tmp_path):
    if not TINY.is_dir():
        pytest.skip(f"real data not found at {TINY}")
    from app.data.subset import make_subset

    data = make_subset(TINY, tmp_path / "tiny200", 3, 1, seed=0)  # 600 training, 200 validation images
    run, audit = tmp_path / "run", tmp_path / "audit"
    assert main(["fit-one-cycle", "--data", str(data), "--epochs", "1", "--size", "64", "--bs", "64", "--out",
                 str(run), "--no-figures"]) == 0  # the audit's figures are what is tested here
    assert main(["audit", str(run), "--folds", "2", "--epochs", "1", "--out", str(audit)]) == 0
    drawn = sorted((audit / "figures").iterdir())
    assert {"13_label_issues.jpg", "11_reliability.png", "12_gradcam_top_losses.jpg"} <= {f.name for f in drawn}
    for f in drawn:
        with Image.open(f) as im:
            w, h = im.size
        assert w <= MAX_SIDE and h <= MAX_SIDE and w * h <= MAX_MP * 1e6, f"{f.name}: {w}x{h}"
    assert (audit / "report.html").stat().st_size < MAX_REPORT_MB * 1e6
    html = (audit / "report.html").read_text()
    n = len(read_findings(audit)["label_issue"])
    if n > 25:
        assert f"... {n - 25} more in audit.csv" in html
    m = json.loads((audit / "metrics.json").read_text())
    assert len(m["classes"]) == 200 and m["n"] == 200

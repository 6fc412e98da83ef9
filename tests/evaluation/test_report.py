"""report.html: self-contained, and it renders in a real headless Chromium with every image decoded."""

import os
import re
import shutil
from pathlib import Path

import pytest

from ..conftest import assert_png, run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def report(fitted):
    run, _ = fitted
    p = run_cli("report", run, check=True)
    return run / "report.html", p


def test_report_is_self_contained(report):
    path, p = report
    html = path.read_text()
    assert str(path) in p.stdout
    assert not re.search(r"""(src|href)=["']https?:""", html), "report must not need the network"
    assert "<script" not in html
    imgs = re.findall(r'<img [^>]*src="data:image/(png|jpeg);base64,', html)
    assert len(imgs) >= 9 + 10  # figures + top-loss thumbnails
    for words in ("Configuration", "Metrics per class", "Most confused pairs", "Top losses", "Training history"):
        assert words in html


def headless_chromium(tmp_path: Path, height: int = 2000):
    """A selenium driver on headless Chromium with a profile of its own (skipped where it is not
    installed, failed where CI requires it); the caller quits it."""
    if not (CHROMIUM and DRIVER):
        if os.environ.get("APP_REQUIRE_CHROMIUM"):
            pytest.fail("chromium/chromedriver missing but required (APP_REQUIRE_CHROMIUM)")
        pytest.skip("chromium and chromedriver are not installed (Debian: apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", f"--window-size=1280,{height}"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(DRIVER), options=opts)


def test_report_renders_in_headless_chromium(report, tmp_path):
    path, _ = report
    driver = headless_chromium(tmp_path)
    try:
        driver.get(Path(path).resolve().as_uri())
        assert driver.execute_script("return document.readyState") == "complete"
        sizes = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt]);")
        assert len(sizes) >= 19
        bad = [s for s in sizes if not (s[0] and s[1] > 0)]
        assert not bad, f"images that did not decode: {bad[:5]}"
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert not errors, errors
        shot = path.parent / "report_screenshot.png"
        driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    assert_png(shot)


def test_every_value_read_back_from_run_files_is_escaped(fitted, tmp_path):
    """Edited run files: markup in numeric columns too (a probability cell, a support count, a
    history cell, the image count) is shown as text, never as HTML."""
    import csv
    import json

    run = shutil.copytree(fitted[0], tmp_path / "run", ignore=shutil.ignore_patterns("*.pth"))
    evil = "<script>alert(1)</script>"
    with open(run / "top_losses.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rows[0].update(probability=evil, loss="<img src=x onerror=alert(2)>", top3=evil, actual=evil)
    with open(run / "top_losses.csv", "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    m = json.loads((run / "metrics.json").read_text())
    first = next(iter(m["per_class"]))
    m["per_class"][first].update(support=evil, precision="<b>99</b>")
    m["n"], m["most_confused"] = evil, [[evil, evil, evil]]
    (run / "metrics.json").write_text(json.dumps(m))
    hist = (run / "history.csv").read_text().splitlines()
    hist[1] = hist[1].replace(hist[1].split(",")[1], evil, 1)
    (run / "history.csv").write_text("\n".join(hist) + "\n")
    run_cli("report", run, check=True)
    page = (run / "report.html").read_text()
    assert "<script" not in page and "<img src=x" not in page and "<b>99</b>" not in page
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 6


def test_the_time_budget_section_lists_every_epochs_planned_and_actual_seconds():
    from app.evaluation.report import _time

    epochs = [{"epoch": 0, "size": 64, "validated": False, "plan_epochs": 24, "batches": 148, "planned_s": 14.0,
               "actual_s": 15.5},
              {"epoch": 1, "size": 128, "validated": True, "plan_epochs": 23, "batches": 61, "planned_s": 30.2,
               "actual_s": 29.1}]
    meta = {"plan": {"budget_s": 900.0, "epochs": 24, "predicted_s": 886.5}, "wall_seconds": 887.1,
            "time_keeper": {"epochs": epochs, "plan": {}}}
    html = _time(meta)
    assert "budget 900 s, took 887 s (98.6 %); first plan 24 epoch(s), predicted 886 s" in html
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", html)
    assert cells[:7] == ["0", "64", "-", "24", "148", "14.0", "15.5"] and cells[7:14] == ["1", "128", "yes", "23",
                                                                                          "61", "30.2", "29.1"]
    assert cells[-2:] == ["44.2", "44.6"]  # the sums
    assert _time({"plan": meta["plan"]}) == ""  # a run without the keeper: no section

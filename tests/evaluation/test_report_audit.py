"""The audit's report section: what was planted is on the page (the leaked copies beside their
originals, the dark and blank images), every value read from audit.csv is escaped, and the section
renders in headless Chromium with every image decoded (its screenshot is kept beside the report)."""

import re
import shutil
from pathlib import Path

from app.evaluation.report import write_report

from ..conftest import assert_png
from .test_report import headless_chromium


def test_the_audit_section_lists_what_was_planted(audited):
    audit, _, planted = audited
    html = (audit / "report.html").read_text()
    section = html[html.index('<h2 id="audit">'):]
    for p in planted["pairs"]:
        assert Path(p["copy"]).name in section and Path(p["original"]).name in section
    assert "dark.jpg" in section and "blank.jpg" in section
    assert "3 validation images with a near copy in training" in section
    for fig in ("Label issues with Grad-CAM for the suggested class", "Validation images with a near copy in training",
                "Reliability diagram", "Grad-CAM on the top losses"):
        assert fig in html
    assert not re.search(r"""(src|href)=["']https?:""", html) and "<script" not in html


def test_values_from_audit_csv_are_escaped(audited, tmp_path):
    audit, _, _ = audited
    copy = shutil.copytree(audit, tmp_path / "audit", ignore=shutil.ignore_patterns("folds"))
    evil = "<script>alert(1)</script>"
    text = (copy / "audit.csv").read_text().splitlines()
    head, first = text[0].split(","), text[1].split(",")
    first[head.index("given")] = evil
    first[head.index("detail")] = "<img src=x onerror=alert(2)>"
    (copy / "audit.csv").write_text("\n".join([text[0], ",".join(first), *text[2:]]) + "\n")
    page = write_report(copy).read_text()
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_the_audit_section_renders_in_headless_chromium(audited, tmp_path):
    from selenium.webdriver.common.by import By

    audit, _, _ = audited
    driver = headless_chromium(tmp_path, 1800)
    try:
        driver.get((audit / "report.html").resolve().as_uri())
        section = driver.find_element(By.ID, "audit")
        driver.execute_script("arguments[0].scrollIntoView();", section)
        sizes = driver.execute_script("return Array.from(document.images).map(i => [i.complete, i.naturalWidth]);")
        assert len(sizes) > 20 and all(ok and w > 0 for ok, w in sizes)
        assert not [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        shot = audit / "audit_section_screenshot.png"
        driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    assert_png(shot)

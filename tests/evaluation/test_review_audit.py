"""review --audit: label issues worst first, then each leaked validation image beside its planted
original; `c` toggles the Grad-CAM overlay; decisions.csv and --apply/--undo as for top losses
(headless with Textual's pilot, and once in tmux as a person uses it)."""

import asyncio
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from app.data.edits import DECISIONS
from app.evaluation.review import load_audit_entries, make_app

from ..conftest import ROOT, assert_one_line_error, run_cli
from .test_review import keep_remove_quit, tmux_or_skip


@pytest.fixture()
def audit_copy(audited, tmp_path):
    """A copy of the audit whose dataset is a private, writable copy of the planted one."""
    audit, _, planted = audited
    old = str(planted["root"].resolve())
    data = shutil.copytree(planted["root"], tmp_path / "data", symlinks=False)  # the links' files, copied
    new = shutil.copytree(audit, tmp_path / "audit", ignore=shutil.ignore_patterns("folds"))
    cfg = json.loads((new / "config.json").read_text())
    cfg["config"]["data"] = str(data)
    cfg["config"]["labels"] = str(shutil.copy(planted["labels"], tmp_path / "labels.csv"))
    (new / "config.json").write_text(json.dumps(cfg))
    (new / "audit.csv").write_text((new / "audit.csv").read_text().replace(old, str(data)))
    return new, data, planted


def _rows(run):
    with open(run / DECISIONS) as f:
        return list(csv.DictReader(f))


def test_entries_are_label_issues_worst_first_then_leakage_pairs(audited):
    audit, _, planted = audited
    entries = load_audit_entries(audit)
    kinds = [e.kind for e in entries]
    n = kinds.count("label_issue")
    assert n > 0 and kinds[:n] == ["label_issue"] * n and kinds[n : n + 3] == ["leakage"] * 3
    assert [e.loss for e in entries[:n]] == sorted(e.loss for e in entries[:n])  # label quality, lowest first
    root = planted["root"].resolve()
    pairs = {Path(e.path).relative_to(root).as_posix(): Path(e.other).relative_to(root).as_posix()
             for e in entries if e.kind == "leakage"}
    assert pairs == {p["copy"]: p["original"] for p in planted["pairs"]}
    assert_one_line_error(run_cli("review", audit.parent / "run", "--audit"), 5, "no audit.csv")


def test_keys_decide_and_c_toggles_the_grad_cam_overlay(audit_copy):
    run, _, _ = audit_copy
    entries = load_audit_entries(run)
    first_leak = next(i for i, e in enumerate(entries) if e.kind == "leakage")
    seen = {}

    async def drive():
        app = make_app(run, entries, graphics="unicode")
        async with app.run_test(size=(140, 45)) as pilot:
            plain = np.asarray(app.query_one("#picture").image)
            await pilot.press("c")
            seen["cam"] = np.asarray(app.query_one("#picture").image)
            seen["plain"] = plain
            seen["details"] = app.query_one("#details").visual.plain
            await pilot.press("c")
            seen["back"] = np.asarray(app.query_one("#picture").image)
            await pilot.press("k", "x")
            app.pos = first_leak
            app.show()
            seen["pair"] = app.query_one("#picture").image.size
            await pilot.press("x", "q")

    asyncio.run(drive())
    from PIL import Image

    overlay = np.asarray(Image.open(entries[0].cam).convert("RGB"))
    assert seen["cam"].shape == overlay.shape and np.abs(seen["cam"].astype(int) - overlay).mean() < 1
    assert np.abs(seen["cam"].astype(int) - np.asarray(Image.fromarray(seen["plain"]).resize(overlay.shape[1::-1])))\
        .mean() > 5  # the overlay, not the picture
    assert np.array_equal(seen["back"], seen["plain"]) and "Grad-CAM:   on" in seen["details"]
    w, h = seen["pair"]
    assert h == 256 and w > 2 * 200  # the leaked image and its training copy side by side
    rows = _rows(run)
    assert [(r["path"], r["decision"]) for r in rows] == [(entries[0].path, "keep"), (entries[1].path, "remove"),
                                                          (entries[first_leak].path, "remove")]


def test_apply_quarantines_a_leaked_copy_and_undo_restores_it(audit_copy):
    run, data, _ = audit_copy
    from app.data.edits import Decisions

    leak = next(e for e in load_audit_entries(run) if e.kind == "leakage")
    Decisions(run / DECISIONS).record(leak, "remove")
    before = sorted(p.relative_to(data) for p in data.rglob("*") if p.is_file())
    run_cli("review", run, "--apply", "--yes", check=True)
    assert not Path(leak.path).exists()
    assert len(list((data / "quarantine").rglob(Path(leak.path).name))) == 1
    run_cli("review", run, "--undo", "--yes", check=True)
    after = sorted(p.relative_to(data) for p in data.rglob("*") if p.is_file() and "quarantine" not in p.parts)
    assert after == before


def test_review_audit_in_tmux_as_a_person_would(audit_copy):
    tmux = tmux_or_skip()
    run, _, _ = audit_copy
    name = f"audit{os.getpid()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMUX")}
    cmd = f"cd {ROOT} && {sys.executable} -m app review {run} --audit --graphics halfcell; sleep 30"
    subprocess.run([tmux, "new-session", "-d", "-s", name, "-x", "150", "-y", "50", cmd], check=True, env=env)

    def screen_with(text, tries=120):
        out = ""
        for _ in range(tries):
            time.sleep(0.5)
            out = subprocess.run([tmux, "capture-pane", "-p", "-t", name], capture_output=True, text=True).stdout
            if text in out:
                break
        return out

    try:
        screen = screen_with("suggested:")
        assert "label issue" in screen and "given:" in screen and "Grad-CAM:   off" in screen, screen
        subprocess.run([tmux, "send-keys", "-t", name, "c"], check=True)
        assert "Grad-CAM:   on" in screen_with("Grad-CAM:   on", 40)
        keep_remove_quit(tmux, name, run)
    finally:
        subprocess.run([tmux, "kill-session", "-t", name], capture_output=True)

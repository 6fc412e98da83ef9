"""review: keys -> decisions CSV (headless, Textual's pilot, and once through tmux as a person uses
it), resume, --apply / --undo moving files with a manifest, refusing anything outside the root."""

import asyncio
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.data.edits import DECISIONS, Decisions
from app.evaluation.review import load_entries, make_app

from ..conftest import ROOT, assert_one_line_error, run_cli


@pytest.fixture()
def review_run(fitted, tmp_path):
    """A copy of the fitted run whose data is a private, writable copy of the dataset."""
    run, _ = fitted
    cfg = json.loads((run / "config.json").read_text())
    old_root = Path(cfg["config"]["data"])
    data = shutil.copytree(old_root, tmp_path / "data")
    new = shutil.copytree(run, tmp_path / "run", ignore=shutil.ignore_patterns("*.pth"))
    cfg["config"]["data"] = str(data)
    (new / "config.json").write_text(json.dumps(cfg))
    tl = (new / "top_losses.csv").read_text().replace(str(old_root), str(data))
    (new / "top_losses.csv").write_text(tl)
    return new, data


def _rows(run):
    with open(run / DECISIONS) as f:
        return list(csv.DictReader(f))


def test_keys_write_decisions_at_once_and_a_new_session_resumes(review_run):
    run, _ = review_run
    entries = load_entries(run)

    async def drive():
        app = make_app(run, entries, graphics="unicode")
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("k")
            assert len(_rows(run)) == 1  # written immediately, not at exit
            await pilot.press("x")
            await pilot.press("r")
            await pilot.press("down", "enter")
            await pilot.press("b")
            await pilot.press("k")
            await pilot.press("q")

    asyncio.run(drive())
    rows = _rows(run)
    assert [r["decision"] for r in rows] == ["keep", "remove", "relabel", "keep"]
    assert [r["path"] for r in rows] == [entries[0].path, entries[1].path, entries[2].path, entries[2].path]
    assert rows[2]["new_class"] and rows[2]["new_class"] != entries[2].actual
    latest = Decisions(run / DECISIONS).latest
    assert latest[entries[2].path]["decision"] == "keep"  # the last word wins

    async def resume():
        app = make_app(run, entries, graphics="unicode")
        async with app.run_test(size=(120, 40)) as pilot:
            assert app.pos == 3
            await pilot.press("q")

    asyncio.run(resume())


def test_apply_moves_files_with_a_manifest_and_undo_restores(review_run):
    run, data = review_run
    entries = load_entries(run)
    d = Decisions(run / DECISIONS)
    gone, moved, kept = entries[0], entries[1], entries[2]
    d.record(gone, "remove")
    cfg = json.loads((run / "config.json").read_text())
    other = next(c for c in cfg["classes"] if c != moved.actual)
    d.record(moved, "relabel", other)
    d.record(kept, "keep")
    before = sorted(p.relative_to(data) for p in data.rglob("*") if p.is_file())

    p = run_cli("review", run, "--apply", input="n\n")
    assert p.returncode == 0 and "nothing was changed" in p.stdout
    assert sorted(p.relative_to(data) for p in data.rglob("*") if p.is_file()) == before

    p = run_cli("review", run, "--apply", "--yes", check=True)
    assert not Path(gone.path).exists() and not Path(moved.path).exists() and Path(kept.path).exists()
    synset = cfg["synsets"][cfg["classes"].index(other)]
    assert (data / "val" / synset / Path(moved.path).name).is_file()
    manifests = list((data / "quarantine").glob("*/manifest.json"))
    assert len(manifests) == 1
    m = json.loads(manifests[0].read_text())
    assert {x["kind"] for x in m["moves"]} == {"remove", "relabel"}
    assert Path(m["moves"][0]["to"]).is_file()

    run_cli("review", run, "--undo", "--yes", check=True)
    after = sorted(p.relative_to(data) for p in data.rglob("*") if p.is_file() and "quarantine" not in p.parts)
    assert after == before


def test_apply_refuses_paths_outside_the_root_and_reports_missing_files(review_run, tmp_path):
    run, data = review_run
    outside = tmp_path / "precious.jpg"
    outside.write_bytes(b"mine")
    entries = load_entries(run)
    with open(run / DECISIONS, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "decision", "new_class", "actual", "predicted", "loss", "time"])
        w.writerow([str(outside), "remove", "", "x", "y", "1", "t"])
        w.writerow([str(data / "val" / ".." / ".." / "precious.jpg"), "remove", "", "x", "y", "1", "t"])
        w.writerow([str(data / "val" / "n01440764" / "vanished.jpg"), "remove", "", "x", "y", "1", "t"])
        w.writerow([entries[0].path, "relabel", "../../escape", "x", "y", "1", "t"])
    p = run_cli("review", run, "--apply", "--yes", check=True)
    # the same outside file spelt two ways: one decision (the later, through val/../..), refused
    assert p.stdout.count("outside the dataset root (refused)") == 1 and "listed twice" in p.stdout
    assert "no longer present" in p.stdout and "unknown class" in p.stdout
    assert "nothing to apply" in p.stdout
    assert outside.read_bytes() == b"mine" and Path(entries[0].path).exists()


def test_apply_without_decisions_is_one_line(review_run):
    run, _ = review_run
    assert_one_line_error(run_cli("review", run, "--apply", "--yes"), 5, "review it first")


def test_review_in_tmux_as_a_person_would(review_run):
    tmux = tmux_or_skip()
    run, _ = review_run
    name = f"review{os.getpid()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMUX")}
    cmd = f"cd {ROOT} && {sys.executable} -m app review {run} --graphics halfcell; sleep 30"
    subprocess.run([tmux, "new-session", "-d", "-s", name, "-x", "140", "-y", "45", cmd], check=True, env=env)
    try:
        screen = ""
        for _ in range(120):
            time.sleep(0.5)
            screen = subprocess.run([tmux, "capture-pane", "-p", "-t", name], capture_output=True, text=True).stdout
            if "predicted:" in screen:
                break
        assert "predicted:" in screen and "actual:" in screen, screen
        keep_remove_quit(tmux, name, run)
    finally:
        subprocess.run([tmux, "kill-session", "-t", name], capture_output=True)


def tmux_or_skip() -> str:
    """tmux's path; skipped where it is not installed, failed where CI requires it."""
    tmux = shutil.which("tmux")
    if not tmux:
        if os.environ.get("APP_REQUIRE_TMUX"):
            pytest.fail("tmux missing but required (APP_REQUIRE_TMUX)")
        pytest.skip("tmux is not installed")
    return tmux


def keep_remove_quit(tmux: str, name: str, run: Path) -> None:
    """Keys k, x, q typed into the tmux session `name`: decisions.csv then holds keep and remove."""
    for key in ("k", "x", "q"):
        subprocess.run([tmux, "send-keys", "-t", name, key], check=True)
        time.sleep(1.0)
    for _ in range(40):
        if (run / DECISIONS).exists() and len(_rows(run)) == 2:
            break
        time.sleep(0.5)
    assert [r["decision"] for r in _rows(run)] == ["keep", "remove"]


def test_review_train_adds_the_training_images_worst_first(fitted, tmp_path):
    """`review --train`: one pass over the training images without augmentation, written beside the
    validation list, then everything reviewed worst first."""
    run = shutil.copytree(fitted[0], tmp_path / "run")
    entries = load_entries(run, include_train=True)
    by_split = {s: [e for e in entries if e.split == s] for s in ("train", "val")}
    assert len(by_split["train"]) == 160 and len(by_split["val"]) == 60
    assert (run / "top_losses_train.csv").is_file()
    assert all("/train/" in e.path for e in by_split["train"])
    assert [e.loss for e in entries] == sorted((e.loss for e in entries), reverse=True)
    first = (run / "top_losses_train.csv").read_text()
    (run / "top_losses_train.csv").unlink()
    load_entries(run, include_train=True)  # a second pass: without augmentation, the very same losses
    assert (run / "top_losses_train.csv").read_text() == first


def _screen_run(tmp_path, classes):
    """A run (no training) whose config names `classes`, over a generated dataset."""
    from ..data.test_edits import make_dataset

    run, root = make_dataset(tmp_path)
    cfg = json.loads((run / "config.json").read_text())
    cfg["classes"] = cfg["synsets"] = classes
    (run / "config.json").write_text(json.dumps(cfg))
    return run, root


def _screen_text(app) -> tuple[str, list[str]]:
    from textual.widgets import OptionList, Static

    ol = app.query_one("#classes", OptionList)
    details = app.query_one("#details", Static).visual.plain
    return details, [ol.render_line(y).text.rstrip() for y in range(ol.option_count)]  # as drawn on screen


def test_markup_in_class_names_and_paths_is_shown_as_typed(tmp_path):
    from app.evaluation.review import Entry

    names = ["[reverse]loud", "[link=http://x]tench", "back\\[b]slash"]
    run, root = _screen_run(tmp_path, names)
    img = root / "val" / "alpha" / "alpha_0000.png"
    odd = img.parent / "[" / "x]" / "[reverse]x.png"  # "[/x]" in the folder shown
    odd.parent.mkdir(parents=True)
    img.rename(odd)
    entry = Entry(str(odd), names[0], names[1], 0.7, 1.2, top3_cell([(names[1], 0.7), (names[0], 0.2)]))

    async def drive():
        app = make_app(run, [entry], graphics="unicode")
        async with app.run_test(size=(140, 45)) as pilot:
            await pilot.press("r")
            await pilot.pause()
            return _screen_text(app)

    details, options = asyncio.run(drive())
    assert options == [f"{i}  {n}" for i, n in enumerate(names)]
    for typed in (names[0], names[1], "[reverse]x.png", "[/x]", f"{names[1]} 0.700"):
        assert typed in details, details


def test_a_class_name_with_a_colon_is_shown_from_new_and_old_top3_cells(tmp_path):
    from app.evaluation.review import Entry
    from app.evaluation.top_losses import parse_top3

    names = ["12:30 train", "tench"]
    run, root = _screen_run(tmp_path, names)
    img = str(root / "val" / "alpha" / "alpha_0000.png")
    old = "12:30 train:0.900;tench:0.100"  # the format written before
    assert parse_top3(old) == parse_top3(top3_cell([(names[0], 0.9), (names[1], 0.1)])) == [(names[0], 0.9),
                                                                                             (names[1], 0.1)]
    for cell in (old, top3_cell([(names[0], 0.9), (names[1], 0.1)])):
        async def drive(cell=cell):
            app = make_app(run, [Entry(img, names[1], names[0], 0.9, 2.3, cell)], graphics="unicode")
            async with app.run_test(size=(140, 45)):
                return _screen_text(app)[0]

        assert "12:30 train 0.900" in asyncio.run(drive())


def top3_cell(pairs):
    from app.evaluation.top_losses import format_top3

    return format_top3(pairs)

"""review --apply / --undo on a dataset: nothing is ever overwritten (the destination is checked by
the move itself), every move's intent is journalled before it happens so that SIGKILL at any
point leaves an exact record and --undo completes, and every odd decision is one listed line.

The datasets here are small generated ones (the moves do not decode images), so no training runs."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from rich.console import Console

from app.data.edits import DECISIONS, FIELDS, apply_decisions, undo_apply

from ..conftest import KILL_AT, ROOT, assert_one_line_error, cli, kill_at, run_cli

CLASSES = ["alpha", "beta", "gamma"]


def _png(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    Image.new("RGB", (8, 8), tuple(rng.randrange(256) for _ in range(3))).save(path)
    return path


def make_dataset(base: Path, per_class: int = 3) -> tuple[Path, Path]:
    """(run, root): a dataset of tiny PNGs and a run directory whose config.json points at it."""
    root = base / "data"
    n = 0
    for split in ("train", "val"):
        for c in CLASSES:
            for i in range(per_class):
                n += 1
                _png(root / split / c / f"{c}_{i:04d}.png", n)
    run = base / "run"
    run.mkdir()
    cfg = {"config": {"data": str(root)}, "classes": CLASSES, "synsets": CLASSES, "status": "finished"}
    (run / "config.json").write_text(json.dumps(cfg))
    return run, root


def write_decisions(run: Path, rows: list[tuple[str, str, str]]) -> None:
    with open(run / DECISIONS, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(FIELDS)
        for path, decision, new_class in rows:
            w.writerow([path, decision, new_class, "alpha", "beta", "1.0", "t"])


def files(root: Path) -> dict[str, bytes]:
    """Every file of the dataset outside quarantine/, with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "quarantine" not in p.relative_to(root).parts}


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


@pytest.fixture()
def dataset(tmp_path):
    return make_dataset(tmp_path)


def test_two_same_named_files_relabelled_with_the_screens_keys_both_survive(dataset):
    """IMG_0001.JPG in two classes, both relabelled to a third with the review screen's own keys."""
    from app.evaluation.review import Entry, make_app

    run, root = dataset
    a, b = _png(root / "val" / "alpha" / "IMG_0001.JPG", 100), _png(root / "val" / "beta" / "IMG_0001.JPG", 101)
    entries = [Entry(str(a), "alpha", "gamma", 0.9, 3.0, "gamma:0.900"),
               Entry(str(b), "beta", "gamma", 0.8, 2.0, "gamma:0.800")]
    before = files(root)

    async def drive():
        app = make_app(run, entries, graphics="unicode")
        async with app.run_test(size=(120, 40)) as pilot:
            for _ in entries:
                await pilot.press("r", "end", "enter")  # the last class of the list: gamma
            await pilot.press("q")

    asyncio.run(drive())
    with open(run / DECISIONS) as f:
        assert [(r["decision"], r["new_class"]) for r in csv.DictReader(f)] == [("relabel", "gamma")] * 2
    p = run_cli("review", run, "--apply", "--yes", check=True)
    after = files(root)
    assert len(after) == len(before)  # 20 files before, 20 after: neither overwrote the other
    moved = sorted(n for n in after if n.startswith("val/gamma/IMG_0001"))
    assert len(moved) == 2 and {after[n] for n in moved} == {before[str(a.relative_to(root))],
                                                           before[str(b.relative_to(root))]}
    (manifest,) = (root / "quarantine").glob("*/manifest.json")
    tos = sorted(Path(m["to"]).relative_to(root).as_posix() for m in json.loads(manifest.read_text())["moves"])
    assert tos == moved, p.stdout  # the free name given to the second is the one recorded
    run_cli("review", run, "--undo", "--yes", check=True)
    assert files(root) == before


def test_a_destination_taken_by_an_unrelated_file_gets_a_free_name(dataset):
    run, root = dataset
    src = root / "val" / "alpha" / "alpha_0000.png"
    theirs = _png(root / "val" / "beta" / "alpha_0000.png", 999).read_bytes()
    before = files(root)
    write_decisions(run, [(str(src), "relabel", "beta")])
    p = run_cli("review", run, "--apply", "--yes", check=True)
    assert "val/beta/alpha_0000-2.png" in p.stdout  # the plan shown is what happens
    assert (root / "val" / "beta" / "alpha_0000.png").read_bytes() == theirs
    assert (root / "val" / "beta" / "alpha_0000-2.png").read_bytes() == before["val/alpha/alpha_0000.png"]
    run_cli("review", run, "--undo", "--yes", check=True)
    assert files(root) == before


def test_the_move_itself_refuses_a_destination_created_after_planning(dataset, monkeypatch):
    """A file that appears at the destination between the plan and the move is not overwritten."""
    from app.data import edits

    run, root = dataset
    src = root / "val" / "alpha" / "alpha_0001.png"
    before = files(root)
    write_decisions(run, [(str(src), "relabel", "gamma")])
    plan = edits.plan_moves

    racer = []

    def plan_then_race(*a, **kw):
        out = plan(*a, **kw)
        racer.append(_png(root / "val" / "gamma" / "alpha_0001.png", 555).read_bytes())  # after the check
        return out

    monkeypatch.setattr(edits, "plan_moves", plan_then_race)
    apply_decisions(run, quiet(), assume_yes=True)
    assert (root / "val" / "gamma" / "alpha_0001.png").read_bytes() == racer[0]
    assert (root / "val" / "gamma" / "alpha_0001-2.png").read_bytes() == before["val/alpha/alpha_0001.png"]


def test_a_file_listed_twice_moves_once_and_is_listed(dataset):
    run, root = dataset
    write_decisions(run, [("val/alpha/alpha_0000.png", "remove", ""), ("./val/alpha/alpha_0000.png", "remove", "")])
    p = run_cli("review", run, "--apply", "--yes", cwd=root, env={"PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stderr
    assert "listed twice" in p.stdout and "internal error" not in p.stderr
    assert len(list((root / "quarantine").rglob("alpha_0000.png"))) == 1


def test_relabelling_a_file_directly_in_root_is_one_listed_line(dataset):
    run, root = dataset
    stray = _png(root / "stray.png", 7)
    write_decisions(run, [(str(stray), "relabel", "beta"), (str(root / "val" / "beta" / "beta_0000.png"), "remove", "")])
    p = run_cli("review", run, "--apply", "--yes")
    assert p.returncode == 0, p.stderr
    lines = [ln for ln in p.stdout.splitlines() if "stray.png" in ln]
    assert len(lines) == 1 and "skipped" in lines[0] and "class folder" in lines[0], p.stdout
    assert stray.is_file() and not (root / "val" / "beta" / "beta_0000.png").exists()


def test_a_quarantine_that_is_a_symlink_is_refused_and_nothing_is_written_outside(dataset, tmp_path):
    run, root = dataset
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (root / "quarantine").symlink_to(outside)
    before = files(root)
    write_decisions(run, [(str(root / "val" / "alpha" / "alpha_0000.png"), "remove", ""),
                          (str(root / "val" / "alpha" / "alpha_0001.png"), "relabel", "beta")])
    assert_one_line_error(run_cli("review", run, "--apply", "--yes"), 3, "quarantine", "symlink")
    assert list(outside.iterdir()) == [] and files(root) == before


def test_two_applies_in_the_same_second_get_their_own_folders_and_both_undo(dataset, monkeypatch):
    run, root = dataset
    before = files(root)
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20250101-120000")
    for name in ("alpha_0000.png", "alpha_0001.png"):
        write_decisions(run, [(str(root / "val" / "alpha" / name), "remove", ""),
                              (str(root / "train" / "beta" / name.replace("alpha", "beta")), "relabel", "gamma")])
        apply_decisions(run, quiet(), assume_yes=True)
    folders = sorted(p for p in (root / "quarantine").iterdir() if p.is_dir())
    assert len(folders) == 2
    for f in folders:
        assert len(json.loads((f / "manifest.json").read_text())["moves"]) == 2
    undo_apply(run, quiet(), assume_yes=True)
    undo_apply(run, quiet(), assume_yes=True)
    assert files(root) == before
    assert not [p for p in (root / "quarantine").rglob("*.png")]


def test_a_truncated_manifest_is_recovered_from_the_journal(dataset):
    run, root = dataset
    before = files(root)
    write_decisions(run, [(str(root / "val" / "alpha" / "alpha_0000.png"), "remove", "")])
    run_cli("review", run, "--apply", "--yes", check=True)
    (mf,) = (root / "quarantine").glob("*/manifest.json")
    mf.write_text(mf.read_text()[:40])
    p = run_cli("review", run, "--undo", "--yes", check=True)
    assert "moved 1 file(s) back" in p.stdout
    assert files(root) == before


def test_a_truncated_manifest_without_a_journal_is_one_line(dataset):
    """A manifest written by an older version (no journal beside it), cut short."""
    run, root = dataset
    q = root / "quarantine" / "20240101-000000"
    q.mkdir(parents=True)
    (q / "manifest.json").write_text('{"run": "x", "moves": [{"kind": "remove", "fr')
    assert_one_line_error(run_cli("review", run, "--undo", "--yes"), 3, "manifest.json")


def test_sigkill_at_random_points_then_undo_restores_the_exact_file_set(tmp_path):
    """SIGKILL a real `review --apply --yes` at random steps of its moves (and once an --undo too);
    after --undo the dataset holds exactly the files it held before, byte for byte."""
    rng = random.Random(23)
    for k in range(6):
        run, root = make_dataset(tmp_path / f"k{k}", per_class=20)
        before = files(root)
        rows = [(str(root / n), "remove" if i % 3 == 0 else "relabel", CLASSES[(CLASSES.index(n.split("/")[1]) + 1) % 3])
                for i, n in enumerate(before)]
        write_decisions(run, [(p, d, c if d == "relabel" else "") for p, d, c in rows])
        point, n = rng.choice(["link", "unlink", "fsync"]), rng.randrange(1, len(before))
        assert kill_at(point, n, "review", run, "--apply", "--yes") == -signal.SIGKILL
        moved = sum(1 for n in before if not (root / n).exists())
        assert 0 < moved < len(before), f"kill {k} at {point} #{n}: {moved} of {len(before)} moved"
        if k == 5:
            assert kill_at("link", rng.randrange(1, moved + 1), "review", run, "--undo", "--yes") == -signal.SIGKILL
        p = run_cli("review", run, "--undo", "--yes")
        assert p.returncode == 0, p.stdout + p.stderr
        assert files(root) == before, f"kill {k} at {point} #{n}: {moved} moved"


@pytest.mark.parametrize("point,n", [("link", 1), ("link", 4), ("unlink", 1), ("unlink", 4), ("fsync", 3)])
def test_sigkill_right_after_each_step_of_a_move_then_undo_restores(tmp_path, point, n):
    """The kill lands exactly after the n-th hard link (both names exist), unlink (the move is done,
    its `done` record not yet written) or journal fsync, in a real `review --apply --yes` process."""
    run, root = make_dataset(tmp_path, per_class=2)
    before = files(root)
    write_decisions(run, [(str(root / k), "remove" if i % 2 else "relabel", "gamma" if "gamma" not in k else "alpha")
                          for i, k in enumerate(before)])
    p = subprocess.run([sys.executable, "-c", KILL_AT, point, str(n), "review", str(run), "--apply", "--yes"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert files(root) != before  # the kill left the dataset half-changed
    p = run_cli("review", run, "--undo", "--yes")
    assert p.returncode == 0, p.stdout + p.stderr
    assert files(root) == before


def test_markup_in_paths_is_printed_as_typed(tmp_path):
    """A dataset under a folder `[` holding `x]`: every path has `[/x]` in it, and rich would take
    it for a closing tag."""
    run, root = make_dataset(tmp_path / "[" / "x]" / "[reverse]")
    write_decisions(run, [(str(root / "val" / "alpha" / "alpha_0000.png"), "relabel", "beta"),
                          (str(root / "val" / "alpha" / "gone.png"), "remove", "")])
    p = run_cli("review", run, "--apply", "--yes")
    assert p.returncode == 0, p.stderr
    assert f"{root}/val/alpha/gone.png: no longer present" in p.stdout and f"1 change(s) in {root}" in p.stdout
    p = run_cli("review", run, "--undo", "--yes")
    assert p.returncode == 0 and "[/x]/[reverse]/data/quarantine" in p.stdout, p.stdout + p.stderr


def make_csv_dataset(base: Path, per_class: int = 3, inside: bool = True) -> tuple[Path, Path, Path]:
    """(run, root, labels.csv): tiny PNGs in one folder, their classes in a CSV (kept inside the root,
    or beside it), and a run whose config.json reads it as a training run stores it."""
    root = base / "data"
    rows, n = [], 0
    for c in CLASSES:
        for i in range(per_class):
            n += 1
            name = f"img/{c}_{i:04d}.png"
            _png(root / name, n)
            rows.append([name, c, "1" if i == 0 else "0", f"note {n}"])
    labels = (root if inside else base) / "labels.csv"
    with open(labels, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\r\n")  # as Excel writes it: CRLF, an extra column
        w.writerow(["fname", "label", "is_valid", "comment"])
        w.writerows(rows)
    run = base / "run"
    run.mkdir()
    stored = "labels.csv" if inside else str(labels)
    cfg = {"config": {"data": str(root), "labels": stored}, "classes": CLASSES, "synsets": CLASSES}
    (run / "config.json").write_text(json.dumps(cfg))
    return run, root, labels


def csv_rows(labels: Path) -> dict[str, str]:
    with open(labels, newline="", encoding="utf-8") as f:
        return {r["fname"]: r["label"] for r in csv.DictReader(f)}


def test_apply_edits_the_csv_for_removals_and_relabels_and_undo_restores_it_byte_for_byte(tmp_path):
    from app.data.scan import scan

    run, root, labels = make_csv_dataset(tmp_path)
    before, csv_before = files(root), labels.read_bytes()
    write_decisions(run, [(str(root / "img/alpha_0001.png"), "remove", ""),
                          (str(root / "img/beta_0002.png"), "relabel", "gamma"),
                          (str(root / "img/gamma_0001.png"), "keep", "")])
    p = cli("review", run, "--apply", "--yes", check=True)
    assert "1 row(s) of" not in p.stdout and "2 row(s) of" in p.stdout
    rows = csv_rows(labels)
    assert "img/alpha_0001.png" not in rows and rows["img/beta_0002.png"] == "gamma" and len(rows) == 8
    assert not (root / "img/alpha_0001.png").exists() and (root / "img/beta_0002.png").is_file()  # a relabel stays
    ds = scan(root, labels=root / "labels.csv")  # the dataset reads: no row names a missing file
    assert len(ds.items) == 8 and ds.counts()["train"][CLASSES.index("gamma")] == 3
    text = labels.read_bytes()
    assert text.count(b"\r\n") == 9 and b"note 2" not in text and b"note 6" in text  # CRLF, other columns kept
    cli("review", run, "--undo", "--yes", check=True)
    assert labels.read_bytes() == csv_before and files(root) == before


def test_apply_edits_a_csv_kept_outside_the_root_and_never_writes_through_a_hard_link(tmp_path):
    import os

    run, root, labels = make_csv_dataset(tmp_path, inside=False)
    keep = tmp_path / "my-copy.csv"
    os.link(labels, keep)  # the user's other name for the same file
    original = keep.read_bytes()
    write_decisions(run, [(str(root / "img/gamma_0002.png"), "relabel", "alpha")])
    cli("review", run, "--apply", "--yes", check=True)
    assert csv_rows(labels)["img/gamma_0002.png"] == "alpha" and keep.read_bytes() == original
    cli("review", run, "--undo", "--yes", check=True)
    assert labels.read_bytes() == original


@pytest.mark.parametrize("point,n", [("replace", 1), ("fsync", 2), ("link", 1), ("unlink", 1)])
def test_sigkill_during_a_csv_apply_then_undo_restores_files_and_rows(tmp_path, point, n):
    """Killed right after the labels file was published (replace), after its journal record (fsync 2),
    or in the first file move: the dataset reads at every point, and --undo restores it exactly."""
    from app.data.scan import scan

    run, root, labels = make_csv_dataset(tmp_path)
    before, csv_before = files(root), labels.read_bytes()
    write_decisions(run, [(str(root / "img/alpha_0002.png"), "remove", ""),
                          (str(root / "img/beta_0001.png"), "relabel", "alpha"),
                          (str(root / "img/gamma_0000.png"), "remove", "")])
    assert kill_at(point, n, "review", run, "--apply", "--yes") == -signal.SIGKILL
    assert len(scan(root, labels=labels).items) >= 7
    cli("review", run, "--undo", "--yes", check=True)
    assert files(root) == before and labels.read_bytes() == csv_before


def test_a_moved_csv_dataset_is_followed_by_data_and_undo_finds_its_journal(tmp_path):
    """The run stores the CSV relative to the root: a moved (or copied) dataset reads its own CSV,
    and review --apply / --undo with --data work on the moved copy."""
    run, root, labels = make_csv_dataset(tmp_path)
    assert json.loads((run / "config.json").read_text())["config"]["labels"] == "labels.csv"
    write_decisions(run, [(str(root / "img/alpha_0001.png"), "remove", ""),
                          (str(root / "img/beta_0001.png"), "relabel", "gamma")])
    cli("review", run, "--apply", "--yes", check=True)
    new = tmp_path / "elsewhere"
    root.rename(new)
    assert_one_line_error(cli("review", run, "--undo", "--yes"), 3, "data folder is gone", "--data")
    cli("review", run, "--undo", "--yes", "--data", new, check=True)
    assert (new / "img/alpha_0001.png").is_file() and csv_rows(new / "labels.csv")["img/beta_0001.png"] == "beta"
    cli("review", run, "--apply", "--yes", "--data", new, check=True)  # decisions recorded at the old root
    assert not (new / "img/alpha_0001.png").exists() and csv_rows(new / "labels.csv")["img/beta_0001.png"] == "gamma"

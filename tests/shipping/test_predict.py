"""predict: the bundle path runs without torch or fastai; folders are batched; files are never overwritten."""

import json
import os
import subprocess
import sys

import pytest

from ..conftest import ROOT, assert_one_line_error, run_cli
from ..corpus import make_corpus


@pytest.fixture(scope="module")
def bundle(fitted, tmp_path_factory):
    run, _ = fitted
    to = tmp_path_factory.mktemp("predict") / "m.pkl"
    run_cli("export", run, "--to", to, check=True)
    return to.with_suffix("")


def test_bundle_predict_and_help_import_neither_torch_nor_fastai(bundle, small_data):
    img = next((small_data / "val" / "n03888257").iterdir())
    code = (
        "import sys\n"
        "from app.cli import main\n"
        f"rc = main(['predict', {str(bundle)!r}, {str(img)!r}])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'fastai', 'torchvision'))\n"
        "print('RC', rc, 'HEAVY', heavy)\n"
        "rc = main(['--help'])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'fastai', 'torchvision'))\n"
        "print('RC', rc, 'HEAVY', heavy)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("RC 0 HEAVY []") == 2, p.stdout[-2000:]
    assert "parachute" in p.stdout


def test_bad_images_in_a_folder_are_listed_and_the_rest_classified(bundle, small_data, tmp_path):
    src = next((small_data / "val" / "n03028079").iterdir())
    corpus = make_corpus(tmp_path / "mixed", src)
    out = tmp_path / "preds.jsonl"
    p = run_cli("predict", bundle, tmp_path / "mixed", "--jsonl", out, "--top-k", 4, check=True)
    ok = {n for n, (_, e) in corpus.items() if e == "ok"}
    results = [json.loads(line) for line in out.read_text().splitlines()]
    got = {r["path"].rsplit("/", 1)[-1] for r in results}
    assert ok <= got
    for name, (_, expected) in corpus.items():
        if expected != "ok" and name != "unreadable.jpg":
            assert name not in got
            assert f"{name}: {expected}" in p.stdout.replace("\n", " ") or expected in p.stdout
    assert "skipped" in p.stdout and "Traceback" not in p.stderr
    assert "Warning" not in p.stderr, p.stderr  # the bomb is listed with its size, not warned about
    for r in results:  # all 4 classes asked for: a full distribution, best first
        probs = [x["probability"] for x in r["predictions"]]
        assert len(probs) == 4 and abs(sum(probs) - 1) < 1e-4 and probs == sorted(probs, reverse=True)


def test_nothing_readable_is_exit_7_and_outputs_are_never_overwritten(bundle, tmp_path):
    d = tmp_path / "junk"
    d.mkdir()
    (d / "a.jpg").write_text("text")
    assert_one_line_error(run_cli("predict", bundle, d), 7, "no readable image")
    keep = tmp_path / "mine.csv"
    keep.write_text("precious")
    assert_one_line_error(run_cli("predict", bundle, d, "--csv", keep), 5, "already exists")
    assert keep.read_text() == "precious"


def test_one_file_for_both_csv_and_jsonl_is_refused_before_any_work(bundle, small_data, tmp_path):
    out = tmp_path / "both.out"
    assert_one_line_error(run_cli("predict", bundle, small_data / "val", "--csv", out, "--jsonl", out), 2,
                          "--csv and --jsonl")
    assert not out.exists()


def test_an_existing_jsonl_is_never_overwritten(bundle, small_data, tmp_path):
    keep = tmp_path / "mine.jsonl"
    keep.write_text("precious")
    assert_one_line_error(run_cli("predict", bundle, small_data / "val", "--jsonl", keep), 5, "already exists")
    assert keep.read_text() == "precious"


def test_a_full_disk_is_one_line_and_leaves_no_empty_csv(bundle, small_data, tmp_path):
    from ..mounts import full_disk, listing, run_mounted

    disk, left = tmp_path / "disk", tmp_path / "left"
    p = run_mounted(full_disk(disk), "predict", bundle, small_data / "val", "--csv", disk / "preds.csv",
                    after=listing(disk, left))
    assert_one_line_error(p, 5, "no space left", "preds.csv")
    assert left.read_text().split() == [".fill"]  # what the full disk held afterwards: no CSV, no temporary


def test_a_read_only_folder_is_one_line_before_the_predictions(bundle, small_data, tmp_path):
    from ..mounts import read_only, run_mounted

    ro = tmp_path / "ro"
    ro.mkdir()
    for opt in ("--csv", "--jsonl"):
        p = run_mounted(read_only(ro), "predict", bundle, small_data / "val", opt, ro / "out")
        assert_one_line_error(p, 5, "read-only", str(ro / "out"))
        assert "classified" not in p.stdout  # refused before the work, not after it


def test_markup_in_paths_and_class_names_is_shown_as_typed(bundle, small_data, tmp_path):
    import csv
    import shutil

    names = ["[reverse]loud", "[/x]", "[link=http://example.com]tench", "[bold red]"]
    odd = tmp_path / "odd"
    shutil.copytree(bundle, odd)
    meta = json.loads((odd / "model.json").read_text())
    meta["classes"] = names
    (odd / "model.json").write_text(json.dumps(meta))
    folder = tmp_path / "[" / "x]"  # "[/x]" in every path
    folder.mkdir(parents=True)
    for f in sorted((small_data / "val" / "n03888257").iterdir())[:2]:
        shutil.copy(f, folder / f"[reverse]{f.name}")
    out = tmp_path / "p.csv"
    for target in (folder, next(folder.iterdir())):
        p = run_cli("predict", odd, target, "--csv", out, "--top-k", 4, check=True)
        assert str(target if target.is_file() else folder) in p.stdout and "[reverse]ILSVRC" in p.stdout
        assert sum(n in p.stdout for n in names) >= 2, p.stdout
        with open(out, newline="") as f:
            rows = list(csv.DictReader(f))
        assert rows and all(r["class_1"] in names for r in rows)
        out.unlink()


def test_outputs_are_written_before_the_table_is_printed(bundle, small_data, tmp_path):
    from rich.console import Console

    from app.shipping.predict import predict_path

    csv_path, jsonl = tmp_path / "p.csv", tmp_path / "p.jsonl"
    seen = []

    class Watching(Console):
        def print(self, *a, **kw):
            seen.append((csv_path.is_file() and csv_path.stat().st_size > 0, jsonl.is_file()))
            return super().print(*a, **kw)

    predict_path(bundle, small_data / "val" / "n03888257", csv_path=csv_path, jsonl=jsonl,
                 console=Watching(file=open(os.devnull, "w")))
    assert seen and all(c and j for c, j in seen)

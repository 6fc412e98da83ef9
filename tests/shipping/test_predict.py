"""predict: the bundle path runs without torch or fastai; folders are batched; files are never overwritten."""

import json
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

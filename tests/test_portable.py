"""Any laptop: training, evaluation and predict run with the POSIX-only names hidden from the app
(`resource`, `fcntl`, `termios` unimportable from app/, `os.preadv` and `os.pread` absent), as on
Windows, and with every file app/ opens in text mode named with its encoding (Windows' locale is
cp1252: a class named 猫 failed after training, in train.log; issue 28 claim 11). The child runs with
`-X warn_default_encoding` and app/'s EncodingWarnings as errors. Claim confirmed: app/measure.py imported `resource` (every training command failed at
import on Windows) and the cache read rows with os.preadv; on macOS ru_maxrss is bytes, not KB."""

import sys
from pathlib import Path

import pytest

from .conftest import ROOT

HIDE = f"""
import builtins, os, sys, warnings
warnings.filterwarnings("error", category=EncodingWarning, module=r"app(\\.|$)")
HIDDEN = {{"resource", "fcntl", "termios"}}
real_import = builtins.__import__
def windows_import(name, globals=None, locals=None, fromlist=(), level=0):
    if level == 0 and name.split(".")[0] in HIDDEN and (globals or {{}}).get("__name__", "").split(".")[0] == "app":
        raise ImportError(f"No module named {{name!r}} (hidden: POSIX only)")
    return real_import(name, globals, locals, fromlist, level)
builtins.__import__ = windows_import  # every import statement of app/ goes through here, cached or not
for name in ("preadv", "pread"):
    if hasattr(os, name):
        delattr(os, name)
sys.path.insert(0, {str(ROOT)!r})
sys.argv = ["python -m app", *sys.argv[1:]]
import runpy
runpy.run_module("app", run_name="__main__")
"""


def hidden_cli(*args, **kw):
    import subprocess

    return subprocess.run([sys.executable, "-X", "warn_default_encoding", "-c", HIDE, *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, encoding="utf-8", timeout=600, **kw)


def test_the_hiding_works():
    p = hidden_cli("--help")
    assert p.returncode == 0, p.stderr
    import subprocess

    probe = HIDE.replace('runpy.run_module("app", run_name="__main__")',
                         'import app.core.host as h\ntry:\n    exec("import resource", {"__name__": "app.x"})\n'
                         '    print("visible")\nexcept ImportError:\n    print("hidden")\nprint(hasattr(os, "preadv"))')
    probe += '\ntry:\n    exec("open(__file__).close()", {"__name__": "app.y", "__file__": sys.executable})\nexcept EncodingWarning:\n    print("encoding")'
    out = subprocess.run([sys.executable, "-X", "warn_default_encoding", "-c", probe], cwd=ROOT, capture_output=True,
                         text=True).stdout.split()
    assert out == ["hidden", "False", "encoding"]


@pytest.mark.slow
def test_training_evaluation_export_and_predict_without_posix_only_modules(tiny_data, tmp_path):
    import csv
    import re
    import shutil

    data = tmp_path / "データ"
    shutil.copytree(tiny_data, data)
    for split in ("train", "val"):  # a class named 猫 in a folder named データ
        (data / split / sorted(p.name for p in (data / split).iterdir())[0]).rename(data / split / "猫")
    run = tmp_path / "run"
    p = hidden_cli("fit-one-cycle", "--data", data, "--epochs", 1, "--size", 64, "--bs", 8, "--out", run)
    assert p.returncode == 0, p.stderr[-2000:]
    import json

    assert "猫" in json.loads((run / "metrics.json").read_text(encoding="utf-8"))["classes"]
    with open(run / "top_losses.csv", newline="", encoding="utf-8") as f:
        victim = next(r["path"] for r in csv.DictReader(f) if "猫" in r["path"])
    (run / "decisions.csv").write_text(f"path,decision,new_class,actual,predicted,loss,time\n{victim},remove,,猫,猫,1,t\n",
                                       encoding="utf-8")
    assert hidden_cli("review", run, "--apply", "--yes").returncode == 0 and not Path(victim).exists()
    assert hidden_cli("review", run, "--undo", "--yes").returncode == 0 and Path(victim).exists()
    peak = int(re.search(r"peak host memory (\d+) MB", p.stdout)[1])
    assert 200 < peak < 20000  # megabytes (psutil), not ru_maxrss's bytes or kilobytes
    pkl = tmp_path / "m" / "model.pkl"
    assert hidden_cli("export", run, "--to", pkl).returncode == 0
    q = hidden_cli("predict", pkl.with_suffix(""), next((tiny_data / "val").rglob("*.JPEG")))
    assert q.returncode == 0 and "classified 1 image(s)" in q.stdout, q.stderr[-2000:]

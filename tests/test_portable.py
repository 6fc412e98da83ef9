"""Any laptop: training, evaluation and predict run with the POSIX-only names hidden from the app
(`resource`, `fcntl`, `termios` unimportable from app/, `os.preadv` and `os.pread` absent), as on
Windows. Claim confirmed: app/measure.py imported `resource` (every training command failed at
import on Windows) and the cache read rows with os.preadv; on macOS ru_maxrss is bytes, not KB."""

import sys

import pytest

from .conftest import ROOT

HIDE = f"""
import builtins, os, sys
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

    return subprocess.run([sys.executable, "-c", HIDE, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, **kw)


def test_the_hiding_works():
    p = hidden_cli("--help")
    assert p.returncode == 0, p.stderr
    import subprocess

    probe = HIDE.replace('runpy.run_module("app", run_name="__main__")',
                         'import app.core.host as h\ntry:\n    exec("import resource", {"__name__": "app.x"})\n'
                         '    print("visible")\nexcept ImportError:\n    print("hidden")\nprint(hasattr(os, "preadv"))')
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert out == ["hidden", "False"]


@pytest.mark.slow
def test_training_evaluation_export_and_predict_without_posix_only_modules(tiny_data, tmp_path):
    import re

    run = tmp_path / "run"
    p = hidden_cli("fit-one-cycle", "--data", tiny_data, "--epochs", 1, "--size", 64, "--bs", 8, "--out", run)
    assert p.returncode == 0, p.stderr[-2000:]
    peak = int(re.search(r"peak host memory (\d+) MB", p.stdout)[1])
    assert 200 < peak < 20000  # megabytes (psutil), not ru_maxrss's bytes or kilobytes
    pkl = tmp_path / "m" / "model.pkl"
    assert hidden_cli("export", run, "--to", pkl).returncode == 0
    q = hidden_cli("predict", pkl.with_suffix(""), next((tiny_data / "val").rglob("*.JPEG")))
    assert q.returncode == 0 and "classified 1 image(s)" in q.stdout, q.stderr[-2000:]

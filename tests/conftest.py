"""Shared fixtures: small real subsets of the shared Imagenette copy, built once per session,
private cache/runs/models folders, and a helper that runs the CLI exactly as a user types it."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
# Under pytest-xdist (README command 2: -n 2) the cores are shared out among the workers and what they
# start: two workers of two threads each on a 2-core host oversubscribe it (measured: 1.07x over one
# worker, 1.29x with one thread each). Set before torch is first imported, which reads it then.
if os.environ.get("PYTEST_XDIST_WORKER"):
    _workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _workers)))
# APP_TEST_DATA points the tests at another copy (or at nothing, to check what happens without data).
SHARED = Path(os.environ.get("APP_TEST_DATA") or ROOT.parent / "shared" / "data" / "imagenette2-224")
# Four classes that differ in colour and shape, so a few epochs from random init clearly beat chance.
EASY = ["n01440764", "n03028079", "n03445777", "n03888257"]  # tench, church, golf ball, parachute


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: trains a model for more than a few seconds")
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (tests/test_gpu.py; skipped without one)")
    from app.core.host import command_started

    command_started()  # a process's first command counts from its start: here, each in-process one from its own


# Session fixtures that train (tens of seconds each): every module that uses one is sent to the same
# xdist worker, so it is built once per run instead of once per worker (README command 2's
# --dist loadscope keeps a module on one worker; this keeps these modules together).
SHARED_BUILDS = ("audited", "tracked")


def shared_build_of(module: Path) -> str | None:
    """The first of SHARED_BUILDS a test module asks for, read from its source."""
    text = module.read_text(encoding="utf-8")
    return next((name for name in SHARED_BUILDS if re.search(rf"\b{name}\b", text)), None)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    if config.getvalue("dist") != "loadscope":
        return None
    groups = {Path(os.path.relpath(m, config.rootpath.resolve())).as_posix(): g
              for m in (ROOT / "tests").rglob("test_*.py") if (g := shared_build_of(m))}

    class TogetherScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            group = groups.get(scope.split("::", 1)[0])
            return f"built-once:{group}" if group else scope

    return TogetherScheduling(config, log)


@pytest.fixture(scope="session", autouse=True)
def private_dirs(tmp_path_factory):
    """Caches, runs and exports of the tests never touch the user's folders."""
    base = tmp_path_factory.mktemp("appdirs")
    env = {"APP_CACHE_DIR": str(base / "cache"), "APP_RUNS_DIR": str(base / "runs"),
           "APP_MODELS_DIR": str(base / "models"), "APP_PROGRESS": "0"}  # warnings shown: tests can see them
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield base
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def need_shared():
    if not SHARED.is_dir():
        pytest.skip(f"real data not found at {SHARED}")


@pytest.fixture(scope="session")
def small_data(tmp_path_factory):
    """4 classes x (40 train + 15 val) real images."""
    need_shared()
    from app.data.subset import make_subset

    return make_subset(SHARED, tmp_path_factory.mktemp("data") / "small", 40, 15, classes=EASY, seed=1)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """4 classes x (8 train + 4 val) real images: for plumbing, not accuracy."""
    need_shared()
    from app.data.subset import make_subset

    return make_subset(SHARED, tmp_path_factory.mktemp("data") / "tiny", 8, 4, classes=EASY, seed=2)


@pytest.fixture(scope="session")
def small_data_72(small_data, tmp_path_factory):
    """small_data's real images at 72 px: `train` trains at their size, so a budget of a minute or
    two holds a run even on a busy 2-core host (the time-budget tests)."""
    dst = tmp_path_factory.mktemp("data") / "small72"
    for f in small_data.rglob("*"):
        if f.is_file():
            out = dst / f.relative_to(small_data)
            out.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(f) as im:
                im.convert("RGB").resize((72, 72)).save(out.with_suffix(".jpg"), quality=90)
    return dst


def run_cli(*args, cwd=ROOT, env=None, timeout=600, check=False, input=None, fresh=False):
    """`python -m app ARGS` as a user types it: in this process (`cli`: the same main(), no interpreter
    start and torch import per call), or with `fresh` in a new process, where the process itself is
    what is tested (imports, signals, warnings printed, the environment it starts with)."""
    if not fresh:
        with _environ(env):
            return cli(*args, cwd=cwd, input=input, check=check)
    e = {**os.environ, **(env or {})}
    p = subprocess.run([sys.executable, "-m", "app", *map(str, args)], cwd=cwd, env=e, capture_output=True,
                       text=True, timeout=timeout, input=input)
    if check and p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}\nstdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}")
    return p


@contextlib.contextmanager
def _environ(env):
    old = {k: os.environ.get(k) for k in env or {}}
    os.environ.update({k: str(v) for k, v in (env or {}).items()})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def cli(*args, cwd=None, input=None, check=False):
    """`python -m app ARGS` in this process (no interpreter start, no torch import per call): what a
    user sees (stdout, stderr, exit code) as a CompletedProcess. Use run_cli where the process itself
    is what is tested (signals, a fresh interpreter, imports)."""
    import io

    from app import cli as app_cli
    from app.cli import main

    out, err = io.StringIO(), io.StringIO()
    old, stdin, argv0 = os.getcwd(), sys.stdin, sys.argv[0]
    environ, widths = dict(os.environ), (app_cli.console.width, app_cli.err_console.width)
    # as piped output gets it (core/paths.py console_width), COLUMNS as rich reads it at start
    app_cli.console.width = app_cli.err_console.width = int(os.environ.get("COLUMNS") or 160)
    try:
        if cwd:
            os.chdir(cwd)
        if input is not None:
            sys.stdin = io.StringIO(input)
        sys.argv[0] = "app/__main__.py"  # the usage lines say `python -m app`, as for a user
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main([str(a) for a in args])
    finally:
        os.chdir(old)
        sys.stdin, sys.argv[0] = stdin, argv0
        app_cli.console.width, app_cli.err_console.width = widths
        os.environ.clear()  # what a command set for itself (a bench's private cache) ends with it
        os.environ.update(environ)
    p = subprocess.CompletedProcess(["python", "-m", "app", *map(str, args)], rc, out.getvalue(), err.getvalue())
    if check and rc != 0:
        raise AssertionError(f"exit {rc}\nstdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}")
    return p


KILL_AT = """
import os, signal, sys
from app.cli import main
point, n = sys.argv[1], int(sys.argv[2])
real, calls = getattr(os, point), []

def then_die(*a, **kw):
    out = real(*a, **kw)
    calls.append(a)
    if len(calls) == n:
        os.kill(os.getpid(), signal.SIGKILL)
    return out

setattr(os, point, then_die)
sys.exit(main(sys.argv[3:]))
"""


def kill_at(point: str, n: int, *args) -> int:
    """Run the CLI with ARGS, os.POINT wrapped to SIGKILL the process right after its n-th successful
    call: a kill at an exact step whatever the host's speed (timed kills missed on a busy CI)."""
    p = subprocess.run([sys.executable, "-c", KILL_AT, point, str(n), *map(str, args)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    return p.returncode


def assert_one_line_error(p, code: int, *words):
    """Non-zero exit with the given code, one line on stderr naming what and where, no traceback."""
    assert p.returncode == code, f"exit {p.returncode} != {code}\n{p.stdout}\n{p.stderr}"
    err = p.stderr.strip()
    assert "Traceback" not in err and "Traceback" not in p.stdout, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"not one line:\n{err}"
    for w in words:
        assert w.lower() in " ".join(lines).lower(), f"{w!r} not in {err!r}"


def assert_png(path: Path, min_side: int = 200):
    """A valid PNG (or JPEG, for a .jpg photo grid), of a real size, not blank (more than one
    colour, real variance)."""
    path = Path(path)
    assert path.is_file(), f"missing {path}"
    magic = b"\xff\xd8\xff" if path.suffix == ".jpg" else b"\x89PNG\r\n\x1a\n"
    assert path.read_bytes()[: len(magic)] == magic, f"{path} is not a {path.suffix[1:].upper()}"
    with Image.open(path) as im:
        im.load()
        assert min(im.size) >= min_side, f"{path} is only {im.size}"
        a = np.asarray(im.convert("L"), dtype=np.float32)
    assert a.std() > 5, f"{path} looks blank (std {a.std():.1f})"
    assert len(np.unique(a)) > 16, f"{path} has almost no content"


FIT_ARGS = ["--size", 64, "--bs", 16, "--lr", 1e-3, "--seed", 7]


@pytest.fixture(scope="session")
def fitted(small_data, tmp_path_factory):
    """8 epochs from random init on 160 real training images (4 classes), evaluated: (run, process)."""
    run = tmp_path_factory.mktemp("fit") / "run"
    p = run_cli("fit-one-cycle", "--data", small_data, "--epochs", 8, *FIT_ARGS, "--out", run, check=True)
    return run, p


# A missing dataset: a hard stop in CI (CI=true), one line at the end of the session elsewhere.
def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


def pytest_sessionstart(session):
    if _in_ci() and not SHARED.is_dir():
        pytest.exit(f"CI: the real data is missing, expected at {SHARED} (APP_TEST_DATA=PATH points elsewhere)",
                    returncode=3)


def pytest_unconfigure(config):
    """After pytest's last line: how many tests the missing data skipped, and where it was expected."""
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is None or SHARED.is_dir():
        return
    reasons = [str(r.longrepr[-1]) if isinstance(r.longrepr, tuple) else str(r.longrepr)
               for r in tr.stats.get("skipped", [])]
    n = sum(str(SHARED) in x or "no shared data" in x for x in reasons)
    if n:
        tr.write_line(f"{n} tests skipped because the real data is missing: expected at {SHARED} "
                      "(APP_TEST_DATA=PATH points elsewhere)", yellow=True, bold=True)


TRACKED_RECIPE = """# a recipe written by hand, with the options' names as keys (train --config)
data: {data}
weights: none
epochs: 2
size: 64
bs: 8
lr: 1e-3
valid-every: 1
progressive: none
track: [tensorboard, mlflow, wandb]
"""


@pytest.fixture(scope="session")
def tracked(tiny_data, tmp_path_factory):
    """`train --config recipe.yaml` in this process, logged to all three trackers (W&B offline, MLflow
    in the default sqlite store beside the runs): the run every tracker-reading test reads back."""
    from app.cli import main

    base = tmp_path_factory.mktemp("tracked")
    recipe = base / "recipe.yaml"
    recipe.write_text(TRACKED_RECIPE.format(data=tiny_data))
    old = {k: os.environ.pop(k, None) for k in ("MLFLOW_TRACKING_URI", "WANDB_MODE", "APP_TRACK")}
    try:
        assert main(["train", "--config", str(recipe), "--out", str(base / "run")]) == 0
    finally:
        os.environ.update({k: v for k, v in old.items() if v is not None})
    return base / "run"


def plant_quality(root, labels_csv, source) -> dict:
    """A dark, a blurry and a near-blank training image (made from a real one of `source`) added to a
    planted dataset and its labels CSV: {file relative to root: the cleanvision check that must flag it}."""
    from PIL import ImageFilter

    with Image.open(source) as im:
        im = im.convert("RGB").resize((160, 160))
    made = {"quality/dark.jpg": ("dark", Image.fromarray((np.asarray(im) * 0.04).astype(np.uint8))),
            "quality/blurry.jpg": ("blurry", im.filter(ImageFilter.GaussianBlur(8))),
            "quality/blank.jpg": ("low_information", Image.new("RGB", (160, 160), (128, 128, 128)))}
    (root / "quality").mkdir()
    for rel, (_, picture) in made.items():
        picture.save(root / rel, quality=92)
    label = source.parent.name
    with open(labels_csv, "a", newline="", encoding="utf-8") as f:
        f.writelines(f"{rel},{label},0\n" for rel in made)
    return {rel: check for rel, (check, _) in made.items()}


@pytest.fixture(scope="session")
def audited(small_data, tmp_path_factory):
    """`audit RUN --folds 2` of a model trained on a planted copy of small_data (its files through links):
    10 % of the training labels changed, 3 training images re-encoded into validation, a dark, a blurry
    and a blank image added. (audit folder, the run, the planted facts)."""
    from app.bench.audit import plant
    from app.cli import main

    base = tmp_path_factory.mktemp("audit")
    planted = plant(small_data, base / "planted", noise=0.1, copies=3, seed=5)
    planted["quality"] = plant_quality(planted["root"], planted["labels"],
                                       next((small_data / "train" / EASY[1]).iterdir()))
    run, audit = base / "run", base / "audit"
    assert main(["fit-one-cycle", "--data", str(planted["root"]), "--labels", str(planted["labels"]), "--epochs", "6",
                 *map(str, FIT_ARGS), "--out", str(run)]) == 0
    assert main(["audit", str(run), "--folds", "2", "--time", "0", "--out", str(audit)]) == 0
    return audit, run, planted

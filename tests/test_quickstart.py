"""examples/quickstart.ipynb run end to end, headless, as CI runs it: nbclient on a kernel of this
venv's Python (a kernel spec written into a temporary folder, nothing global), on a small real
subset. A cell that fails fails the test; the figures come out inline; fastai's
ImageClassifierCleaner is built over the exported learner and shows the highest losses first."""

import csv
import json
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"


def _kernel(tmp_path, env: dict):
    """A KernelManager for a kernel spec of this interpreter (sys.executable), with `env`."""
    from ipykernel.kernelspec import write_kernel_spec
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    specs = tmp_path / "kernels"
    write_kernel_spec(specs / "quickstart", overrides={"env": env, "display_name": "quickstart"})
    ksm = KernelSpecManager(kernel_dirs=[str(specs)])
    assert ksm.get_kernel_spec("quickstart").argv[0] == sys.executable
    return KernelManager(kernel_name="quickstart", kernel_spec_manager=ksm)


@pytest.fixture(scope="module")
def executed(tiny_data, tmp_path_factory, private_dirs):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    tmp = tmp_path_factory.mktemp("quickstart")
    env = {"QUICKSTART_DATA": str(tiny_data), "QUICKSTART_EPOCHS": "1", "QUICKSTART_SIZE": "64", "QUICKSTART_BS": "8",
           "QUICKSTART_WEIGHTS": "none", "APP_RUNS_DIR": str(tmp / "runs"), "APP_CACHE_DIR": str(private_dirs / "cache"),
           "APP_PROGRESS": "0", "PYTHONWARNINGS": "ignore"}
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, km=_kernel(tmp, env), timeout=600, resources={"metadata": {"path": str(
        ROOT / "examples")}})
    client.execute()  # raises CellExecutionError when a cell fails
    return nb


def _outputs(nb, kind: str):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if kind in o.get("data", {})]


def _printed(nb) -> dict:
    """The JSON line the notebook's last cell prints (what its cleaner shows, and the run it made)."""
    return json.loads(nb.cells[-1].outputs[-1]["text"].strip().splitlines()[-1])


def test_the_notebook_runs_its_steps_with_figures_inline(executed):
    """Every code cell ran without an error; the sample grid, the lr-find plot, the loss curve, the
    confusion matrix and the top losses are shown as images; the run it made is a complete fine-tune
    run of the app, on the lr its lr-find recommended, exported, and the pickle predicted."""
    code = [c for c in executed.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code)
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert len(_outputs(executed, "image/png")) + len(_outputs(executed, "image/jpeg")) >= 5
    run = Path(_printed(executed)["run"])
    meta = json.loads((run / "config.json").read_text())
    assert meta["config"]["command"] == "fine-tune" and meta["status"] == "finished"
    assert meta["config"]["lr"] == json.loads((run / "lr_find.json").read_text())["recommended"]
    assert (run / "export" / f"{run.name}.pkl").is_file() and (run / "export" / run.name / "model.json").is_file()
    said = "".join(o.get("text", "") for c in code for o in c.outputs)
    assert said.count(", actually ") == 4  # the loaded pickle's predictions


def test_the_cleaner_widget_is_built_over_the_exported_learners_losses(executed, tiny_data):
    """The widget is displayed (a widget view); for its first class's validation images it shows
    exactly that class's files (the folder says which), highest loss first, and each loss is the one
    the app's own evaluation of the same model gave that file (top_losses.csv): the learner's class
    order was kept (a sorted vocabulary would score every image against another class)."""
    assert _outputs(executed, "application/vnd.jupyter.widget-view+json")
    got = _printed(executed)
    with open(Path(got["run"]) / "top_losses.csv", newline="") as f:
        app = {Path(r["path"]).name: (r["actual"], float(r["loss"])) for r in csv.DictReader(f)}
    folder = {p.name for p in (tiny_data / "val").glob("*/*") if app[p.name][0] == got["category"]}
    shown = [Path(p).name for p in got["shown"]]
    assert set(shown) == folder and len(shown) == got["thumbnails"] == 4
    assert got["losses"] == sorted(got["losses"], reverse=True)
    gaps = {n: abs(loss - app[n][1]) for n, loss in zip(shown, got["losses"])}
    assert max(gaps.values()) < 0.02, gaps  # the same model and labels (pixels resized another way)

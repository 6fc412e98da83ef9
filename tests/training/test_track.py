"""--track: what each tracker holds, read back with its own reader (TensorBoard's EventAccumulator and
its HTTP server, MlflowClient, W&B's `wandb leet inspect` of the offline .wandb log), against the
run's own history.csv, batches.csv and metrics.json; --resume continuing the same tracker runs; a
tracker missing, unreachable or failing mid-run is one line and training goes on."""

import csv
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from app.cli import main
from app.training.track import resolve_track, track_names

from ..conftest import assert_one_line_error


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _epoch_steps(run) -> dict[int, int]:
    """Each epoch's last training batch, counted over the run (1 = the first batch): batches.csv."""
    steps, n = {}, 0
    for r in _rows(run / "batches.csv"):
        n += 1
        steps[int(r["epoch"])] = n
    return steps


def _meta(run):
    return json.loads((run / "config.json").read_text())


def _close(a, b, rel=1e-6):
    return abs(float(a) - float(b)) <= rel * max(1.0, abs(float(b)))


EPOCH_KEYS = ("valid_loss", "accuracy", "f1_score")


def test_tensorboard_event_files_hold_the_history_batch_by_batch(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(tracked / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    ea.Reload()
    sc = {t: {e.step: e.value for e in ea.Scalars(t)} for t in ea.Tags()["scalars"]}
    batches, history, steps = _rows(tracked / "batches.csv"), _rows(tracked / "history.csv"), _epoch_steps(tracked)
    assert sorted(sc["train_loss"]) == list(range(1, len(batches) + 1))  # one point per training batch
    for i, b in enumerate(batches, 1):  # fastai's smoothed loss and each group's lr, batch by batch
        assert _close(sc["train_loss"][i], b["smooth_loss"]) and _close(sc["lr_0"][i], b["lr_group0"], 1e-5)
    assert len(history) == 2
    for h in history:
        s = steps[int(h["epoch"])]
        assert _close(sc["train_loss"][s], h["train_loss"])
        assert all(_close(sc[k][s], h[k]) for k in EPOCH_KEYS) and sc["epoch"][s] == int(h["epoch"]) + 1
    m = json.loads((tracked / "metrics.json").read_text())
    assert _close(sc["final/accuracy"][steps[1]], m["accuracy"]) and _close(sc["final/f1_macro"][steps[1]], m["f1_macro"])
    figures = {p.stem for p in (tracked / "figures").iterdir()}
    from app.evaluation.figures import FIGURES

    drawn = {Path(f.file).stem for f in FIGURES if f.key != "lr_find" and not f.audit and f.task != "multi"}
    assert {t.split("/", 1)[1] for t in ea.Tags()["images"]} == figures == drawn  # every figure, as an image
    assert "config/text_summary" in ea.Tags()["tensors"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def test_tensorboard_started_on_the_run_lists_its_scalars(tracked):
    """`tensorboard --logdir RUN/tensorboard` as a user starts it; its HTTP API lists the run's scalars
    and serves the per-epoch accuracy history.csv has."""
    exe = Path(sys.executable).with_name("tensorboard")
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "tensorboard.main"]
    port = _free_port()
    p = subprocess.Popen([*cmd, "--logdir", str(tracked / "tensorboard"), "--host", "127.0.0.1", "--port", str(port),
                          "--load_fast", "false", "--reload_interval", "1"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    try:
        base, tags = f"http://127.0.0.1:{port}/data/plugin/scalars", {}
        deadline = time.time() + 120
        while time.time() < deadline and "accuracy" not in tags.get(".", {}):
            assert p.poll() is None, p.stderr.read()[-2000:]
            try:
                tags = _get(f"{base}/tags")
            except OSError:
                pass
            time.sleep(0.5)
        assert {"train_loss", "valid_loss", "accuracy", "f1_score", "lr_0", "final/accuracy"} <= set(tags["."]), tags
        points = _get(f"{base}/scalars?run=.&tag=accuracy")  # [[wall time, step, value], ...]
        steps = _epoch_steps(tracked)
        want = [(steps[int(h["epoch"])], float(h["accuracy"])) for h in _rows(tracked / "history.csv")]
        assert [(s, round(v, 6)) for _, s, v in points] == [(s, round(v, 6)) for s, v in want]
    finally:
        p.terminate()
        p.wait(timeout=30)


def test_mlflow_holds_the_settings_history_results_and_files(tracked):
    from mlflow import MlflowClient

    ids = _meta(tracked)["trackers"]["mlflow"]
    assert ids["tracking_uri"] == f"sqlite:///{(Path(os.environ['APP_RUNS_DIR']) / 'mlflow.db').resolve()}"  # default
    client = MlflowClient(ids["tracking_uri"])
    found = client.search_runs(client.get_run(ids["run_id"]).info.experiment_id,
                               filter_string=f"attributes.run_name = '{tracked.name}'")
    assert [r.info.run_id for r in found] == [ids["run_id"]]  # one tracker run, named after the app run
    r = found[0]
    assert r.info.status == "FINISHED"
    cfg, meta = _meta(tracked)["config"], _meta(tracked)
    assert all(r.data.params[k] == str(v) for k, v in cfg.items())  # every setting
    assert r.data.params["version.fastai"] == meta["versions"]["fastai"] and r.data.params["weights_used"] == "none"
    assert r.data.params["device_used"] == meta["device"] and r.data.params["data_fingerprint"] == meta["data_fingerprint"]
    steps = _epoch_steps(tracked)
    hist = {k: {m.step: m.value for m in client.get_metric_history(r.info.run_id, k)}
            for k in ("train_loss", *EPOCH_KEYS, "epoch")}
    assert len(hist["train_loss"]) == len(_rows(tracked / "batches.csv"))  # per batch
    for h in _rows(tracked / "history.csv"):
        s = steps[int(h["epoch"])]
        assert all(_close(hist[k][s], h[k]) for k in ("train_loss", *EPOCH_KEYS))
    m = json.loads((tracked / "metrics.json").read_text())
    assert r.data.metrics["final/accuracy"] == m["accuracy"] and r.data.metrics["final/f1_macro"] == m["f1_macro"]
    names = {a.path for a in client.list_artifacts(r.info.run_id)}
    assert {"report.html", "metrics.json", "config.json", "history.csv", "figures", "bundle"} <= names
    assert {Path(a.path).name for a in client.list_artifacts(r.info.run_id, "bundle")} == {
        "model.json", "model.onnx", "model.safetensors"}
    local = Path(client.download_artifacts(r.info.run_id, "metrics.json", str(tracked.parent / "dl")))
    assert json.loads(local.read_text()) == m


def _wandb_records(offline_dir: Path) -> list[dict]:
    """W&B's own reader of an offline run's transaction log (`wandb leet inspect --json`)."""
    exe = Path(sys.executable).with_name("wandb")
    p = subprocess.run([str(exe), "leet", "inspect", "--json", str(next(offline_dir.glob("run-*.wandb")))],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]


def test_wandb_offline_run_holds_the_history_settings_and_files(tracked):
    ids = _meta(tracked)["trackers"]["wandb"]
    (offline,) = (tracked / "wandb").glob("offline-run-*")  # offline, inside the run
    assert offline.name.endswith(ids["id"])
    recs = _wandb_records(offline)
    run = next(r["run"] for r in recs if r["type"] == "run")
    assert run["display_name"] == tracked.name and run["run_id"] == ids["id"]
    hist = [r["history"]["item"] for r in recs if r["type"] == "history"]
    by_step = {}
    for it in hist:
        by_step.setdefault(it["_step"], {}).update(it)
    steps = _epoch_steps(tracked)
    for h in _rows(tracked / "history.csv"):
        row = by_step[steps[int(h["epoch"])]]
        assert all(_close(row[k], h[k]) for k in ("train_loss", *EPOCH_KEYS)) and row["epoch"] == int(h["epoch"]) + 1
    for i, b in enumerate(_rows(tracked / "batches.csv"), 1):
        assert _close(by_step[i]["raw_loss"], b["loss"])  # the loss of every batch
    summary = {}
    for r in recs:
        if r["type"] == "summary":
            summary.update(r["summary"].get("update", {}))
    m = json.loads((tracked / "metrics.json").read_text())
    assert summary["final/accuracy"] == m["accuracy"]
    config = {}
    for r in recs:
        if r["type"] == "config":
            config.update(r["config"].get("update", {}))
    assert config["lr"] == _meta(tracked)["config"]["lr"] and config["size"] == 64
    files = {f["path"] for r in recs if r["type"] == "files" for f in r["files"]["files"]}
    assert {"report.html", "metrics.json", "figures/06_confusion_matrix.png"} <= files
    assert any(f.startswith("export/") and f.endswith("model.onnx") for f in files)
    assert (offline / "files" / "report.html").resolve() == (tracked / "report.html").resolve()


def test_track_names_from_the_flag_or_app_track(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("APP_TRACK", "mlflow, tensorboard")
    assert resolve_track(None) == ["mlflow", "tensorboard"]
    assert resolve_track(["wandb", "tensorboard,wandb"]) == ["wandb", "tensorboard"]
    assert resolve_track(["none"]) == [] and resolve_track("tensorboard,none") == []
    run = tmp_path / "old"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"config": {}, "track": ["wandb"]}))
    monkeypatch.setenv("APP_TRACK", "")
    assert track_names(None, run) == ["wandb"] and track_names(["mlflow"], run) == ["wandb", "mlflow"]
    assert track_names(["none"], run) == []  # a resume told --track none logs nowhere
    rc = main(["fit-one-cycle", "--track", "tensorbored", "--out", str(tmp_path / "run")])
    assert_one_line_error(_Captured(rc, capsys), 2, "tensorbored", "tensorboard, mlflow, wandb")
    assert not (tmp_path / "run").exists()


class _Captured:
    """main()'s exit code and what it printed, shaped like a finished process for assert_one_line_error."""

    def __init__(self, rc, capsys):
        out = capsys.readouterr()
        self.returncode, self.stdout, self.stderr = rc, out.out, out.err


TINY = ["--size", "64", "--bs", "8", "--valid-every", "1", "--no-evaluate", "--progressive", "none"]


def test_resume_continues_the_same_tracker_runs(tiny_data, tmp_path, monkeypatch):
    """Interrupted after its first epoch (Ctrl-C: the tracker runs end as killed), resumed: the same
    MLflow run and W&B run id go on from the next batch, and TensorBoard's steps run on without a gap
    or a repeat; every reader agrees with the resumed run's history."""
    from mlflow import MlflowClient

    from app.training import callbacks

    monkeypatch.delenv("APP_TRACK", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    real = callbacks.Checkpoint.after_epoch

    def stop_after_first(self):
        real(self)
        if self.global_epoch == 0:
            raise KeyboardInterrupt

    run = tmp_path / "run"
    monkeypatch.setattr(callbacks.Checkpoint, "after_epoch", stop_after_first)
    args = ["fit-one-cycle", "--data", str(tiny_data), "--epochs", "2", *TINY, "--out", str(run)]
    assert main([*args, "--track", "tensorboard,mlflow,wandb"]) == 130
    ids = _meta(run)["trackers"]
    client = MlflowClient(ids["mlflow"]["tracking_uri"])
    assert client.get_run(ids["mlflow"]["run_id"]).info.status == "KILLED"
    monkeypatch.setattr(callbacks.Checkpoint, "after_epoch", real)
    assert main(["fit-one-cycle", "--resume", str(run)]) == 0  # no --track: the run's own trackers
    again = _meta(run)["trackers"]
    assert again["mlflow"]["run_id"] == ids["mlflow"]["run_id"] and again["wandb"]["id"] == ids["wandb"]["id"]
    n, history = len(_rows(run / "batches.csv")), _rows(run / "history.csv")
    assert [int(h["epoch"]) for h in history] == [0, 1]
    r = client.get_run(ids["mlflow"]["run_id"])
    assert r.info.status == "FINISHED"
    loss = [(m.step, m.value) for m in client.get_metric_history(r.info.run_id, "train_loss")]
    assert [s for s, _ in loss] == list(range(1, n + 1))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    ea.Reload()
    assert [e.step for e in ea.Scalars("train_loss")] == list(range(1, n + 1))
    assert [e.step for e in ea.Scalars("accuracy")] == [_epoch_steps(run)[0], n]
    halves = sorted((run / "wandb").glob("offline-run-*"))
    # one W&B run in two offline folders; two started in one second: the second's name gets "-1"
    assert len(halves) == 2 and all(ids["wandb"]["id"] in h.name for h in halves)
    steps = [[r["history"]["item"]["_step"] for r in _wandb_records(h) if r["type"] == "history"
              and "train_loss" in r["history"]["item"]] for h in halves]
    assert steps[0] == list(range(1, _epoch_steps(run)[0] + 1)) and steps[1] == list(range(steps[0][-1] + 1, n + 1))
    s1 = _epoch_steps(run)[1]
    assert _close(dict(loss)[s1], history[1]["train_loss"])


def test_a_tracker_missing_unreachable_or_failing_is_one_line_and_training_goes_on(tiny_data, tmp_path, monkeypatch,
                                                                                     capsys):
    """APP_TRACK names all three: W&B is not installed (hidden), the MLflow server is a closed port,
    and TensorBoard's writer breaks at its first scalar; one line each, and the epoch is trained."""
    from torch.utils.tensorboard import SummaryWriter

    def broken(*a, **k):
        raise OSError("disk gone")

    monkeypatch.setitem(sys.modules, "wandb", None)
    monkeypatch.setitem(sys.modules, "fastai.callback.wandb", None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_free_port()}")
    monkeypatch.setenv("APP_TRACK", "wandb,mlflow,tensorboard")
    monkeypatch.setattr(SummaryWriter, "add_scalar", broken)
    t0 = time.time()
    assert main(["fit-one-cycle", "--data", str(tiny_data), "--epochs", "1", *TINY, "--out", str(tmp_path / "run")]) == 0
    took = time.time() - t0
    out = capsys.readouterr()
    said = [ln for ln in out.out.splitlines() if ln.startswith("track: ") and "goes on without it" in ln]
    assert len(said) == 3, said
    assert "Traceback" not in out.err and "Retrying" not in out.err
    assert "wandb is not installed" in said[0] and "pip install .[track]" in said[0]
    assert said[1].startswith("track: mlflow unavailable") and "127.0.0.1" in said[1]
    assert said[2].startswith("track: tensorboard stopped logging") and "(disk gone)" in said[2]
    assert [r["epoch"] for r in _rows(tmp_path / "run" / "history.csv")] == ["0"]
    assert _meta(tmp_path / "run")["status"] == "finished" and took < 120  # no minutes of retries


def test_the_time_plan_goes_in_as_parameters_and_the_keepers_record_at_the_end(tracked, tmp_path):
    """A run under --time: its plan (config.json `plan`) becomes plan.* parameters, and the keeper's
    per-epoch record (config.json `time_keeper`) an MLflow file and TensorBoard text, read back."""
    import shutil

    from mlflow import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from app.core.rundir import update_config
    from app.training.track import open_tracking

    run = tmp_path / "budgeted"
    shutil.copytree(tracked, run, ignore=shutil.ignore_patterns("wandb", "tensorboard", "export"))
    plan = {"epochs": 7, "predicted_s": 801.5, "budget_s": 900.0, "preset_epochs": 19, "summary": "a long line"}
    keeper = {"plan": {"total": 7}, "epochs": [{"epoch": 0, "planned_s": 30.0, "actual_s": 31.2}], "live": True}
    update_config(run, plan=plan, time_keeper=keeper, trackers={})
    t = open_tracking(["mlflow", "tensorboard"], run, print)
    from app.core.rundir import load_config

    t.params(load_config(run)[0])
    t.final()
    ids = _meta(run)["trackers"]
    client = MlflowClient(ids["mlflow"]["tracking_uri"])
    r = client.get_run(ids["mlflow"]["run_id"])
    assert r.data.params["plan.epochs"] == "7" and r.data.params["plan.budget_s"] == "900.0"
    assert "plan.summary" not in r.data.params and r.info.status == "FINISHED"
    got = Path(client.download_artifacts(r.info.run_id, "time_keeper.json", str(tmp_path / "dl")))
    assert json.loads(got.read_text()) == keeper
    ea = EventAccumulator(str(run / "tensorboard"), size_guidance={"tensors": 0})
    ea.Reload()
    text = ea.Tensors("time_keeper/text_summary")[0].tensor_proto.string_val[0].decode()
    assert json.loads(text.replace("\n    ", "\n").strip()) == keeper

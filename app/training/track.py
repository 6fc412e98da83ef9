"""`--track tensorboard|mlflow|wandb`: a run also lives in the experiment tracker its user keeps.

One tracker run per app run, named after it; the tracker runs' ids go into config.json
(`trackers`), so `--resume` continues the same tracker runs. Through the libraries' own pieces:
fastai's TensorBoardCallback and WandbCallback, each with a small mixin in front (TensorBoardSteps,
WandbSteps in callbacks.py), and a small fastai callback on MLflow's client API (MlflowLog), for
which fastai has none. This module imports no tracker (nor fastai) until one is opened. Every tracker counts steps the same way: the run's training batches (1 = the first), carried
across fine-tune's phases and a resume, so their charts line up with batches.csv.

What goes in. At the start: every setting, the library versions, the weights, device and dataset
fingerprint, and the time plan as parameters. Per batch: `train_loss` (fastai's smoothed loss: at
an epoch's last batch it is history.csv's train_loss) and each parameter group's `lr_<i>`; per
epoch, at its last batch: `valid_loss`, `accuracy`, `f1_score` (left out where validation was
skipped) and `epoch` (epochs done). At the end: metrics.json's numbers (`final/...`), the figures,
and the report, metrics, config (with the time keeper's record), history and the bundle as files.

Offline by design: TensorBoard event files in RUN/tensorboard; MLflow in a local sqlite store
beside the runs (or MLFLOW_TRACKING_URI); W&B in offline mode in RUN/wandb (`wandb sync` uploads
it; WANDB_MODE=online logs live). A tracker that is not installed, cannot be reached, or fails
mid-run is one line, and training goes on without it.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

from ..core.errors import Interrupted, UsageError, first_line
from ..core.paths import mlflow_experiment, mlflow_uri, track_env, wandb_settings
from ..core.rundir import update_config

NAMES = ("tensorboard", "mlflow", "wandb")
EXTRA = "pip install .[track]"


def resolve_track(values=None) -> list[str]:
    """--track values (repeatable, each may be a comma list), else (None) APP_TRACK; `none` turns all off."""
    raw = [track_env()] if values is None else ([values] if isinstance(values, str) else values)
    names = [n.strip().lower() for v in raw for n in str(v).split(",") if n.strip()]
    bad = [n for n in names if n not in (*NAMES, "none")]
    if bad:
        raise UsageError(f"--track {bad[0]!r} is not a tracker (choose {', '.join(NAMES)} or none; several "
                         "as tensorboard,mlflow)")
    return [] if "none" in names else list(dict.fromkeys(names))


def track_names(track=None, resume=None) -> list[str]:
    """The trackers of a command: --track's (or APP_TRACK's); a resumed run also those it started with
    (unless --track none is typed)."""
    names = resolve_track(track)
    if resume and not (track is not None and not names):
        from ..core.rundir import load_config

        names = list(dict.fromkeys([*(load_config(resume)[1].get("track") or []), *names]))
    return [n for n in names if n in NAMES]


def batches_done(run: Path) -> int:
    """Training batches of this run so far: batches.csv's rows (one per batch, epochs a resume
    runs again already dropped), the first step a tracker continues from."""
    try:
        with open(Path(run) / "batches.csv", encoding="utf-8") as f:
            return max(0, sum(1 for _ in f) - 1)
    except OSError:
        return 0


def run_params(cfg, meta: dict) -> dict:
    """The parameters a tracker run gets: every setting, versions, weights, device, data, time plan."""
    plan = {f"plan.{k}": v for k, v in (meta.get("plan") or {}).items() if isinstance(v, (int, float, str))
            and k != "summary"}
    return {**cfg.to_dict(), **{f"version.{k}": v for k, v in (meta.get("versions") or {}).items()},
            "weights_used": meta.get("weights_used", cfg.weights), "device_used": meta.get("device", ""),
            "data_fingerprint": meta.get("data_fingerprint", ""), "classes": len(meta.get("classes") or []),
            "world_size": meta.get("world_size", 1), **plan}


def final_numbers(run: Path) -> dict:
    """metrics.json's numbers (TTA's as tta.*), for the tracker's summary."""
    from ..core.files import read_json

    f = Path(run) / "metrics.json"
    m = read_json(f) if f.is_file() else {}
    out = {k: v for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    out.update({f"tta.{k}": v for k, v in (m.get("tta") or {}).items() if isinstance(v, (int, float))})
    return out


def run_files(run: Path) -> dict[str, list[Path]]:
    """What a finished run hands its tracker, by folder: figures, the report and the run's records,
    and the exported bundle (pickle-free) when there is one."""
    run = Path(run)
    records = [run / n for n in ("report.html", "metrics.json", "config.json", "history.csv", "train.log",
                                 "lr_find.json") if (run / n).is_file()]
    bundles = [p for p in sorted((run / "export").glob("*")) if p.is_dir() and (p / "model.json").is_file()]
    return {"figures": sorted((run / "figures").glob("*.*")), "": records,
            "bundle": [f for b in bundles[:1] for f in sorted(b.iterdir()) if f.is_file()]}


class Tracker:
    """One tracker run: opened (or continued from its saved ids), given callbacks per phase, the
    parameters, a curve (lr-find), the end-of-run numbers and files, then closed."""

    name = ""

    def ids(self) -> dict:
        """What config.json keeps so that --resume continues this tracker run."""
        return {}

    def where(self) -> str:
        return ""

    def callback(self, step0: int, offset: int, log):
        raise NotImplementedError

    def params(self, params: dict, resumed: bool) -> None: ...

    def curve(self, rows: list[dict]) -> None: ...

    def final(self, numbers: dict, step: int, files: dict[str, list[Path]], keeper: dict | None) -> None: ...

    def close(self, status: str) -> None: ...


class TensorBoard(Tracker):
    """Event files in RUN/tensorboard: scalars, the settings and the time keeper as text, the
    figures as images (a TensorBoard has no place for files: the report and bundle stay in the run)."""

    name = "tensorboard"

    def __init__(self, run: Path, saved: dict):
        from fastai.callback.tensorboard import TensorBoardCallback  # ImportError without tensorboard

        from .callbacks import TensorBoardSteps, composed

        self.dir, self.cls = Path(saved.get("log_dir") or Path(run) / "tensorboard"), composed(TensorBoardSteps,
                                                                                              TensorBoardCallback)
        self.dir.mkdir(parents=True, exist_ok=True)

    def ids(self) -> dict:
        return {"log_dir": str(self.dir)}

    def where(self) -> str:
        return f"tensorboard --logdir {self.dir}"

    def callback(self, step0: int, offset: int, log):
        return self.cls(self.dir, step0, offset, log)

    @contextmanager
    def _writer(self):
        from torch.utils.tensorboard import SummaryWriter

        w = SummaryWriter(log_dir=str(self.dir))
        try:
            yield w
        finally:
            w.close()

    def params(self, params: dict, resumed: bool) -> None:
        if not resumed:  # written once, at step 0
            with self._writer() as w:
                w.add_text("config", "| setting | value |\n| --- | --- |\n" + "\n".join(
                    f"| {k} | {v} |" for k, v in params.items()), 0)

    def curve(self, rows: list[dict]) -> None:
        with self._writer() as w:
            for i, row in enumerate(rows, 1):
                for k, v in row.items():
                    w.add_scalar(k, v, i)

    def final(self, numbers: dict, step: int, files: dict[str, list[Path]], keeper: dict | None) -> None:
        import numpy as np
        from PIL import Image

        with self._writer() as w:
            for k, v in numbers.items():
                w.add_scalar(f"final/{k}", v, step)
            for f in files["figures"]:
                with Image.open(f) as im:
                    w.add_image(f"figures/{f.stem}", np.asarray(im.convert("RGB")), step, dataformats="HWC")
            if keeper:
                w.add_text("time_keeper", "    " + json.dumps(keeper, indent=1).replace("\n", "\n    "), step)


def _quiet_mlflow() -> None:
    """MLflow's store setup logs at INFO (creating tables, migrations: its logger is set up when
    mlflow is imported); and a tracking server that cannot be reached is retried for minutes by
    default (measured: 247 s for a closed port): a few seconds are enough to say so."""
    import logging
    import os

    import mlflow  # noqa: F401  (configures its logger)

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # each retry would print a line
    for k, v in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1"), ("MLFLOW_HTTP_REQUEST_TIMEOUT", "10"),
                 ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")):
        os.environ.setdefault(k, v)


class Mlflow(Tracker):
    """A run in MLflow's store through MlflowClient: a local sqlite store beside the runs unless
    MLFLOW_TRACKING_URI names another (the experiment: MLFLOW_EXPERIMENT_NAME, else alexnet-cli)."""

    name = "mlflow"

    def __init__(self, run: Path, saved: dict):
        _quiet_mlflow()
        from mlflow import MlflowClient

        self.uri = saved.get("tracking_uri") or mlflow_uri()
        self.client = MlflowClient(self.uri)
        if saved.get("run_id"):
            self.run_id = saved["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            tags = {"app.run_dir": str(Path(run).resolve())}
            self.run_id = self.client.create_run(self._experiment(), run_name=Path(run).name, tags=tags).info.run_id

    def _experiment(self) -> str:
        name = mlflow_experiment()
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        where = None
        if self.uri.startswith("sqlite:///"):  # the files beside the store, not in ./mlruns of wherever it ran
            where = (Path(self.uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
        return self.client.create_experiment(name, artifact_location=where)

    def ids(self) -> dict:
        return {"tracking_uri": self.uri, "run_id": self.run_id}

    def where(self) -> str:
        return f"mlflow run {self.run_id} in {self.uri}"

    def callback(self, step0: int, offset: int, log):
        from .callbacks import MlflowLog

        return MlflowLog(self.client, self.run_id, step0, offset, log)

    def params(self, params: dict, resumed: bool) -> None:
        from mlflow.entities import Param

        have = self.client.get_run(self.run_id).data.params if resumed else {}
        new = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in have]
        self.client.log_batch(self.run_id, params=new)

    def curve(self, rows: list[dict]) -> None:
        from mlflow.entities import Metric

        ms = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), ms, i) for i, row in enumerate(rows, 1)
                                                    for k, v in row.items()])

    def final(self, numbers: dict, step: int, files: dict[str, list[Path]], keeper: dict | None) -> None:
        from mlflow.entities import Metric

        ms = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(f"final/{k}", float(v), ms, step)
                                                    for k, v in numbers.items()])
        for folder, paths in files.items():
            for f in paths:
                self.client.log_artifact(self.run_id, str(f), folder or None)
        if keeper:
            self.client.log_dict(self.run_id, keeper, "time_keeper.json")

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, {"finished": "FINISHED", "killed": "KILLED"}.get(status, "FAILED"))


class Wandb(Tracker):
    """A W&B run through wandb.init and fastai's WandbCallback: offline in RUN/wandb unless
    WANDB_MODE says otherwise (`wandb sync RUN/wandb/offline-run-*` uploads it later); a resumed
    run continues the same run id."""

    name = "wandb"

    def __init__(self, run: Path, saved: dict):
        import wandb
        from fastai.callback.wandb import WandbCallback

        from .callbacks import WandbSteps, composed

        mode, project = wandb_settings()
        self.cls, self.wandb = composed(WandbSteps, WandbCallback), wandb
        settings = wandb.Settings(console="off", silent=True, show_warnings=False, mode=mode)
        self.app_run = Path(run)
        self.run = wandb.init(project=saved.get("project") or project, name=self.app_run.name, id=saved.get("id"),
                              resume="allow", dir=str(run), settings=settings, reinit="finish_previous")

    def ids(self) -> dict:
        return {"id": self.run.id, "project": self.run.project, "dir": str(Path(self.run.dir).parent)}

    def where(self) -> str:
        offline = self.run.settings.mode == "offline"
        return f"wandb run {self.run.id}" + (f" offline in {Path(self.run.dir).parent} (upload: wandb sync "
                                              f"{Path(self.run.dir).parent})" if offline else "")

    def callback(self, step0: int, offset: int, log):
        return self.cls(step0, offset, log)

    def params(self, params: dict, resumed: bool) -> None:
        self.run.config.update(params, allow_val_change=True)

    def curve(self, rows: list[dict]) -> None:
        for i, row in enumerate(rows, 1):
            self.run.log(row, step=i)

    def final(self, numbers: dict, step: int, files: dict[str, list[Path]], keeper: dict | None) -> None:
        self.run.summary.update({f"final/{k}": v for k, v in numbers.items()})
        if keeper:
            self.run.summary["time_keeper"] = keeper
        self.run.log({f"figures/{f.stem}": self.wandb.Image(str(f)) for f in files["figures"]})  # at its last step
        self.wandb.termsetup(self.wandb.Settings(silent=True, show_warnings=False), None)  # a line per file else
        try:
            for paths in files.values():
                for f in paths:  # linked into the W&B run's files, as they lie in the run (uploaded by wandb sync)
                    self.run.save(str(f), base_path=str(self.app_run), policy="now")
        finally:
            self.wandb.termsetup(self.wandb.setup().settings, None)

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "finished" else 1)


TRACKERS: dict[str, type[Tracker]] = {"tensorboard": TensorBoard, "mlflow": Mlflow, "wandb": Wandb}


class Tracking:
    """The trackers of one run, each on its own: one that fails is said in one line and dropped."""

    def __init__(self, run: Path, trackers: list[Tracker], log):
        self.run, self.trackers, self.log = Path(run), trackers, log

    def _each(self, what: str, fn) -> None:
        for t in list(self.trackers):
            try:
                fn(t)
            except Exception as e:
                self.trackers.remove(t)
                self.log(f"track: {t.name} failed to {what} ({first_line(e, 200)}); training goes on without it")

    def callbacks(self, offset: int) -> list:
        if not self.trackers:
            return []
        step0, cbs = batches_done(self.run), []
        self._each("start logging", lambda t: cbs.append(t.callback(step0, offset, self.log)))
        return cbs

    def params(self, cfg, resumed: bool = False) -> None:
        if not self.trackers:
            return
        from ..core.rundir import load_config

        params = run_params(cfg, load_config(self.run)[1])
        self._each("log the parameters", lambda t: t.params(params, resumed))

    def curve(self, rows: list[dict]) -> None:
        self._each("log the curve", lambda t: t.curve(rows))

    def final(self, extra: dict | None = None) -> None:
        """metrics.json's numbers (and `extra`), the figures and files, the time keeper's record;
        then the tracker runs are closed as finished."""
        if not self.trackers:
            return
        from ..core.rundir import load_config

        keeper = load_config(self.run)[1].get("time_keeper")
        numbers, step, files = {**final_numbers(self.run), **(extra or {})}, batches_done(self.run), run_files(self.run)
        self._each("log the results", lambda t: t.final(numbers, step, files, keeper))
        self.close("finished")

    def close(self, status: str) -> None:
        trackers, self.trackers = self.trackers, []
        for t in trackers:
            try:
                t.close(status)
            except Exception as e:
                self.log(f"track: {t.name} could not close its run ({first_line(e, 200)})")


def open_tracking(names: list[str], run: Path, log) -> Tracking:
    """The named trackers opened for `run` (a resumed run's continued from the ids config.json
    keeps); their ids written back. A tracker that cannot open is one line; the others go on."""
    if not names:
        return Tracking(run, [], log)
    from ..core.rundir import load_config

    saved, opened = load_config(run)[1].get("trackers") or {}, []
    for name in names:
        try:
            t = TRACKERS[name](run, saved.get(name) or {})
        except ImportError as e:
            log(f"track: {name} is not installed ({first_line(e, 120)}; {EXTRA}); training goes on without it")
            continue
        except Exception as e:
            log(f"track: {name} unavailable ({first_line(e, 200)}); training goes on without it")
            continue
        opened.append(t)
        log(f"track: {t.where()}")
    update_config(run, track=names, trackers={**saved, **{t.name: t.ids() for t in opened}})
    return Tracking(run, opened, log)


@contextmanager
def tracked(names: list[str], run: Path, log):
    """open_tracking for the length of a command: a command that fails or is interrupted closes
    its tracker runs as failed or killed (a --resume reopens them); one that ends, as finished."""
    t = open_tracking(names, run, log)
    try:
        yield t
    except BaseException as e:
        t.close("killed" if isinstance(e, (KeyboardInterrupt, Interrupted)) else "failed")
        raise
    t.close("finished")

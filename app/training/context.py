"""Opening a run (RunContext), the same for lr-find, fit-one-cycle and fine-tune: the data found,
the device picked and seeded, the run directory made (rank 0) and shared with the other ranks,
the log opened, the dataset scanned and loaded, skipped files listed, config.json written."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..core import ranks as dist
from ..core.config import TrainConfig, check_sizes
from ..core.device import cpu_bf16, pick_device, resolve_precision, seed_everything
from ..core.host import Phases
from ..core.rundir import device_info, load_config, new_run_dir, save_config, update_config, versions
from ..core.runlog import run_logger
from ..data.download import resolve_data
from ..data.layout import follow_moved, stored_labels
from ..data.loaders import make_dls
from ..data.scan import FINGERPRINT_VERSION, Dataset, scan_for
from ..data.skipped import write_skipped


@dataclass
class RunContext:
    run: Path
    cfg: TrainConfig
    device: object
    log: object
    ds: Dataset
    dls: object
    started: float
    plan: object = None  # budget.Plan when --time planned the epochs
    budget: object = None  # keeper.Budget: the plan kept as training goes (--time)
    fit_started: float = 0.0  # time.time() when fitting began (a resumed run: minus the seconds done before)
    requested_precision: str = "auto"  # --precision as typed (cfg.precision is what runs)
    track: object = None  # track.Tracking: the experiment trackers this run logs to (--track)


def open_run(cfg: TrainConfig | None, out: str | None = None, resume: str | None = None, console=None,
                 progress=None, ds=None, moved: dict | None = None, **info) -> RunContext:
    """A new run for `cfg` (or the run `resume` names, with its saved settings; `moved`: its dataset's
    new `data` / `labels`, which are then recorded)."""
    started = time.time()
    meta = {}
    if resume:
        run = Path(resume)
        cfg, meta = load_config(run)
        cfg = follow_moved(cfg, **(moved or {}))
    else:
        cfg = cfg.replace(data=str(resolve_data(cfg.data, progress).resolve()))  # any folder can evaluate or resume it
    check_sizes(cfg)
    device = pick_device(cfg.device, log=console.print if console else print)
    requested = cfg.precision
    cfg = cfg.replace(precision=resolve_precision(cfg.precision, device))  # config.json keeps what ran
    dist.init(device)
    if not resume:
        run = Path(dist.broadcast(str(new_run_dir(cfg.command, out)) if dist.is_rank0() else None))
    seed_everything(cfg.seed, device)
    log = run_logger(run, console)
    if ds is None:
        ds = dist.rank0_first(lambda: scan_for(cfg, progress=progress))
        Phases.mark("scanned")
    ds, dls = make_dls(cfg, cfg.sizes()[0], device, progress=progress, log=log, ds=ds)  # resized per epoch later
    Phases.mark("loaders_ready")
    cfg = cfg.replace(labels=stored_labels(ds.layout) if ds.layout else cfg.labels)
    if resume:
        _same_data(run, meta, list(dls.vocab), ds)
        if moved and dist.is_rank0():
            update_config(run, config=cfg.to_dict())
    for w in ds.warnings:
        log(f"warning: {w}")
    if dist.is_rank0():
        write_skipped(ds.skipped, run / "skipped.csv")
        if ds.skipped:
            log(f"skipped {len(ds.skipped)} unreadable file(s), listed in {run / 'skipped.csv'}")
        if not resume:
            save_config(run, cfg, versions=versions(), device=device_info(device), seed=cfg.seed,
                        classes=list(dls.vocab), synsets=ds.classes, data_fingerprint=ds.fingerprint(),
                        fingerprint_version=FINGERPRINT_VERSION, layout=ds.layout.spec(),
                        class_names_from=ds.names_from, status="running", world_size=dist.world_size(),
                        precision_requested=requested, cpu_bf16=cpu_bf16(), **info)
    return RunContext(run, cfg, device, log, ds, dls, started, requested_precision=requested)


def _same_data(run: Path, meta: dict, vocab: list[str], ds: Dataset) -> None:
    """A resumed run continues on the classes and files it started with: other classes, renamed
    ones, or changed files would silently mix two trainings (or fail inside fastai)."""
    from ..core.errors import DataError

    if meta.get("classes") and meta["classes"] != vocab:
        diff = sorted(set(meta["classes"]) ^ set(vocab))[:5]
        raise DataError(f"the classes in {ds.root} are not the ones {run} was trained on (differ: {', '.join(diff)}); "
                        "start a new run instead of --resume")
    same_rule = meta.get("fingerprint_version") == FINGERPRINT_VERSION  # runs before it hashed the splits too
    if same_rule and meta.get("data_fingerprint") and meta["data_fingerprint"] != ds.fingerprint():
        raise DataError(f"the files in {ds.root} changed since {run} started (dataset fingerprint "
                        f"{ds.fingerprint()}, the run's {meta['data_fingerprint']}); --resume needs the same files: "
                        "put them back or start a new run")
